/**
 * What tests send to a bridge as the consumer would: a stop-command body (valid unless a test
 * overrides a field to make it otherwise), and the shape of a libvirt error the executor reads.
 */
import {
  COMMAND_RESULT_SCHEMA,
  COMMAND_SCHEMA,
  type CommandResult,
  type StopCommand,
} from '../../src/messages/command';
import { isoMicros, nowMicros } from '../../src/util/time';

/** A stop command for `host`'s domain `instanceUuid`, expiring in a minute; `extra` overrides fields. */
export function stopCommandBody(
  host: string,
  commandId: string,
  instanceUuid: string,
  extra: Record<string, unknown> = {},
): Buffer {
  return Buffer.from(
    JSON.stringify({
      schema: COMMAND_SCHEMA,
      command_id: commandId,
      action: 'force_stop',
      host,
      instance_uuid: instanceUuid,
      reason: 'test',
      issued_at: isoMicros(nowMicros()),
      expires_at: isoMicros(nowMicros() + 60_000_000),
      ...extra,
    }),
  );
}

/** An error as the addon throws it for a failed libvirt call (virErrorNumber `code`, VIR_FROM_DOM). */
export function libvirtError(code: number, message: string): Error {
  return Object.assign(new Error(message), {
    name: 'LibvirtError',
    libvirtCode: code,
    libvirtDomain: 10,
    libvirtLevel: 2,
  });
}

/** A bridge's result for `command`: stopped by a graceful shutdown now, unless `fields` say otherwise. */
export function stopResult(
  command: Pick<StopCommand, 'command_id' | 'action' | 'host' | 'instance_uuid'>,
  fields: Partial<CommandResult> = {},
): CommandResult {
  const outcome = fields.outcome ?? 'stopped';
  return {
    schema: COMMAND_RESULT_SCHEMA,
    command_id: command.command_id,
    action: command.action,
    host: command.host,
    instance_uuid: command.instance_uuid,
    outcome,
    method: outcome === 'stopped' ? 'shutdown' : 'none',
    power_state: 4,
    error: null,
    finished_at: isoMicros(nowMicros()),
    ...fields,
  };
}

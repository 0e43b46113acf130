/**
 * Turns a command delivery into a StopCommand the bridge may execute, or the reason it may not. Kept
 * apart from the consume callback so every way a delivery can be wrong is one tested function that
 * returns, never throws (an exception inside amqplib's consume callback closes the channel):
 * - parseStopCommand: the body — bounded in size before it is decoded, a JSON object of the
 *   `virtbus.command/1` shape with UUIDs for command_id and instance_uuid;
 * - verifyCommand: the sender and the target — the broker-verified AMQP `user_id` must be the
 *   consumer identity this bridge trusts and the body's host this bridge's own host (issue 10: a
 *   host's credentials must not be able to stop another host's guests).
 */
import type { MessageProperties } from 'amqplib';
import { COMMAND_SCHEMA, type StopCommand } from '../../messages/command';
import { nowMicros, parseIsoMicros } from '../../util/time';

/** A command is a few hundred bytes; anything far larger is not one and is not decoded. */
export const MAX_COMMAND_BYTES = 16 * 1024;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A value for a log line: short strings as they are, anything else by its type. */
function describe(value: unknown): string {
  if (typeof value === 'string') return value.length <= 64 ? JSON.stringify(value) : 'a long string';
  if (value === null) return 'null';
  return Array.isArray(value) ? 'an array' : `a ${typeof value}`;
}

/** Validates a command body; returns the reason it is unusable, or the command. */
export function parseStopCommand(body: Buffer): StopCommand | string {
  if (body.length > MAX_COMMAND_BYTES)
    return `body of ${body.length} bytes exceeds ${MAX_COMMAND_BYTES} bytes`;
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    return 'not JSON';
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return 'not a JSON object';
  const command = value as Record<string, unknown>;
  if (command.schema !== COMMAND_SCHEMA) return `unknown schema ${describe(command.schema)}`;
  if (typeof command.command_id !== 'string' || !UUID.test(command.command_id))
    return 'command_id is not a UUID';
  if (command.action !== 'stop' && command.action !== 'force_stop')
    return `unknown action ${describe(command.action)}`;
  if (typeof command.instance_uuid !== 'string' || !UUID.test(command.instance_uuid))
    return 'instance_uuid is not a UUID';
  if (typeof command.host !== 'string' || command.host === '') return 'host missing';
  if (typeof command.expires_at !== 'string' || Number.isNaN(parseIsoMicros(command.expires_at))) {
    return 'expires_at is not an ISO time';
  }
  const guard = command.only_if_power_states;
  if (
    guard !== undefined &&
    (!Array.isArray(guard) || guard.length > 16 || guard.some((code) => !Number.isInteger(code)))
  ) {
    return 'only_if_power_states is not a list of power-state codes';
  }
  return command as unknown as StopCommand;
}

export interface CommandTrust {
  /** This bridge's host (config host), compared with the body's host as written. */
  readonly host: string;
  /** The broker user the consumer publishes commands as (bridge.commands.trustedUser). */
  readonly trustedUser: string;
}

/** Why a command that parsed may still not run: a label for the metric, a sentence for the log. */
export interface Distrust {
  readonly label: 'untrusted_sender' | 'wrong_host';
  readonly reason: string;
}

/**
 * The sender and target checks. RabbitMQ refuses a publish whose `user_id` property is not the
 * publishing connection's user, so `user_id` names who really sent the command; a command without
 * one is unverified and refused like any other sender.
 */
export function verifyCommand(
  command: StopCommand,
  properties: Pick<MessageProperties, 'userId'>,
  trust: CommandTrust,
): Distrust | undefined {
  const sender: unknown = properties.userId;
  if (typeof sender !== 'string' || sender === '')
    return { label: 'untrusted_sender', reason: 'no user_id: the sender is not verified by the broker' };
  if (sender !== trust.trustedUser)
    return {
      label: 'untrusted_sender',
      reason: `sent by broker user ${describe(sender)}, not the trusted consumer ${describe(trust.trustedUser)}`,
    };
  if (command.host !== trust.host)
    return {
      label: 'wrong_host',
      reason: `for host ${describe(command.host)}, not this bridge's host ${describe(trust.host)}`,
    };
  return undefined;
}

/**
 * The expiry horizon: a command valid for longer than maxExpiryMs from now is refused (a long-lived
 * command is a long replay window, and the consumer's own expiry is far shorter).
 */
export function beyondHorizon(
  command: StopCommand,
  maxExpiryMs: number,
  now = nowMicros(),
): string | undefined {
  const ahead = parseIsoMicros(command.expires_at) - now;
  if (ahead <= maxExpiryMs * 1000) return undefined;
  return `expires_at is ${Math.round(ahead / 1_000_000)} s ahead, beyond bridge.commands.maxExpiryMs (${maxExpiryMs} ms)`;
}

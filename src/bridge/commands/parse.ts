/**
 * Turns a command message body into a StopCommand, or the reason it is unusable. Kept apart from the
 * consume callback so every way a body can be wrong is one tested function that returns, never throws.
 */
import { COMMAND_SCHEMA, type StopCommand } from '../../messages/command';
import { parseIsoMicros } from '../../util/time';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Validates a command body; returns the reason it is unusable, or the command. */
export function parseStopCommand(body: Buffer): StopCommand | string {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    return 'not JSON';
  }
  if (value === null || typeof value !== 'object') return 'not a JSON object';
  const command = value as Record<string, unknown>;
  if (command.schema !== COMMAND_SCHEMA) return `unknown schema ${JSON.stringify(command.schema)}`;
  if (typeof command.command_id !== 'string' || command.command_id === '') return 'command_id missing';
  if (command.action !== 'stop' && command.action !== 'force_stop')
    return `unknown action ${JSON.stringify(command.action)}`;
  if (typeof command.instance_uuid !== 'string' || !UUID.test(command.instance_uuid))
    return 'instance_uuid is not a UUID';
  if (typeof command.host !== 'string') return 'host missing';
  if (typeof command.expires_at !== 'string' || Number.isNaN(parseIsoMicros(command.expires_at))) {
    return 'expires_at is not an ISO time';
  }
  const guard = command.only_if_power_states;
  if (guard !== undefined && (!Array.isArray(guard) || guard.some((code) => !Number.isInteger(code)))) {
    return 'only_if_power_states is not a list of power-state codes';
  }
  return command as unknown as StopCommand;
}

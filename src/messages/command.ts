/**
 * Stop commands (consumer → bridge) and their results (bridge → consumer), on the command exchange
 * (amqp.commandExchange, topic, durable): Nova's stop / force_stop actions (compute_api.stop and
 * force_stop, nova/compute/api.py), executed by the bridge of the instance's host (docs/consumer.md). Schemas `virtbus.command/1` and `virtbus.command-result/1`.
 */
import { randomUUID } from 'node:crypto';
import { hostSegment } from './lifecycle';

export const COMMAND_SCHEMA = 'virtbus.command/1';
export const COMMAND_RESULT_SCHEMA = 'virtbus.command-result/1';

/** Nova's compute_api.stop (graceful, then hard after the timeout) and force_stop. */
export type CommandAction = 'stop' | 'force_stop';

export interface StopCommand {
  readonly schema: typeof COMMAND_SCHEMA;
  readonly command_id: string;
  readonly action: CommandAction;
  readonly host: string;
  readonly instance_uuid: string;
  /** Why the consumer asked (the branch of _sync_instance_power_state taken), for the bridge's log. */
  readonly reason: string;
  readonly issued_at: string;
  /** The bridge ignores commands older than this (the consumer has given up by then). */
  readonly expires_at: string;
  /**
   * Optional (added compatibly; a bridge that does not know it ignores it): execute only while the
   * domain's live Nova power_state is one of these, otherwise answer outcome `skipped`. The consumer
   * sets it to [4, 6] for Nova's 4b stop (active instance found SHUTDOWN/CRASHED), because Nova's
   * _stop_unexpected_shutdown_instance re-reads the live state and stops only if the guest is
   * *still* off: a guest that came back meanwhile must not be shut down.
   */
  readonly only_if_power_states?: readonly number[];
}

/**
 * stopped: the domain was shut off by this command; already_stopped: it was shut off (libvirt state
 * SHUTOFF) before the command; failed: libvirt refused (error set); expired: the command arrived
 * after expires_at and was not executed; refused: this bridge does not execute commands (read-only
 * or disabled); skipped: the live power_state was not one of the command's only_if_power_states, so
 * nothing was done; not_found: the commanded host has no such domain (it may run elsewhere, e.g.
 * after a live migration) — never a reason to mark the instance stopped.
 */
export type CommandOutcome =
  'stopped' | 'already_stopped' | 'failed' | 'expired' | 'refused' | 'skipped' | 'not_found';

export interface CommandResult {
  readonly schema: typeof COMMAND_RESULT_SCHEMA;
  readonly command_id: string;
  readonly action: CommandAction;
  readonly host: string;
  readonly instance_uuid: string;
  readonly outcome: CommandOutcome;
  /** How the domain was stopped: shutdown (graceful), destroy, or none. */
  readonly method: 'shutdown' | 'destroy' | 'none';
  /**
   * Live Nova power_state after the command, read from libvirt; null when the bridge did not read
   * libvirt (expired, refused, failed while disconnected): then it says nothing about the guest.
   */
  readonly power_state: number | null;
  readonly error: string | null;
  readonly finished_at: string;
}

export function commandRoutingKey(host: string): string {
  return `${hostSegment(host)}.stop`;
}

export function commandResultRoutingKey(host: string): string {
  return `${hostSegment(host)}.stop_result`;
}

/** The bridge's durable command queue for its host. */
export function commandQueueName(host: string): string {
  return `virtbus.commands.${hostSegment(host)}`;
}

export function newCommandId(): string {
  return randomUUID();
}

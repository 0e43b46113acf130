/**
 * The libvirt side of a stop command (Nova's compute manager stop_instance → the libvirt driver's
 * power_off): re-reads the live state first (Nova re-checks before acting), shuts the domain down
 * gracefully with a timeout and destroys whatever is not really shut off by then. Knows nothing
 * about AMQP, so every libvirt state a command can meet is testable against a fake connection.
 */
import type { NativeConnection } from '../../native/contract';
import { isLibvirtError } from '../../native/binding';
import { powerStateOf } from '../../libvirt/power-state';
import { DomainStateCode, LibvirtErrorCode } from '../../libvirt/constants';
import type { CommandOutcome, CommandResult, StopCommand } from '../../messages/command';
import type { Logger } from '../../util/log';
import { nowMicros, parseIsoMicros } from '../../util/time';

export interface StopDomainOptions {
  /** false: every command is answered `refused` (read-only connection or commands disabled). */
  readonly enabled: boolean;
  readonly gracefulTimeoutMs: number;
  readonly destroyOnTimeout: boolean;
  readonly connection: () => NativeConnection | undefined;
  readonly logger: Logger;
  /** Poll interval while waiting for a graceful shutdown. */
  readonly pollMs?: number;
}

export type StopOutcome = Pick<CommandResult, 'outcome' | 'method' | 'power_state' | 'error'>;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** libvirt states in which Nova's _clean_shutdown stops waiting (nova SHUTDOWN_STATES, minus SHUTOFF). */
const isShuttingDownOrCrashed = (state: number): boolean =>
  state === DomainStateCode.SHUTDOWN || state === DomainStateCode.CRASHED;

/** An answer that did not read libvirt: power_state null says nothing about the guest. */
const unread = (outcome: CommandOutcome, error: string): StopOutcome => ({
  outcome,
  method: 'none',
  power_state: null,
  error,
});

/**
 * Nova's power_off: a clean shutdown attempt (skipped when the guest is already shutting down or
 * crashed, as _clean_shutdown returns at once for SHUTDOWN_STATES), then a destroy unless the domain
 * is really SHUTOFF. Only a domain already SHUTOFF is `already_stopped`; a domain this host does not
 * have is `not_found` (it may run elsewhere). A stop with destroyOnTimeout=false never destroys.
 */
export async function stopDomain(command: StopCommand, options: StopDomainOptions): Promise<StopOutcome> {
  if (parseIsoMicros(command.expires_at) < nowMicros())
    return unread('expired', 'command expired before it was executed');
  if (!options.enabled)
    return unread('refused', 'this bridge does not execute commands (read-only or disabled)');
  const connection = options.connection();
  if (!connection) return unread('failed', 'libvirt is not connected');
  const uuid = command.instance_uuid;
  /** The raw libvirt state (SHUTDOWN and SHUTOFF differ here, unlike Nova's power_state); null: no such domain. */
  const read = async (): Promise<number | null> => {
    try {
      return (await connection.domainState(uuid)).state;
    } catch (error) {
      if (isNoDomain(error)) return null;
      throw error;
    }
  };
  const power = (state: number | null): number => powerStateOf(state);
  const done = (
    outcome: CommandOutcome,
    method: CommandResult['method'],
    state: number | null,
    error: string | null = null,
  ): StopOutcome => ({ outcome, method, power_state: power(state), error });
  const mayDestroy = command.action === 'force_stop' || options.destroyOnTimeout;
  try {
    const before = await read();
    if (before === null) return { outcome: 'not_found', method: 'none', power_state: null, error: null };
    // Nova's re-check (_stop_unexpected_shutdown_instance in nova/compute/manager.py; rows 4b/4c of
    // the decision table in docs/consumer.md): act only if the guest is still in the state the
    // consumer decided on; a guest restarted meanwhile is left alone.
    const guard = command.only_if_power_states;
    if (guard && !guard.includes(power(before))) return done('skipped', 'none', before);
    if (before === DomainStateCode.SHUTOFF) return done('already_stopped', 'none', before);
    const deadline = Date.now() + options.gracefulTimeoutMs;
    let state: number | null = before;
    if (!isShuttingDownOrCrashed(before)) {
      try {
        await connection.shutdown(uuid);
      } catch (error) {
        // A paused guest cannot take an ACPI shutdown; fall through to the timeout and destroy.
        options.logger.debug({ err: error, uuid }, 'graceful shutdown refused');
      }
      state = await read();
      // Nova stops waiting once the guest is in a SHUTDOWN state and destroys; a stop that may not
      // destroy waits for SHUTOFF until the timeout instead.
      const settled = (s: number | null): boolean =>
        s === null || s === DomainStateCode.SHUTOFF || (mayDestroy && isShuttingDownOrCrashed(s));
      while (!settled(state) && Date.now() < deadline) {
        await sleep(options.pollMs ?? 250);
        state = await read();
      }
      // A transient domain is gone once shut off; a persistent one is SHUTOFF.
      if (state === null || state === DomainStateCode.SHUTOFF) return done('stopped', 'shutdown', state);
    } else if (!mayDestroy) {
      // Shutting down by itself may still finish; a crashed guest will not, but may not be destroyed.
      while (state === DomainStateCode.SHUTDOWN && Date.now() < deadline) {
        await sleep(options.pollMs ?? 250);
        state = await read();
      }
      if (state === null || state === DomainStateCode.SHUTOFF) return done('stopped', 'none', state);
    }
    if (!mayDestroy) {
      return done(
        'failed',
        isShuttingDownOrCrashed(before) ? 'none' : 'shutdown',
        state,
        `the domain is not shut off after ${options.gracefulTimeoutMs} ms and bridge.commands.destroyOnTimeout is false`,
      );
    }
    await destroy(connection, uuid);
    return done('stopped', 'destroy', await read());
  } catch (error) {
    const text = error instanceof Error ? error.message : String(error);
    const after = await read().catch(() => undefined);
    return {
      outcome: 'failed',
      method: 'none',
      power_state: after === undefined || after === null ? null : power(after),
      error: text,
    };
  }
}

function isNoDomain(error: unknown): boolean {
  return isLibvirtError(error) && error.libvirtCode === LibvirtErrorCode.NO_DOMAIN;
}

/** Nova's _destroy: a domain already gone or already shut off is fine; anything else fails the command. */
async function destroy(connection: NativeConnection, uuid: string): Promise<void> {
  try {
    await connection.destroy(uuid);
  } catch (error) {
    if (isNoDomain(error)) return;
    if (isLibvirtError(error) && error.libvirtCode === LibvirtErrorCode.OPERATION_INVALID) {
      const now = await connection.domainState(uuid).catch(() => undefined);
      if (now?.state === DomainStateCode.SHUTOFF) return;
    }
    throw error;
  }
}

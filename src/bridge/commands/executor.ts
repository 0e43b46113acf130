/**
 * The libvirt side of a stop command (Nova's compute manager stop_instance → the libvirt driver's
 * power_off): re-reads the live state first (Nova re-checks before acting), shuts the domain down
 * gracefully with a timeout and destroys it when the timeout passes. Knows nothing about AMQP, so
 * every libvirt state a command can meet is testable against a fake connection.
 */
import type { NativeConnection } from '../../native/contract';
import { isLibvirtError } from '../../native/binding';
import { powerStateOf } from '../../libvirt/power-state';
import { LibvirtErrorCode, PowerState } from '../../libvirt/constants';
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

export async function stopDomain(command: StopCommand, options: StopDomainOptions): Promise<StopOutcome> {
  const done = (
    outcome: CommandOutcome,
    method: CommandResult['method'],
    powerState: number,
    error: string | null = null,
  ): StopOutcome => ({
    outcome,
    method,
    power_state: powerState,
    error,
  });
  if (parseIsoMicros(command.expires_at) < nowMicros())
    return done('expired', 'none', PowerState.NOSTATE, 'command expired before it was executed');
  if (!options.enabled)
    return done(
      'refused',
      'none',
      PowerState.NOSTATE,
      'this bridge does not execute commands (read-only or disabled)',
    );
  const connection = options.connection();
  if (!connection) return done('failed', 'none', PowerState.NOSTATE, 'libvirt is not connected');
  const uuid = command.instance_uuid;
  const live = async (): Promise<number> => {
    try {
      return powerStateOf((await connection.domainState(uuid)).state);
    } catch (error) {
      if (isLibvirtError(error) && error.libvirtCode === LibvirtErrorCode.NO_DOMAIN)
        return PowerState.NOSTATE;
      throw error;
    }
  };
  const isOff = (state: number): boolean =>
    state === PowerState.SHUTDOWN || state === PowerState.CRASHED || state === PowerState.NOSTATE;
  try {
    const before = await live();
    // Nova's 4b/4c re-check (_stop_unexpected_shutdown_instance): act only if the guest is still in
    // the state the consumer decided on; a guest restarted meanwhile is left alone.
    const guard = command.only_if_power_states;
    if (guard && !guard.includes(before)) return done('skipped', 'none', before, null);
    if (isOff(before)) return done('already_stopped', 'none', before);
    try {
      await connection.shutdown(uuid);
    } catch (error) {
      // A paused guest cannot take an ACPI shutdown; fall through to the timeout and destroy.
      options.logger.debug({ err: error, uuid }, 'graceful shutdown refused');
    }
    const deadline = Date.now() + options.gracefulTimeoutMs;
    let state = await live();
    while (!isOff(state) && Date.now() < deadline) {
      await sleep(options.pollMs ?? 250);
      state = await live();
    }
    if (isOff(state)) return done('stopped', 'shutdown', state);
    if (command.action === 'stop' && !options.destroyOnTimeout) {
      return done(
        'failed',
        'shutdown',
        state,
        `graceful shutdown did not finish within ${options.gracefulTimeoutMs} ms`,
      );
    }
    await connection.destroy(uuid);
    return done('stopped', 'destroy', await live());
  } catch (error) {
    const text = error instanceof Error ? error.message : String(error);
    return done('failed', 'none', await live().catch(() => PowerState.NOSTATE), text);
  }
}

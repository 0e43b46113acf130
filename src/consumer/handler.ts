/**
 * Nova's compute-manager side against the instance store (nova-lifecycle.md §3–4):
 * handle_lifecycle_event for the six transitions Nova syncs on (with the staleness guard on the live
 * power_state the bridge sampled), the periodic sync for `sync` snapshots (no guard) and `sync_end`
 * (rows of the host missing from the snapshot are NOSTATE), then _sync_instance_power_state — host
 * check, task check, power_state write, the vm_state × power_state branch — and the stop/force_stop
 * loop with the bridge: compare-and-swap to task_state powering-off, a stop command to the host,
 * completion from its result or a timeout.
 *
 * Every row write is a compare-and-swap on the row version; a lost race re-reads the row and decides
 * again, so concurrent consumers on one PostgreSQL database cannot act twice or move a row back.
 * Every applied lifecycle message records its position (occurred_at, boot_id, seq) in the row; a
 * message that is not newer than that is ignored, which makes redelivery and reordering harmless.
 */
import { PowerState } from '../libvirt/constants';
import { COMMAND_SCHEMA, newCommandId, type CommandAction, type StopCommand } from '../messages/command';
import type { Notifier } from '../notify/notifier';
import type { InstanceRow, InstanceStore } from '../store/types';
import type { Logger } from '../util/log';
import { isoMicros, nowMicros, parseIsoMicros } from '../util/time';
import type { ConsumerMetrics, MessageOutcome, SyncAction } from './metrics';
import { expectedPowerState, stopPrecondition, stopRefusal, syncBranch } from './nova';
import type { CommandResultIn, LifecycleEventIn } from './validate';

export type ConsumerMode = 'nova' | 'observe';

export interface HandlerOptions {
  readonly store: InstanceStore;
  readonly mode: ConsumerMode;
  /** How long a stop command may take before the consumer gives up on it. */
  readonly stopTimeoutMs: number;
  readonly notifier: Notifier;
  /** Publishes a stop command to its host's bridge (resolves on the broker's confirm). */
  readonly sendCommand: (command: StopCommand, ttlMs: number) => Promise<void>;
  readonly metrics: ConsumerMetrics;
  readonly logger: Logger;
  /** Clock in epoch microseconds (tests). */
  readonly now?: () => number;
}

/** After this many lost compare-and-swap races on one message, something is wrong: fail it. */
const MAX_CAS_ATTEMPTS = 100;

const SUCCESS_OUTCOMES = new Set(['stopped', 'already_stopped']);

/** True when the row already reflects this message or a newer one (occurred_at, then boot_id/seq). */
export function isNotNewer(event: LifecycleEventIn, row: InstanceRow): boolean {
  if (row.event_at_us === null) return false;
  if (event.occurredUs !== row.event_at_us) return event.occurredUs < row.event_at_us;
  // The same microsecond: within one bridge process seq orders; across processes treat as new.
  return event.bootId === row.event_boot_id && event.seq <= (row.event_seq ?? -1);
}

class CasExhausted extends Error {
  override readonly name = 'CasExhausted';
}

export class LifecycleHandler {
  readonly #options: HandlerOptions;
  readonly #now: () => number;

  constructor(options: HandlerOptions) {
    this.#options = options;
    this.#now = options.now ?? nowMicros;
  }

  /** One lifecycle message; resolves with its outcome once every row change is committed. */
  async handleLifecycle(event: LifecycleEventIn): Promise<MessageOutcome> {
    if (event.transition === 'sync_end') return this.#syncEnd(event);
    if (event.transition === 'sync') return this.#sync(event, event.powerState, true);
    const expected = expectedPowerState(event.transition);
    if (expected === null) {
      this.#options.logger.debug(
        { uuid: event.instanceUuid, transition: event.transition },
        'lifecycle event Nova does not act on',
      );
      return 'ignored';
    }
    return this.#sync(event, expected, false);
  }

  /**
   * handle_lifecycle_event (periodic = false; vmPowerState = the transition's expected state) or
   * _query_driver_power_state_and_sync (periodic = true; vmPowerState = the snapshot's live state).
   */
  async #sync(
    event: LifecycleEventIn,
    vmPowerState: number | null,
    periodic: boolean,
  ): Promise<MessageOutcome> {
    const { store, logger, metrics } = this.#options;
    const uuid = event.instanceUuid as string;
    for (let attempt = 1; attempt <= MAX_CAS_ATTEMPTS; attempt += 1) {
      const row = await store.get(uuid);
      // read_deleted='yes' on the event path; the periodic path lists the host's non-deleted rows.
      if (!row || (periodic && row.vm_state === 'deleted')) {
        logger.debug({ uuid, transition: event.transition }, 'event arrived for non-existent instance');
        return 'not_found';
      }
      if (isNotNewer(event, row)) return 'out_of_order';
      if (vmPowerState === null || (!periodic && event.powerState !== vmPowerState)) {
        // Staleness guard (bug #1468431): a later event describes the current state.
        logger.debug(
          { uuid, transition: event.transition, live: event.powerState, expected: vmPowerState },
          'stale lifecycle event: the live power state differs; dropped',
        );
        return 'stale';
      }
      if (row.host !== event.host) {
        logger.info(
          { uuid, src: row.host, dst: event.host },
          'During the sync_power process the instance has moved from host src to host dst',
        );
        return 'skipped_host';
      }
      if (row.task_state !== null) {
        logger.info(
          { uuid, task_state: row.task_state },
          'During sync_power_state the instance has a pending task. Skip.',
        );
        return 'skipped_task';
      }
      if (await this.#applySync(row, event, vmPowerState)) return 'synced';
      metrics.casRetries.inc();
    }
    throw new CasExhausted(`instance ${uuid}: lost ${MAX_CAS_ATTEMPTS} compare-and-swap races in a row`);
  }

  /**
   * sync_end: rows of this host that the snapshot does not list, and that did not change since it
   * was taken, are domains the hypervisor no longer has — the periodic sync sees NOSTATE.
   */
  async #syncEnd(event: LifecycleEventIn): Promise<MessageOutcome> {
    const { store, metrics } = this.#options;
    const listed = new Set(event.instanceUuids ?? []);
    const takenUs = event.snapshot?.takenUs ?? event.occurredUs;
    const rows = await store.list({ host: event.host });
    for (const candidate of rows) {
      if (listed.has(candidate.uuid)) continue;
      let row: InstanceRow | undefined = candidate;
      for (let attempt = 1; row && attempt <= MAX_CAS_ATTEMPTS; attempt += 1) {
        const unchanged =
          parseIsoMicros(row.updated_at) <= takenUs &&
          (row.event_at_us === null || row.event_at_us <= takenUs);
        if (
          row.host !== event.host ||
          row.vm_state === 'deleted' ||
          row.task_state !== null ||
          !unchanged ||
          isNotNewer(event, row)
        )
          break;
        if (await this.#applySync(row, event, PowerState.NOSTATE)) {
          metrics.syncActions.inc({ action: 'vanished' });
          break;
        }
        metrics.casRetries.inc();
        row = await store.get(candidate.uuid);
      }
    }
    return 'sync_end';
  }

  /**
   * _sync_instance_power_state steps 3–4 on a fresh row whose host matches and that has no task.
   * Resolves false when the row changed underneath (the caller re-reads and decides again).
   */
  async #applySync(row: InstanceRow, event: LifecycleEventIn, vmPowerState: number): Promise<boolean> {
    const { store, mode, logger, metrics } = this.#options;
    const now = this.#now();
    const nowIso = isoMicros(now);
    const powerChanged = row.power_state !== vmPowerState;
    const afterPower: InstanceRow = {
      ...row,
      event_at_us: event.occurredUs,
      event_boot_id: event.bootId,
      event_seq: event.seq,
      ...(powerChanged ? { power_state: vmPowerState, updated_at: nowIso } : {}),
    };
    const branch = syncBranch(row.vm_state, vmPowerState);
    const actions: SyncAction[] = powerChanged ? ['power_state_updated'] : [];
    let next = afterPower;
    let command: StopCommand | undefined;
    let refusal: string | null = null;
    if (branch.action === 'stop' || branch.action === 'force_stop') {
      const action: CommandAction = branch.action;
      refusal = action === 'stop' ? stopRefusal(afterPower) : null;
      if (refusal) {
        actions.push('stop_not_allowed');
      } else if (mode === 'nova') {
        const ttlMs = Math.max(1, Math.floor(this.#options.stopTimeoutMs / 2));
        const precondition = stopPrecondition(branch.branch);
        command = {
          schema: COMMAND_SCHEMA,
          command_id: newCommandId(),
          action,
          host: row.host as string,
          instance_uuid: row.uuid,
          reason: `${branch.branch}: ${branch.message}`,
          issued_at: nowIso,
          expires_at: isoMicros(now + ttlMs * 1000),
          ...(precondition ? { only_if_power_states: precondition } : {}),
        };
        next = {
          ...afterPower,
          task_state: 'powering-off',
          pending_command_id: command.command_id,
          pending_action: action,
          command_deadline_ms: Math.floor(now / 1000) + this.#options.stopTimeoutMs,
          last_action: action,
          last_action_at: nowIso,
          last_error: null,
          updated_at: nowIso,
        };
        actions.push(action);
      } else {
        next = { ...afterPower, last_action: `would_${action}`, last_action_at: nowIso };
        actions.push(action === 'stop' ? 'would_stop' : 'would_force_stop');
      }
    } else if (branch.action !== 'none') {
      actions.push(branch.action);
    }
    if (!(await store.update(next))) return false;

    metrics.eventToSync.observe(Math.max(0, this.#now() - event.occurredUs) / 1e6);
    for (const action of actions) metrics.syncActions.inc({ action });
    const context = {
      uuid: row.uuid,
      host: row.host,
      vm_state: row.vm_state,
      power_state: vmPowerState,
      db_power_state: row.power_state,
      branch: branch.branch,
      transition: event.transition,
    };
    if (refusal)
      logger.warn({ ...context, reason: refusal }, `${branch.message} The stop API refused: ${refusal}`);
    else if (command)
      logger.warn({ ...context, command: command.command_id, action: command.action }, branch.message);
    else if (branch.action === 'stop' || branch.action === 'force_stop')
      logger.warn({ ...context, mode }, `observe mode: Nova would ${branch.action} (${branch.message})`);
    else if (branch.message) logger.warn(context, branch.message);
    else logger.debug(context, 'power state synced');

    const stored = (step: InstanceRow): InstanceRow => ({ ...step, version: row.version + 1 });
    const steps: InstanceRow[] = [];
    if (powerChanged) steps.push(stored(afterPower));
    if (command) steps.push(stored(next));
    await this.#options.notifier.instanceUpdates(row, steps);
    if (command) await this.#send(command);
    return true;
  }

  async #send(command: StopCommand): Promise<void> {
    const { logger, metrics } = this.#options;
    try {
      await this.#options.sendCommand(command, Math.max(1, Math.floor(this.#options.stopTimeoutMs / 2)));
      metrics.commandsPublished.inc({ action: command.action });
    } catch (error) {
      // The row stays powering-off until the stop timeout clears it; the next sync retries (as Nova).
      metrics.syncActions.inc({ action: 'command_publish_failed' });
      logger.error(
        { err: error, uuid: command.instance_uuid, command: command.command_id },
        'stop command not published; the stop timeout will clear the task',
      );
    }
  }

  /**
   * A stop command's outcome from the bridge (Nova's stop_instance on the compute host): stopped or
   * already_stopped → vm_state stopped, task cleared, power_state from the bridge's live reading;
   * otherwise the task is cleared and the reason recorded (Nova's reverts_task_state).
   */
  async handleResult(result: CommandResultIn): Promise<MessageOutcome> {
    const { store, logger, metrics } = this.#options;
    for (let attempt = 1; attempt <= MAX_CAS_ATTEMPTS; attempt += 1) {
      const row = await store.get(result.instanceUuid);
      if (!row || row.pending_command_id !== result.commandId) {
        logger.info(
          { uuid: result.instanceUuid, command: result.commandId, outcome: result.outcome },
          'result for a stop command that is no longer pending (timed out or superseded); ignored',
        );
        return 'late_result';
      }
      const nowIso = isoMicros(this.#now());
      const success = SUCCESS_OUTCOMES.has(result.outcome);
      const next: InstanceRow = {
        ...row,
        vm_state: success ? 'stopped' : row.vm_state,
        task_state: row.task_state === 'powering-off' ? null : row.task_state,
        power_state: result.powerState ?? row.power_state,
        pending_command_id: null,
        pending_action: null,
        command_deadline_ms: null,
        last_action: `${result.action}_${success ? 'completed' : result.outcome}`,
        last_action_at: nowIso,
        last_error: success ? null : `${result.outcome}: ${result.error ?? 'no detail'}`,
        updated_at: nowIso,
      };
      if (!(await store.update(next))) {
        metrics.casRetries.inc();
        continue;
      }
      metrics.syncActions.inc({ action: success ? 'stop_completed' : 'stop_failed' });
      const context = {
        uuid: row.uuid,
        command: result.commandId,
        action: result.action,
        outcome: result.outcome,
        method: result.method,
        power_state: next.power_state,
      };
      if (success) logger.info(context, 'stop command completed; instance stopped');
      else
        logger.warn(
          { ...context, error: result.error },
          'stop command did not stop the instance; task cleared',
        );
      await this.#options.notifier.instanceUpdates(row, [{ ...next, version: row.version + 1 }]);
      return 'command_result';
    }
    throw new CasExhausted(
      `instance ${result.instanceUuid}: lost ${MAX_CAS_ATTEMPTS} compare-and-swap races`,
    );
  }

  /** Clears stop commands that passed their deadline without a result; returns how many. */
  async expireCommands(): Promise<number> {
    const { store, logger, metrics } = this.#options;
    const nowMs = Math.floor(this.#now() / 1000);
    let expired = 0;
    for (const candidate of await store.expiredCommands(nowMs)) {
      let row: InstanceRow | undefined = candidate;
      for (let attempt = 1; row && attempt <= MAX_CAS_ATTEMPTS; attempt += 1) {
        if (row.pending_command_id !== candidate.pending_command_id) break;
        const nowIso = isoMicros(this.#now());
        const next: InstanceRow = {
          ...row,
          task_state: row.task_state === 'powering-off' ? null : row.task_state,
          pending_command_id: null,
          pending_action: null,
          command_deadline_ms: null,
          last_action: `${row.pending_action ?? 'stop'}_timeout`,
          last_action_at: nowIso,
          last_error: `timeout: no result for ${row.pending_action ?? 'stop'} command ${row.pending_command_id} within ${this.#options.stopTimeoutMs} ms`,
          updated_at: nowIso,
        };
        if (await store.update(next)) {
          expired += 1;
          metrics.syncActions.inc({ action: 'stop_timeout' });
          logger.warn(
            { uuid: row.uuid, command: row.pending_command_id, timeoutMs: this.#options.stopTimeoutMs },
            'stop command timed out; task cleared',
          );
          await this.#options.notifier.instanceUpdates(row, [{ ...next, version: row.version + 1 }]);
          break;
        }
        metrics.casRetries.inc();
        row = await store.get(candidate.uuid);
      }
    }
    return expired;
  }
}

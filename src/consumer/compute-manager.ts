/**
 * Nova's compute manager (nova/compute/manager.py) against the instance store, told in Nova's
 * order: handle_lifecycle_event maps a transition to the power state it implies and drops an event
 * the live power state contradicts (the staleness guard); the periodic _sync_power_states /
 * _query_driver_power_state_and_sync takes a snapshot's live state as it is (no guard), and a
 * snapshot that no longer lists a guest reads as NOSTATE (the driver's InstanceNotFound); then
 * _sync_instance_power_state checks the host, the task, writes power_state and takes the
 * vm_state × power_state branch (nova.ts), calling the stop API (compute_api.stop / force_stop) as
 * a stop command to the host's bridge.
 *
 * Each decision is a pure function of the message and the row as it stands, returning a Decision
 * for the round engine (rounds.ts): the row after the message, and the effects — logs, metrics,
 * notifications, the stop command — that run only once that row is committed. What virtbus adds to
 * Nova's steps sits at marked points: the event-position check (redelivery and reordering on a
 * bus), the live-migration follower (follow.ts), and the withheld stop while a migration is in
 * evidence. How a stop ends (its result, its timeout) is stop-results.ts.
 */
import type { MaintenanceCheck } from './maintenance';
import { PowerState } from '../libvirt/constants';
import { COMMAND_SCHEMA, newCommandId, type CommandAction, type StopCommand } from '../messages/command';
import type { Notifier } from '../notify/notifier';
import type { InstanceRow } from '../store/types';
import type { Logger } from '../util/log';
import { isoMicros, parseIsoMicros } from '../util/time';
import type { MigrationFollower } from './follow';
import type { ConsumerMetrics, MessageOutcome, SyncAction } from './metrics';
import { expectedPowerState, stopPrecondition, stopRefusal, syncBranch, type SyncBranch } from './nova';
import { isNotNewer } from './position';
import { joinPublished, type Decision, type Task } from './rounds';
import type { LifecycleEventIn } from './validate';

export type ConsumerMode = 'nova' | 'observe';

export interface ComputeManagerOptions {
  readonly mode: ConsumerMode;
  /** How long a stop command may take before the consumer gives up on it. */
  readonly stopTimeoutMs: number;
  readonly notifier: Notifier;
  /** Publishes a stop command to its host's bridge (resolves on the broker's confirm). */
  readonly sendCommand: (command: StopCommand, ttlMs: number) => Promise<void>;
  readonly metrics: ConsumerMetrics;
  readonly logger: Logger;
  /** Clock in epoch microseconds. */
  readonly now: () => number;
  /** Live-migration following; undefined when consumer.followMigrations is off. */
  readonly follow: MigrationFollower | undefined;
  /** A host in maintenance gets no stop or force_stop (maintenance.ts); absent: none is. */
  readonly maintenance?: MaintenanceCheck;
}

/** What the stop API call of a stop / force_stop branch came to. */
type StopCall =
  /** compute_api.stop's checks refused it (InstanceInvalidState / InstanceNotReady). */
  | { readonly kind: 'refused'; readonly reason: string }
  /** A live migration is in evidence: recorded, not called (virtbus's stand-in for task 'migrating'). */
  | { readonly kind: 'withheld' }
  /** The host is in maintenance (`virtbus hosts disable`): recorded, not called. */
  | { readonly kind: 'maintenance'; readonly reason: string }
  /** nova mode: task_state powering-off and a command to the host's bridge. */
  | { readonly kind: 'sent'; readonly command: StopCommand }
  /** observe mode: what Nova would do, recorded. */
  | { readonly kind: 'observed' };

export class ComputeManager {
  readonly #options: ComputeManagerOptions;

  constructor(options: ComputeManagerOptions) {
    this.#options = options;
  }

  /** A stop command's time to live on the bus: half the stop timeout, so it dies before we give up. */
  get commandTtlMs(): number {
    return Math.max(1, Math.floor(this.#options.stopTimeoutMs / 2));
  }

  /**
   * handle_lifecycle_event (vmPowerState = the power state the transition implies) or, for a `sync`
   * snapshot entry, _query_driver_power_state_and_sync (vmPowerState = the live state it read).
   * Undefined for transitions Nova never syncs on (its libvirt driver emits no event for them).
   */
  lifecycleTask(event: LifecycleEventIn): Task | undefined {
    const periodic = event.transition === 'sync';
    const vmPowerState = periodic ? event.powerState : expectedPowerState(event.transition);
    if (!periodic && vmPowerState === null) {
      this.#options.logger.debug(
        { uuid: event.instanceUuid, transition: event.transition },
        'lifecycle event Nova does not act on',
      );
      return undefined;
    }
    const uuid = event.instanceUuid as string;
    return {
      uuid,
      trace: event.trace,
      decide: (row) => this.#lifecycle(event, row, uuid, vmPowerState, periodic),
    };
  }

  /**
   * sync_end: a row of this host that the snapshot does not list, and that did not change since it
   * was taken, is a domain the hypervisor no longer has — the periodic sync's get_info raised
   * InstanceNotFound, so it syncs with NOSTATE.
   */
  vanishedTask(event: LifecycleEventIn, uuid: string): Task {
    const takenUs = event.snapshot?.takenUs ?? event.occurredUs;
    const { metrics } = this.#options;
    return {
      uuid,
      trace: event.trace,
      decide: (row) => {
        // Gone from this host, deleted, or changed since the snapshot was taken: it says nothing of it.
        if (
          !row ||
          row.host !== event.host ||
          row.vm_state === 'deleted' ||
          parseIsoMicros(row.updated_at) > takenUs ||
          (row.event_at_us !== null && row.event_at_us > takenUs) ||
          isNotNewer(event, row)
        )
          return { outcome: 'sync_end' };
        let current = row;
        if (this.#options.follow) {
          // The host's snapshot without the guest is its word that the guest left.
          const step = this.#options.follow.sourceLeft(row);
          if ('outcome' in step) return step;
          current = step.row;
        }
        // _query_driver_power_state_and_sync: a pending task skips the instance.
        if (current.task_state !== null) return { outcome: 'sync_end', next: current };
        const decision = this.#syncInstancePowerState(current, event, PowerState.NOSTATE, 'sync_end');
        return {
          ...decision,
          effects: () => {
            metrics.syncActions.inc({ action: 'vanished' });
            return decision.effects?.();
          },
        };
      },
    };
  }

  /** handle_events / handle_lifecycle_event on the row as it stands. */
  #lifecycle(
    event: LifecycleEventIn,
    row: InstanceRow | undefined,
    uuid: string,
    vmPowerState: number | null,
    periodic: boolean,
  ): Decision {
    const { logger } = this.#options;
    // InstanceNotFound: the event path reads with read_deleted='yes'; the periodic path lists the
    // host's non-deleted rows, so a deleted row is not found there.
    if (!row || (periodic && row.vm_state === 'deleted'))
      return {
        outcome: 'not_found',
        effects: () => {
          logger.debug({ uuid, transition: event.transition }, 'event arrived for non-existent instance');
          return undefined;
        },
      };
    let current = row;
    if (this.#options.follow) {
      // virtbus: a live migration's word from either host (recorded, or the row moves).
      const step = this.#options.follow.step(event, row);
      if ('outcome' in step) return step;
      current = step.row;
    }
    // virtbus: a message the row already reflects (redelivered, or overtaken) changes nothing.
    if (isNotNewer(event, current)) return { outcome: 'out_of_order' };
    if (vmPowerState === null || (!periodic && event.powerState !== vmPowerState))
      // The staleness guard (bug #1468431): the event may be delayed; the live state describes now.
      return {
        outcome: 'stale',
        effects: () => {
          logger.debug(
            { uuid, transition: event.transition, live: event.powerState, expected: vmPowerState },
            'stale lifecycle event: the live power state differs; dropped',
          );
          return undefined;
        },
      };
    return (
      this.#hostAndTaskChecks(event, current) ??
      this.#syncInstancePowerState(current, event, vmPowerState, 'synced')
    );
  }

  /** _sync_instance_power_state's first two checks: another host's instance, a pending task. */
  #hostAndTaskChecks(event: LifecycleEventIn, row: InstanceRow): Decision | undefined {
    const { logger } = this.#options;
    if (row.host !== event.host) {
      const src = row.host;
      return {
        outcome: 'skipped_host',
        effects: () => {
          logger.info(
            { uuid: row.uuid, src, dst: event.host },
            'During the sync_power process the instance has moved from host src to host dst',
          );
          return undefined;
        },
      };
    }
    if (row.task_state !== null) {
      const task = row.task_state;
      return {
        outcome: 'skipped_task',
        effects: () => {
          logger.info(
            { uuid: row.uuid, task_state: task },
            'During sync_power_state the instance has a pending task. Skip.',
          );
          return undefined;
        },
      };
    }
    return undefined;
  }

  /**
   * _sync_instance_power_state from its power_state write on, for a row whose host matches and
   * that has no task: power_state (and the event position) written, then the vm_state branch.
   */
  #syncInstancePowerState(
    row: InstanceRow,
    event: LifecycleEventIn,
    vmPowerState: number,
    outcome: MessageOutcome,
  ): Decision {
    const now = this.#options.now();
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
    let call: StopCall | undefined;
    if (branch.action === 'stop' || branch.action === 'force_stop') {
      call = this.#callStopApi(branch.action, branch, row, afterPower, now);
      if (call.kind === 'sent') next = this.#poweringOff(afterPower, call.command, now);
      else if (call.kind !== 'refused')
        next = {
          ...afterPower,
          last_action: `${STOP_CALL_RECORD[call.kind]}_${branch.action}`,
          last_action_at: nowIso,
        };
      actions.push(stopCallAction(branch.action, call));
    } else if (branch.action !== 'none') {
      actions.push(branch.action);
    }
    const command = call?.kind === 'sent' ? call.command : undefined;
    const effects = (): Promise<void> | undefined => {
      const { metrics, notifier } = this.#options;
      metrics.eventToSync.observe(Math.max(0, this.#options.now() - event.occurredUs) / 1e6);
      for (const action of actions) metrics.syncActions.inc({ action });
      this.#logBranch(row, event, vmPowerState, branch, call);
      // (The steps keep the version they were decided on: a notification does not carry it.)
      const steps: InstanceRow[] = [];
      if (powerChanged) steps.push(afterPower);
      if (command) steps.push(next);
      const notified = steps.length > 0 ? notifier.instanceUpdates(row, steps) : undefined;
      const sent = command ? this.#send(command) : undefined;
      return sent ? joinPublished([notified, sent]) : notified;
    };
    return { outcome, next, effects };
  }

  /**
   * The stop API for a stop or force_stop branch: compute_api.stop's checks (force_stop has none),
   * then — unless a live migration is in evidence (Nova does not act on an instance whose task_state
   * is 'migrating') — a command in nova mode, a record of it in observe mode. Every reason not to
   * act on a stop branch belongs here, as a StopCall kind, so the row, the metric and the log follow.
   */
  #callStopApi(
    action: CommandAction,
    branch: SyncBranch,
    row: InstanceRow,
    afterPower: InstanceRow,
    now: number,
  ): StopCall {
    const reason = action === 'stop' ? stopRefusal(afterPower) : null;
    if (reason) return { kind: 'refused', reason };
    if (row.migration !== null) return { kind: 'withheld' };
    const maintenance = this.#options.maintenance?.(row.host, now);
    if (maintenance) return { kind: 'maintenance', reason: maintenance.reason };
    if (this.#options.mode !== 'nova') return { kind: 'observed' };
    const precondition = stopPrecondition(branch.branch);
    return {
      kind: 'sent',
      command: {
        schema: COMMAND_SCHEMA,
        command_id: newCommandId(),
        action,
        host: row.host as string,
        instance_uuid: row.uuid,
        reason: `${branch.branch}: ${branch.message}`,
        issued_at: isoMicros(now),
        expires_at: isoMicros(now + this.commandTtlMs * 1000),
        ...(precondition ? { only_if_power_states: precondition } : {}),
      },
    };
  }

  /** compute_api.stop's own write: task_state powering-off, with the command it waits for. */
  #poweringOff(row: InstanceRow, command: StopCommand, now: number): InstanceRow {
    const nowIso = isoMicros(now);
    return {
      ...row,
      task_state: 'powering-off',
      pending_command_id: command.command_id,
      pending_command_host: command.host,
      pending_action: command.action,
      command_deadline_ms: Math.floor(now / 1000) + this.#options.stopTimeoutMs,
      last_action: command.action,
      last_action_at: nowIso,
      last_error: null,
      updated_at: nowIso,
    };
  }

  /** Nova's log line for the branch taken (warnings for every branch Nova warns on). */
  #logBranch(
    row: InstanceRow,
    event: LifecycleEventIn,
    vmPowerState: number,
    branch: SyncBranch,
    call: StopCall | undefined,
  ): void {
    const { logger, mode } = this.#options;
    if (!call && !branch.message) {
      if (logger.isLevelEnabled('debug'))
        logger.debug(this.#logContext(row, event, vmPowerState, branch), 'power state synced');
      return;
    }
    const context = this.#logContext(row, event, vmPowerState, branch);
    switch (call?.kind) {
      case 'refused':
        logger.warn(
          { ...context, reason: call.reason },
          `${branch.message} The stop API refused: ${call.reason}`,
        );
        return;
      case 'withheld':
        logger.warn(
          { ...context, migration: row.migration },
          `${branch.message} Withheld: a live migration of this instance is in evidence.`,
        );
        return;
      case 'maintenance':
        logger.warn(
          { ...context, maintenance: call.reason },
          `${branch.message} Withheld: host ${row.host} is in maintenance.`,
        );
        return;
      case 'sent':
        logger.warn(
          { ...context, command: call.command.command_id, action: call.command.action },
          branch.message,
        );
        return;
      case 'observed':
        logger.warn({ ...context, mode }, `observe mode: Nova would ${branch.action} (${branch.message})`);
        return;
      case undefined:
        logger.warn(context, branch.message);
    }
  }

  #logContext(row: InstanceRow, event: LifecycleEventIn, vmPowerState: number, branch: SyncBranch) {
    return {
      uuid: row.uuid,
      host: row.host,
      vm_state: row.vm_state,
      power_state: vmPowerState,
      db_power_state: row.power_state,
      branch: branch.branch,
      transition: event.transition,
    };
  }

  async #send(command: StopCommand): Promise<void> {
    const { logger, metrics } = this.#options;
    try {
      await this.#options.sendCommand(command, this.commandTtlMs);
      metrics.commandsPublished.inc({ action: command.action });
    } catch (error) {
      // The row stays powering-off until the stop timeout clears it; the next sync retries (as Nova's
      // "error during stop() in sync_power_state": the same power_state comes back and is retried).
      metrics.syncActions.inc({ action: 'command_publish_failed' });
      logger.error(
        { err: error, uuid: command.instance_uuid, command: command.command_id },
        'stop command not published; the stop timeout will clear the task',
      );
    }
  }
}

/** The row's last_action prefix for a stop call that recorded instead of sending. */
const STOP_CALL_RECORD = { withheld: 'withheld', maintenance: 'maintenance', observed: 'would' } as const;

/** The sync action a stop API call counts as. */
function stopCallAction(action: CommandAction, call: StopCall): SyncAction {
  switch (call.kind) {
    case 'refused':
      return 'stop_not_allowed';
    case 'withheld':
      return 'migration_stop_withheld';
    case 'maintenance':
      return 'maintenance_stop_withheld';
    case 'sent':
      return action;
    case 'observed':
      return action === 'stop' ? 'would_stop' : 'would_force_stop';
  }
}

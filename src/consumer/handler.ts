/**
 * Nova's compute-manager side against the instance store (nova-lifecycle.md §3–4):
 * handle_lifecycle_event for the six transitions Nova syncs on (with the staleness guard on the live
 * power_state the bridge sampled), the periodic sync for `sync` snapshots (no guard) and `sync_end`
 * (rows of the host missing from the snapshot are NOSTATE), then _sync_instance_power_state — host
 * check, task check, power_state write, the vm_state × power_state branch — and the stop/force_stop
 * loop with the bridge: compare-and-swap to task_state powering-off, a stop command to the host,
 * completion from its result or a timeout.
 *
 * Messages are handled in batches (what the consumer has in hand): one store round reads every row
 * the batch names, decides each message in delivery order on the row as the previous messages of
 * the batch left it (a pure, synchronous decision), and writes each changed row once, as a
 * compare-and-swap on the version it read. A row whose write lost a race (another consumer, an
 * operator) is re-read and its messages are decided again; nothing a decision implies — logs,
 * metrics, notifications, stop commands — happens before its row is committed. Every applied
 * lifecycle message records its position (occurred_at, boot_id, seq) in the row; a message that is
 * not newer than that is ignored, which makes redelivery and reordering harmless.
 *
 * The round machinery (compare-and-swap, retries, error isolation) lives in rounds.ts and the end of
 * a stop command (its result, its timeout) in stop-results.ts; this file keeps Nova's decisions.
 */
import { PowerState } from '../libvirt/constants';
import { COMMAND_SCHEMA, newCommandId, type CommandAction, type StopCommand } from '../messages/command';
import type { Notifier } from '../notify/notifier';
import type { InstanceRow, InstanceStore } from '../store/types';
import type { Logger } from '../util/log';
import { isoMicros, nowMicros, parseIsoMicros } from '../util/time';
import type { ConsumerMetrics, MessageOutcome, SyncAction } from './metrics';
import { MigrationFollower } from './follow';
import { expectedPowerState, stopPrecondition, stopRefusal, syncBranch } from './nova';
import { isNotNewer } from './position';
import {
  ShutdownAbort,
  asError,
  direct,
  joinPublished,
  runRounds,
  type Decision,
  type StoreRunner,
  type Task,
  type TaskResult,
} from './rounds';
import { expiryTask, resultTask, type StopContext } from './stop-results';
import type { CommandResultIn, LifecycleEventIn } from './validate';

export { ShutdownAbort, type StoreRunner } from './rounds';
export { isNotNewer } from './position';

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
  /** consumer.followMigrations (default true): rows follow live migrations both hosts agree on. */
  readonly followMigrations?: boolean;
  /** consumer.migrationWindowMs (default 600000): how long one host's word waits for the other's. */
  readonly migrationWindowMs?: number;
}

const DEFAULT_MIGRATION_WINDOW_MS = 600_000;

/** A message for the handler: a validated lifecycle event or stop-command result. */
export type WorkItem =
  | { readonly kind: 'lifecycle'; readonly event: LifecycleEventIn }
  | { readonly kind: 'result'; readonly result: CommandResultIn };

/**
 * What became of one message: its outcome, committed, and a promise that settles once what it
 * published (notifications, a stop command) is confirmed by the broker or has failed — or the error
 * it failed with on a database that answers (the caller dead-letters it).
 */
export type ItemResult =
  | { readonly ok: true; readonly outcome: MessageOutcome; readonly published: Promise<void> | undefined }
  | { readonly ok: false; readonly error: Error };

/** sync_end candidates and expired commands per store round. */
const ROUND_ROWS = 500;

export class LifecycleHandler {
  readonly #options: HandlerOptions;
  readonly #now: () => number;
  readonly #stopContext: StopContext;
  /** Live-migration following; undefined when consumer.followMigrations is off. */
  readonly #follow: MigrationFollower | undefined;

  constructor(options: HandlerOptions) {
    this.#options = options;
    this.#now = options.now ?? nowMicros;
    this.#follow =
      (options.followMigrations ?? true)
        ? new MigrationFollower({
            logger: options.logger,
            metrics: options.metrics,
            notifier: options.notifier,
            now: this.#now,
            windowMs: options.migrationWindowMs ?? DEFAULT_MIGRATION_WINDOW_MS,
          })
        : undefined;
    this.#stopContext = {
      logger: options.logger,
      metrics: options.metrics,
      notifier: options.notifier,
      stopTimeoutMs: options.stopTimeoutMs,
      now: this.#now,
    };
  }

  /**
   * A batch of messages, in delivery order (messages of one instance are decided in that order).
   * Resolves with one result per item once every row change is committed and every effect started;
   * rejects only when `run` gives up (the consumer is shutting down): then nothing is acknowledged.
   */
  async handleBatch(items: readonly WorkItem[], run: StoreRunner = direct): Promise<ItemResult[]> {
    const results: ItemResult[] = new Array<ItemResult>(items.length);
    // Messages up to a sync_end are one round; a sync_end (which lists its host's rows) its own.
    let segment: Array<{ readonly index: number; readonly task: Task }> = [];
    const flush = async (): Promise<void> => {
      if (segment.length === 0) return;
      const current = segment;
      segment = [];
      const done = await this.#rounds(
        current.map((entry) => entry.task),
        run,
      );
      current.forEach((entry, position) => {
        const result = done[position] as TaskResult;
        results[entry.index] = result.ok
          ? { ok: true, outcome: result.decision.outcome, published: result.published }
          : result;
      });
    };
    for (let index = 0; index < items.length; index += 1) {
      const item = items[index] as WorkItem;
      if (item.kind === 'result') {
        segment.push({ index, task: this.#resultTask(item.result) });
        continue;
      }
      const event = item.event;
      if (event.transition === 'sync_end') {
        await flush();
        results[index] = await this.#syncEnd(event, run);
        continue;
      }
      const task = this.#lifecycleTask(event);
      if (task) segment.push({ index, task });
      else results[index] = { ok: true, outcome: 'ignored', published: undefined };
    }
    await flush();
    return results;
  }

  /** One lifecycle message (tests, tools); resolves with its outcome once its changes are committed. */
  async handleLifecycle(event: LifecycleEventIn, run: StoreRunner = direct): Promise<MessageOutcome> {
    return this.#single({ kind: 'lifecycle', event }, run);
  }

  /** One stop-command result; resolves with its outcome once its changes are committed. */
  async handleResult(result: CommandResultIn, run: StoreRunner = direct): Promise<MessageOutcome> {
    return this.#single({ kind: 'result', result }, run);
  }

  async #single(item: WorkItem, run: StoreRunner): Promise<MessageOutcome> {
    const [result] = await this.handleBatch([item], run);
    if (!result) throw new Error('no result');
    if (!result.ok) throw result.error;
    await result.published;
    return result.outcome;
  }

  #rounds(tasks: readonly Task[], run: StoreRunner): Promise<TaskResult[]> {
    return runRounds(this.#options.store, this.#options.metrics, tasks, run);
  }

  /**
   * handle_lifecycle_event (periodic = false; vmPowerState = the transition's expected state) or
   * _query_driver_power_state_and_sync (`sync`: periodic = true; vmPowerState = the snapshot's live
   * state). Undefined for transitions Nova does not act on.
   */
  #lifecycleTask(event: LifecycleEventIn): Task | undefined {
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
      trace: event.trace, // hook (issue 13)
      decide: (row) => this.#decideSync(event, row, uuid, vmPowerState, periodic),
    };
  }

  #decideSync(
    event: LifecycleEventIn,
    row: InstanceRow | undefined,
    uuid: string,
    vmPowerState: number | null,
    periodic: boolean,
  ): Decision {
    const { logger } = this.#options;
    // read_deleted='yes' on the event path; the periodic path lists the host's non-deleted rows.
    if (!row || (periodic && row.vm_state === 'deleted'))
      return {
        outcome: 'not_found',
        effects: () => {
          logger.debug({ uuid, transition: event.transition }, 'event arrived for non-existent instance');
          return undefined;
        },
      };
    let current = row;
    if (this.#follow) {
      const step = this.#follow.step(event, row);
      if ('outcome' in step) return step;
      current = step.row;
    }
    return this.#novaSync(event, current, uuid, vmPowerState, periodic);
  }

  /** handle_lifecycle_event / the periodic sync from the ordering check on (Nova's own steps). */
  #novaSync(
    event: LifecycleEventIn,
    row: InstanceRow,
    uuid: string,
    vmPowerState: number | null,
    periodic: boolean,
  ): Decision {
    const { logger } = this.#options;
    if (isNotNewer(event, row)) return { outcome: 'out_of_order' };
    if (vmPowerState === null || (!periodic && event.powerState !== vmPowerState))
      // Staleness guard (bug #1468431): a later event describes the current state.
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
    if (row.host !== event.host) {
      const src = row.host;
      return {
        outcome: 'skipped_host',
        effects: () => {
          logger.info(
            { uuid, src, dst: event.host },
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
            { uuid, task_state: task },
            'During sync_power_state the instance has a pending task. Skip.',
          );
          return undefined;
        },
      };
    }
    return this.#applySync(row, event, vmPowerState, 'synced');
  }

  /**
   * sync_end: rows of this host that the snapshot does not list, and that did not change since it
   * was taken, are domains the hypervisor no longer has — the periodic sync sees NOSTATE.
   */
  async #syncEnd(event: LifecycleEventIn, run: StoreRunner): Promise<ItemResult> {
    // A failure on a database that answers fails this message alone (the caller dead-letters it);
    // an unavailable database is waited out inside `run`, and a shutdown ends the batch unacked.
    try {
      return await this.#syncEndRounds(event, run);
    } catch (error) {
      if (error instanceof ShutdownAbort) throw error;
      return { ok: false, error: asError(error) };
    }
  }

  async #syncEndRounds(event: LifecycleEventIn, run: StoreRunner): Promise<ItemResult> {
    const { store, metrics } = this.#options;
    const listed = new Set(event.instanceUuids ?? []);
    const takenUs = event.snapshot?.takenUs ?? event.occurredUs;
    const candidates = (await run(() => store.list({ host: event.host }))).filter(
      (row) => !listed.has(row.uuid),
    );
    const published: Array<Promise<void> | undefined> = [];
    for (let start = 0; start < candidates.length; start += ROUND_ROWS) {
      const tasks = candidates.slice(start, start + ROUND_ROWS).map((candidate): Task => ({
        uuid: candidate.uuid,
        trace: event.trace, // hook (issue 13)
        decide: (row) => {
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
          if (this.#follow) {
            // The host's snapshot without the guest is its word that the guest left.
            const step = this.#follow.sourceLeft(row);
            if ('outcome' in step) return step;
            current = step.row;
          }
          if (current.task_state !== null) return { outcome: 'sync_end', next: current };
          const decision = this.#applySync(current, event, PowerState.NOSTATE, 'sync_end');
          return {
            ...decision,
            effects: () => {
              metrics.syncActions.inc({ action: 'vanished' });
              return decision.effects?.();
            },
          };
        },
      }));
      for (const result of await this.#rounds(tasks, run)) {
        if (!result.ok) return result;
        published.push(result.published);
      }
    }
    return { ok: true, outcome: 'sync_end', published: joinPublished(published) };
  }

  /**
   * _sync_instance_power_state steps 3–4 on a row whose host matches and that has no task: the
   * power_state write (and the event position), then the §3c branch.
   */
  #applySync(
    row: InstanceRow,
    event: LifecycleEventIn,
    vmPowerState: number,
    outcome: MessageOutcome,
  ): Decision {
    const { mode, logger, metrics, stopTimeoutMs } = this.#options;
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
    let withheld = false;
    if (branch.action === 'stop' || branch.action === 'force_stop') {
      const action: CommandAction = branch.action;
      refusal = action === 'stop' ? stopRefusal(afterPower) : null;
      if (refusal) {
        actions.push('stop_not_allowed');
      } else if (row.migration !== null) {
        // A live migration is in evidence: Nova does not act on an instance whose task_state is
        // 'migrating'; the power state is recorded, the stop withheld.
        withheld = true;
        next = { ...afterPower, last_action: `withheld_${action}`, last_action_at: nowIso };
        actions.push('migration_stop_withheld');
      } else if (mode === 'nova') {
        const ttlMs = Math.max(1, Math.floor(stopTimeoutMs / 2));
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
          pending_command_host: command.host,
          pending_action: action,
          command_deadline_ms: Math.floor(now / 1000) + stopTimeoutMs,
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
    const effects = (): Promise<void> | undefined => {
      metrics.eventToSync.observe(Math.max(0, this.#now() - event.occurredUs) / 1e6);
      for (const action of actions) metrics.syncActions.inc({ action });
      const logContext = () => ({
        uuid: row.uuid,
        host: row.host,
        vm_state: row.vm_state,
        power_state: vmPowerState,
        db_power_state: row.power_state,
        branch: branch.branch,
        transition: event.transition,
      });
      if (refusal || withheld || command || branch.message) {
        const context = logContext();
        if (refusal)
          logger.warn({ ...context, reason: refusal }, `${branch.message} The stop API refused: ${refusal}`);
        else if (withheld)
          logger.warn(
            { ...context, migration: row.migration },
            `${branch.message} Withheld: a live migration of this instance is in evidence.`,
          );
        else if (command)
          logger.warn({ ...context, command: command.command_id, action: command.action }, branch.message);
        else if (branch.action === 'stop' || branch.action === 'force_stop')
          logger.warn({ ...context, mode }, `observe mode: Nova would ${branch.action} (${branch.message})`);
        else logger.warn(context, branch.message);
      } else if (logger.isLevelEnabled('debug')) {
        logger.debug(logContext(), 'power state synced');
      }
      // (The steps keep the version they were decided on: a notification does not carry it.)
      const steps: InstanceRow[] = [];
      if (powerChanged) steps.push(afterPower);
      if (command) steps.push(next);
      const notified = steps.length > 0 ? this.#options.notifier.instanceUpdates(row, steps) : undefined;
      const sent = command ? this.#send(command) : undefined;
      return sent ? joinPublished([notified, sent]) : notified;
    };
    return { outcome, next, effects };
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

  /** A stop command's result (stop-results.ts). */
  #resultTask(result: CommandResultIn): Task {
    return resultTask(this.#stopContext, result);
  }

  /** Clears stop commands that passed their deadline without a result; returns how many. */
  async expireCommands(run: StoreRunner = direct): Promise<number> {
    const { store } = this.#options;
    const nowMs = Math.floor(this.#now() / 1000);
    const candidates = await run(() => store.expiredCommands(nowMs));
    const expired = { count: 0 };
    const published: Array<Promise<void> | undefined> = [];
    for (let start = 0; start < candidates.length; start += ROUND_ROWS) {
      const tasks = candidates
        .slice(start, start + ROUND_ROWS)
        .map((candidate) => expiryTask(this.#stopContext, candidate, expired));
      for (const result of await this.#rounds(tasks, run)) {
        if (!result.ok) throw result.error;
        published.push(result.published);
      }
    }
    await joinPublished(published);
    return expired.count;
  }
}

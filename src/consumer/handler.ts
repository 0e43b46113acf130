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
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { PowerState } from '../libvirt/constants';
import { COMMAND_SCHEMA, newCommandId, type CommandAction, type StopCommand } from '../messages/command';
import type { Notifier } from '../notify/notifier';
import type { InstanceRow, InstanceStore, RowWrite } from '../store/types';
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

/**
 * Runs one store call; the consumer passes a runner that waits out database outages and retries the
 * call (a failed call wrote nothing, so it is decided again from scratch).
 */
export type StoreRunner = <T>(call: () => Promise<T>) => Promise<T>;

/**
 * Lost compare-and-swap races are retried, after a short randomised backoff that grows to
 * CAS_BACKOFF_MAX_MS (so racing consumers or a busy operator stop colliding), for as long as
 * CAS_BUDGET_MS; only a row that keeps changing for that long fails its messages (dead-lettered).
 */
const CAS_BACKOFF_MAX_MS = 20;
const CAS_BUDGET_MS = 30_000;

/** sync_end candidates and expired commands per store round. */
const ROUND_ROWS = 500;

const SUCCESS_OUTCOMES = new Set(['stopped', 'already_stopped']);

/**
 * True when the row already reflects this message or a newer one (occurred_at, then boot_id/seq).
 * The position is set by applied lifecycle messages (their occurred_at, boot_id, seq) and by
 * successful stop results (the bridge's finished_at, with no boot_id/seq: a result has none).
 */
export function isNotNewer(event: LifecycleEventIn, row: InstanceRow): boolean {
  if (row.event_at_us === null) return false;
  if (event.occurredUs !== row.event_at_us) return event.occurredUs < row.event_at_us;
  // The same microsecond: within one bridge process seq orders; across processes (or against a
  // stop result's position, which has no boot_id) treat as new.
  return event.bootId === row.event_boot_id && event.seq <= (row.event_seq ?? -1);
}

class CasExhausted extends Error {
  override readonly name = 'CasExhausted';
}

/** Thrown by a store runner when the consumer is shutting down: the batch ends unacknowledged. */
export class ShutdownAbort extends Error {
  override readonly name = 'ShutdownAbort';
}

/** What one message does to its row, decided on the row as it stands. */
interface Decision {
  readonly outcome: MessageOutcome;
  /** The row after this message, when the message changes it. */
  readonly next?: InstanceRow;
  /** After the commit: logs, metrics, notifications, the command; a promise while publishing. */
  readonly effects?: () => Promise<void> | undefined;
}

/** One decision to take on one row, within a store round. */
interface Task {
  readonly uuid: string;
  decide(row: InstanceRow | undefined): Decision;
}

type TaskResult =
  | { readonly ok: true; readonly decision: Decision; readonly published: Promise<void> | undefined }
  | { readonly ok: false; readonly error: Error };

const direct: StoreRunner = (call) => call();

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

function joinPublished(promises: ReadonlyArray<Promise<void> | undefined>): Promise<void> | undefined {
  const pending = promises.filter((promise): promise is Promise<void> => promise !== undefined);
  if (pending.length === 0) return undefined;
  if (pending.length === 1) return pending[0];
  return Promise.all(pending).then(() => undefined);
}

export class LifecycleHandler {
  readonly #options: HandlerOptions;
  readonly #now: () => number;

  constructor(options: HandlerOptions) {
    this.#options = options;
    this.#now = options.now ?? nowMicros;
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

  /**
   * Store rounds until every task is decided on a row its write did not lose: each round reads the
   * rows of the pending tasks, decides their tasks in order (chaining the tasks of one row), writes
   * each changed row once, then — committed — runs the effects of the rows it wrote and of the
   * decisions that wrote nothing. Rows that lost their compare-and-swap go round again. A round that
   * fails on a database that answers is split, task by task, so only the culprit fails.
   */
  async #rounds(tasks: readonly Task[], run: StoreRunner): Promise<TaskResult[]> {
    const results: TaskResult[] = new Array<TaskResult>(tasks.length);
    let pending: number[] = tasks.map((_, index) => index);
    const deadline = Date.now() + CAS_BUDGET_MS;
    let attempt = 0;
    while (pending.length > 0) {
      attempt += 1;
      if (attempt > 1) {
        if (Date.now() >= deadline) break;
        // Lost races: let the other writer finish before reading the rows again.
        if (attempt > 2) await sleep(Math.random() * Math.min(CAS_BACKOFF_MAX_MS, 2 ** (attempt - 2)));
      }
      const byUuid = new Map<string, number[]>();
      for (const index of pending) {
        const uuid = (tasks[index] as Task).uuid;
        const list = byUuid.get(uuid);
        if (list) list.push(index);
        else byUuid.set(uuid, [index]);
      }
      const decisions = new Map<number, Decision>();
      let lost: ReadonlySet<string>;
      try {
        lost = await run(() =>
          this.#options.store.apply([...byUuid.keys()], (rows) => {
            decisions.clear();
            const writes: RowWrite[] = [];
            for (const [uuid, indexes] of byUuid) {
              const original = rows.get(uuid);
              let current = original;
              for (const index of indexes) {
                const decision = (tasks[index] as Task).decide(current);
                decisions.set(index, decision);
                if (decision.next) current = decision.next;
              }
              if (original && current && current !== original)
                writes.push({
                  row: { ...current, version: original.version + 1 },
                  expected: original.version,
                });
            }
            return writes;
          }),
        );
      } catch (error) {
        if (error instanceof ShutdownAbort) throw error;
        if (pending.length === 1) {
          results[pending[0] as number] = { ok: false, error: asError(error) };
          return results;
        }
        // Decide each task on its own, in order, so that one bad message fails alone.
        for (const index of pending) {
          const [single] = await this.#rounds([tasks[index] as Task], run);
          results[index] = single as TaskResult;
        }
        return results;
      }
      const retry: number[] = [];
      for (const index of pending) {
        if (lost.has((tasks[index] as Task).uuid)) {
          retry.push(index);
          continue;
        }
        const decision = decisions.get(index) as Decision;
        results[index] = { ok: true, decision, published: decision.effects?.() };
      }
      if (lost.size > 0) this.#options.metrics.casRetries.inc(lost.size);
      pending = retry;
    }
    for (const index of pending) {
      const uuid = (tasks[index] as Task).uuid;
      results[index] = {
        ok: false,
        error: new CasExhausted(
          `instance ${uuid}: lost ${attempt - 1} compare-and-swap races in a row over ${CAS_BUDGET_MS} ms`,
        ),
      };
    }
    return results;
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
    return { uuid, decide: (row) => this.#decideSync(event, row, uuid, vmPowerState, periodic) };
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
        decide: (row) => {
          if (
            !row ||
            row.host !== event.host ||
            row.vm_state === 'deleted' ||
            row.task_state !== null ||
            parseIsoMicros(row.updated_at) > takenUs ||
            (row.event_at_us !== null && row.event_at_us > takenUs) ||
            isNotNewer(event, row)
          )
            return { outcome: 'sync_end' };
          const decision = this.#applySync(row, event, PowerState.NOSTATE, 'sync_end');
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
    if (branch.action === 'stop' || branch.action === 'force_stop') {
      const action: CommandAction = branch.action;
      refusal = action === 'stop' ? stopRefusal(afterPower) : null;
      if (refusal) {
        actions.push('stop_not_allowed');
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
      if (refusal || command || branch.message) {
        const context = logContext();
        if (refusal)
          logger.warn({ ...context, reason: refusal }, `${branch.message} The stop API refused: ${refusal}`);
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

  /**
   * A stop command's outcome from the bridge (Nova's stop_instance on the compute host): stopped or
   * already_stopped → vm_state stopped, task cleared, power_state from the bridge's live reading,
   * and the bridge's finished_at becomes the row's event position (when newer); otherwise the task
   * is cleared and the reason recorded (Nova's reverts_task_state).
   */
  #resultTask(result: CommandResultIn): Task {
    const { logger, metrics } = this.#options;
    return {
      uuid: result.instanceUuid,
      decide: (row) => {
        // Only a row still in this stop takes its result: an operator (or anything else) that moved
        // task_state on took the row out of it, and the result must not mark it stopped.
        if (!row || row.pending_command_id !== result.commandId || row.task_state !== 'powering-off')
          return {
            outcome: 'late_result',
            effects: () => {
              logger.info(
                {
                  uuid: result.instanceUuid,
                  command: result.commandId,
                  outcome: result.outcome,
                  task_state: row?.task_state,
                },
                'result for a stop command that is no longer pending (timed out, superseded or task_state changed); ignored',
              );
              return undefined;
            },
          };
        const nowIso = isoMicros(this.#now());
        const success = SUCCESS_OUTCOMES.has(result.outcome);
        // A successful stop is a point in the domain's history: lifecycle events sampled before it
        // finished (on another queue, so possibly processed after this result) are out of order.
        const advance =
          success &&
          result.finishedUs !== null &&
          (row.event_at_us === null || result.finishedUs > row.event_at_us);
        const next: InstanceRow = {
          ...row,
          ...(advance ? { event_at_us: result.finishedUs, event_boot_id: null, event_seq: null } : {}),
          vm_state: success ? 'stopped' : row.vm_state,
          task_state: null,
          power_state: result.powerState ?? row.power_state,
          pending_command_id: null,
          pending_action: null,
          command_deadline_ms: null,
          last_action: `${result.action}_${success ? 'completed' : result.outcome}`,
          last_action_at: nowIso,
          last_error: success ? null : `${result.outcome}: ${result.error ?? 'no detail'}`,
          updated_at: nowIso,
        };
        return {
          outcome: 'command_result',
          next,
          effects: () => {
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
            return this.#options.notifier.instanceUpdates(row, [next]);
          },
        };
      },
    };
  }

  /** Clears stop commands that passed their deadline without a result; returns how many. */
  async expireCommands(run: StoreRunner = direct): Promise<number> {
    const { store, logger, metrics } = this.#options;
    const nowMs = Math.floor(this.#now() / 1000);
    const candidates = await run(() => store.expiredCommands(nowMs));
    let expired = 0;
    const published: Array<Promise<void> | undefined> = [];
    for (let start = 0; start < candidates.length; start += ROUND_ROWS) {
      const tasks = candidates.slice(start, start + ROUND_ROWS).map((candidate): Task => ({
        uuid: candidate.uuid,
        decide: (row) => {
          if (!row || row.pending_command_id !== candidate.pending_command_id) return { outcome: 'synced' };
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
          return {
            outcome: 'synced',
            next,
            effects: () => {
              expired += 1;
              metrics.syncActions.inc({ action: 'stop_timeout' });
              logger.warn(
                { uuid: row.uuid, command: row.pending_command_id, timeoutMs: this.#options.stopTimeoutMs },
                'stop command timed out; task cleared',
              );
              return this.#options.notifier.instanceUpdates(row, [next]);
            },
          };
        },
      }));
      for (const result of await this.#rounds(tasks, run)) {
        if (!result.ok) throw result.error;
        published.push(result.published);
      }
    }
    await joinPublished(published);
    return expired;
  }
}

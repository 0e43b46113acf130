/**
 * The consumer's handler: messages in, committed decisions out. It turns a batch of messages into
 * tasks for the compare-and-swap round engine (rounds.ts) and their results back into one result
 * per message; what each message means is decided elsewhere — Nova's compute manager
 * (compute-manager.ts: handle_lifecycle_event, the periodic sync, _sync_instance_power_state) and
 * the end of a stop command (stop-results.ts: its result, its timeout).
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
 * A sync_end (which lists its host's rows) is a round of its own, as is the stop-timeout sweep; both
 * take their candidate rows ROUND_ROWS at a time.
 */
import type { MaintenanceCheck } from './maintenance';
import type { StopCommand } from '../messages/command';
import type { Notifier } from '../notify/notifier';
import type { InstanceStore } from '../store/types';
import type { Logger } from '../util/log';
import { nowMicros } from '../util/time';
import { ComputeManager, type ConsumerMode } from './compute-manager';
import { MigrationFollower } from './follow';
import type { ConsumerMetrics, MessageOutcome } from './metrics';
import {
  ShutdownAbort,
  asError,
  direct,
  joinPublished,
  runRounds,
  type StoreRunner,
  type Task,
  type TaskResult,
} from './rounds';
import { expiryTask, resultTask, type StopContext } from './stop-results';
import type { CommandResultIn, LifecycleEventIn } from './validate';

export { ShutdownAbort, type StoreRunner } from './rounds';
export { isNotNewer } from './position';
export type { ConsumerMode } from './compute-manager';

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
  /** A host in maintenance gets no stop or force_stop (maintenance.ts); absent: none is. */
  readonly maintenance?: MaintenanceCheck;
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
  /** Nova's decisions on lifecycle messages. */
  readonly #nova: ComputeManager;
  readonly #stopContext: StopContext;

  constructor(options: HandlerOptions) {
    this.#options = options;
    this.#now = options.now ?? nowMicros;
    const follow =
      (options.followMigrations ?? true)
        ? new MigrationFollower({
            logger: options.logger,
            metrics: options.metrics,
            notifier: options.notifier,
            now: this.#now,
            windowMs: options.migrationWindowMs ?? DEFAULT_MIGRATION_WINDOW_MS,
          })
        : undefined;
    this.#nova = new ComputeManager({
      mode: options.mode,
      stopTimeoutMs: options.stopTimeoutMs,
      notifier: options.notifier,
      sendCommand: options.sendCommand,
      metrics: options.metrics,
      logger: options.logger,
      now: this.#now,
      follow,
      ...(options.maintenance ? { maintenance: options.maintenance } : {}),
    });
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
        segment.push({ index, task: resultTask(this.#stopContext, item.result) });
        continue;
      }
      const event = item.event;
      if (event.transition === 'sync_end') {
        await flush();
        results[index] = await this.#syncEnd(event, run);
        continue;
      }
      const task = this.#nova.lifecycleTask(event);
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

  /** sync_end: the host's rows its snapshot does not list (compute-manager.ts vanishedTask). */
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
    const { store } = this.#options;
    const listed = new Set(event.instanceUuids ?? []);
    const candidates = (await run(() => store.list({ host: event.host }))).filter(
      (row) => !listed.has(row.uuid),
    );
    const published: Array<Promise<void> | undefined> = [];
    for (let start = 0; start < candidates.length; start += ROUND_ROWS) {
      const tasks = candidates
        .slice(start, start + ROUND_ROWS)
        .map((candidate) => this.#nova.vanishedTask(event, candidate.uuid));
      for (const result of await this.#rounds(tasks, run)) {
        if (!result.ok) return result;
        published.push(result.published);
      }
    }
    return { ok: true, outcome: 'sync_end', published: joinPublished(published) };
  }

  /** Clears stop commands that passed their deadline without a result; returns how many. */
  async expireCommands(run: StoreRunner = direct): Promise<number> {
    const { store, metrics } = this.#options;
    const nowMs = Math.floor(this.#now() / 1000);
    const candidates = await run(() => store.expiredCommands(nowMs));
    let timedOut = 0;
    const published: Array<Promise<void> | undefined> = [];
    for (let start = 0; start < candidates.length; start += ROUND_ROWS) {
      const tasks = candidates
        .slice(start, start + ROUND_ROWS)
        .map((candidate) => expiryTask(this.#stopContext, candidate));
      for (const result of await runRounds(store, metrics, tasks, run)) {
        if (!result.ok) throw result.error;
        if (result.decision.outcome === 'timed_out') timedOut += 1;
        published.push(result.published);
      }
    }
    await joinPublished(published);
    return timedOut;
  }
}

/**
 * The compare-and-swap round engine under the handler's Nova decisions: a list of tasks (one
 * decision each on one row) is decided in store rounds — read the rows, decide every task in order
 * (chaining the tasks of one row), write each changed row once as a compare-and-swap on the version
 * it read, then, committed, run the effects. Rows that lost their race are re-read and decided
 * again after a short backoff. Kept apart from the decisions so the handler reads as Nova's story
 * and this machinery (retries, budgets, error isolation) can be read and tested on its own.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { InstanceRow, InstanceStore, RowWrite } from '../store/types';
import type { ConsumerMetrics, MessageOutcome } from './metrics';
import { effectsWithTrace, type MessageTrace } from '../tracing/consumer';

/**
 * Runs one store call; the consumer passes a runner that waits out database outages and retries the
 * call (a failed call wrote nothing, so it is decided again from scratch).
 */
export type StoreRunner = <T>(call: () => Promise<T>) => Promise<T>;

/** The runner without outage handling (tests, tools). */
export const direct: StoreRunner = (call) => call();

/** Thrown by a store runner when the consumer is shutting down: the batch ends unacknowledged. */
export class ShutdownAbort extends Error {
  override readonly name = 'ShutdownAbort';
}

class CasExhausted extends Error {
  override readonly name = 'CasExhausted';
}

/**
 * What one message (or one sweep entry) does to its row, decided on the row as it stands. `O` is
 * what the outcome can be: a message's (counted in virtbus_consumer_messages_total), or a sweep's.
 */
export interface Decision<O extends string = MessageOutcome> {
  readonly outcome: O;
  /** The row after this message, when the message changes it. */
  readonly next?: InstanceRow;
  /** After the commit: logs, metrics, notifications, the command; a promise while publishing. */
  readonly effects?: () => Promise<void> | undefined;
  /** The message is refused (the caller dead-letters it with this reason); it changes nothing. */
  readonly reject?: Error;
}

/** One decision to take on one row, within a store round. */
export interface Task<O extends string = MessageOutcome> {
  readonly uuid: string;
  /** The message's trace: its effects' publishes carry it (src/tracing/consumer.ts). */
  readonly trace?: MessageTrace;
  decide(row: InstanceRow | undefined): Decision<O>;
}

export type TaskResult<O extends string = MessageOutcome> =
  | { readonly ok: true; readonly decision: Decision<O>; readonly published: Promise<void> | undefined }
  | { readonly ok: false; readonly error: Error };

/**
 * Lost compare-and-swap races are retried, after a short randomised backoff that grows to
 * CAS_BACKOFF_MAX_MS (so racing consumers or a busy operator stop colliding), for as long as
 * CAS_BUDGET_MS; only a row that keeps changing for that long fails its messages (dead-lettered).
 */
const CAS_BACKOFF_MAX_MS = 20;
const CAS_BUDGET_MS = 30_000;

export function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

/** One promise for what several decisions published (undefined when none published anything). */
export function joinPublished(promises: ReadonlyArray<Promise<void> | undefined>): Promise<void> | undefined {
  const pending = promises.filter((promise): promise is Promise<void> => promise !== undefined);
  if (pending.length === 0) return undefined;
  if (pending.length === 1) return pending[0];
  return Promise.all(pending).then(() => undefined);
}

/**
 * Store rounds until every task is decided on a row its write did not lose: each round reads the
 * rows of the pending tasks, decides their tasks in order (chaining the tasks of one row), writes
 * each changed row once, then — committed — runs the effects of the rows it wrote and of the
 * decisions that wrote nothing. Rows that lost their compare-and-swap go round again. A round that
 * fails on a database that answers is split, task by task, so only the culprit fails.
 */
export async function runRounds<O extends string>(
  store: InstanceStore,
  metrics: Pick<ConsumerMetrics, 'casRetries'>,
  tasks: readonly Task<O>[],
  run: StoreRunner,
): Promise<TaskResult<O>[]> {
  const results: TaskResult<O>[] = new Array<TaskResult<O>>(tasks.length);
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
      const uuid = (tasks[index] as Task<O>).uuid;
      const list = byUuid.get(uuid);
      if (list) list.push(index);
      else byUuid.set(uuid, [index]);
    }
    const decisions = new Map<number, Decision<O>>();
    let lost: ReadonlySet<string>;
    try {
      lost = await run(() =>
        store.apply([...byUuid.keys()], (rows) => {
          decisions.clear();
          const writes: RowWrite[] = [];
          for (const [uuid, indexes] of byUuid) {
            const original = rows.get(uuid);
            let current = original;
            for (const index of indexes) {
              const decision = (tasks[index] as Task<O>).decide(current);
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
        const [single] = await runRounds(store, metrics, [tasks[index] as Task<O>], run);
        results[index] = single as TaskResult<O>;
      }
      return results;
    }
    const retry: number[] = [];
    for (const index of pending) {
      if (lost.has((tasks[index] as Task<O>).uuid)) {
        retry.push(index);
        continue;
      }
      const decision = decisions.get(index) as Decision<O>;
      results[index] = decision.reject
        ? { ok: false, error: decision.reject }
        : {
            ok: true,
            decision,
            published: effectsWithTrace((tasks[index] as Task<O>).trace, decision.effects),
          };
    }
    if (lost.size > 0) metrics.casRetries.inc(lost.size);
    pending = retry;
  }
  for (const index of pending) {
    const uuid = (tasks[index] as Task<O>).uuid;
    results[index] = {
      ok: false,
      error: new CasExhausted(
        `instance ${uuid}: lost ${attempt - 1} compare-and-swap races in a row over ${CAS_BUDGET_MS} ms`,
      ),
    };
  }
  return results;
}

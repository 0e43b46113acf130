/**
 * The consumer's view of its instance database: starting (not yet migrated), up, or in an outage
 * (being probed with backoff) — one state, so "is the database usable" is one question. Every store
 * call of the message path goes through `run`, which tells a database that is down (wait for it,
 * pausing consumption) from a message that fails on a database that answers (the message's own
 * error: thrown, and the caller dead-letters it). Nothing is nacked while the database is down, so an
 * outage never counts against a quorum queue's delivery limit.
 */
import type { InstanceStore } from '../store/types';
import { StoreUnavailableError } from '../store/types';
import { Backoff, cancellableDelay } from '../util/backoff';
import type { Logger } from '../util/log';
import type { ConsumerMetrics } from './metrics';
import { ShutdownAbort, type StoreRunner } from './rounds';

export type DatabaseState =
  | { readonly name: 'starting' }
  | { readonly name: 'up' }
  /** Lost; `back` resolves when a ping answers again (rejects with ShutdownAbort on shutdown). */
  | { readonly name: 'outage'; readonly back: Promise<void> };

export interface DatabaseOptions {
  readonly store: InstanceStore;
  readonly retry: { readonly retryInitialDelayMs: number; readonly retryMaxDelayMs: number };
  readonly metrics: Pick<ConsumerMetrics, 'dbUp' | 'dbErrors'>;
  readonly logger: Logger;
  /** Aborted when the consumer shuts down: waits end with ShutdownAbort. */
  readonly signal: AbortSignal;
  /** After the schema migration, before the database counts as up (the hosts view's maintenance switches). */
  readonly afterMigrate?: () => Promise<void>;
  /** The database became usable (after start-up or an outage): consumption may resume. */
  readonly onUp: () => void;
  /** An outage began: consumption pauses. */
  readonly onOutage: () => void;
}

export class Database {
  readonly #options: DatabaseOptions;
  #state: DatabaseState = { name: 'starting' };
  /** Runs one store call, waiting out outages (the handler's StoreRunner). */
  readonly run: StoreRunner = (call) => this.#run(call);

  constructor(options: DatabaseOptions) {
    this.#options = options;
  }

  get state(): DatabaseState {
    return this.#state;
  }

  get up(): boolean {
    return this.#state.name === 'up';
  }

  /** Migrates the schema, retrying with backoff until the database answers (or shutdown). */
  async start(): Promise<void> {
    const { store, retry, logger, signal } = this.#options;
    const backoff = new Backoff(retry.retryInitialDelayMs, retry.retryMaxDelayMs);
    while (!signal.aborted) {
      try {
        await store.migrate();
        await this.#options.afterMigrate?.();
        this.#to({ name: 'up' });
        logger.info({ store: store.kind }, 'instance database ready');
        this.#options.onUp();
        return;
      } catch (error) {
        const delay = backoff.next();
        logger.error({ err: error, retryInMs: delay }, 'instance database unavailable at start-up');
        await cancellableDelay(delay, signal);
      }
    }
  }

  /**
   * Runs `call` until it succeeds. A StoreUnavailableError, or any error while the database does not
   * answer a ping, waits for the database; an error on a healthy database is the message's own and
   * is thrown. A failed call wrote nothing, so it is decided again from scratch.
   */
  async #run<T>(call: () => Promise<T>): Promise<T> {
    const { store, metrics, signal } = this.#options;
    for (;;) {
      if (this.#state.name === 'outage') await this.#state.back;
      if (signal.aborted) throw new ShutdownAbort('shutting down');
      try {
        return await call();
      } catch (error) {
        if (signal.aborted) throw new ShutdownAbort('shutting down');
        if (!(error instanceof StoreUnavailableError)) {
          const healthy = await store.ping().then(
            () => true,
            () => false,
          );
          if (healthy) throw error;
        }
        metrics.dbErrors.inc();
        await this.#lost(error);
      }
    }
  }

  /** up → outage (once per outage: later failures wait for the same probe). */
  #lost(error: unknown): Promise<void> {
    if (this.#state.name === 'outage') return this.#state.back;
    this.#options.logger.error({ err: error }, 'instance database unavailable: pausing consumption');
    const back = this.#probe();
    this.#to({ name: 'outage', back });
    this.#options.onOutage();
    // outage → up happens in #probe; a shutdown ends the outage with ShutdownAbort for its waiters.
    back.catch(() => undefined);
    return back;
  }

  async #probe(): Promise<void> {
    const { store, retry, logger, signal } = this.#options;
    const backoff = new Backoff(retry.retryInitialDelayMs, retry.retryMaxDelayMs);
    for (;;) {
      await cancellableDelay(backoff.next(), signal);
      if (signal.aborted) throw new ShutdownAbort('shutting down');
      try {
        await store.ping();
        break;
      } catch (error) {
        logger.debug({ err: error }, 'instance database still unavailable');
      }
    }
    this.#to({ name: 'up' });
    logger.info('instance database back: resuming consumption');
    this.#options.onUp();
  }

  #to(next: DatabaseState): void {
    this.#state = next;
    this.#options.metrics.dbUp.set(next.name === 'up' ? 1 : 0);
  }
}

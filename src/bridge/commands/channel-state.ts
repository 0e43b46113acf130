/**
 * The command subscription's two channels as one state with named transitions: the consumer
 * channel (idle → opening → consuming, waiting to retry after a refusal, a cancel or a close, and
 * stopped for good) and the result channel (none → opening → open, waiting to reopen). Which setup is
 * current, which channel a close or a cancel belongs to and whether anything may still open are read
 * from this one value instead of separate fields, so a stale setup or a late event is a transition
 * the code can see; one that is not allowed in the current state throws IllegalTransitionError.
 *
 *   consumer: idle ──consumerOpening──▶ opening ──consumerStarted──▶ consuming ──consumerLost──▶ idle
 *             opening ──consumerAbandon──▶ idle;  idle ──consumerWait──▶ waiting ──consumerRetryDue──▶ idle
 *             waiting|opening ──consumerOpening──▶ opening;  any ──stop──▶ stopped (final)
 *   results:  none ──resultsOpening──▶ opening ──resultsOpened──▶ open ──resultsLost──▶ none
 *             opening ──resultsAbandon──▶ none;  none ──resultsWait──▶ waiting ──resultsReopenDue──▶ none
 *   both:     connectionDown: consumer (unless stopped) → idle, results → none; pending timers cancelled
 *
 * Generic over the connection model and channel types so the transitions are tested without a broker.
 */
import { IllegalTransitionError } from '../publisher-state';

export interface ConsumerOpening<M> {
  readonly kind: 'opening';
  readonly model: M;
}
export interface Consuming<M, C> {
  readonly kind: 'consuming';
  readonly model: M;
  readonly channel: C;
  readonly tag: string;
}
export type ConsumerState<M, C> =
  | { readonly kind: 'idle' }
  | ConsumerOpening<M>
  | Consuming<M, C>
  | { readonly kind: 'waiting'; readonly model: M; readonly timer: NodeJS.Timeout }
  | { readonly kind: 'stopped' };

export interface ResultsOpening<M> {
  readonly kind: 'opening';
  readonly model: M;
}
export interface ResultsOpen<M, R> {
  readonly kind: 'open';
  readonly model: M;
  readonly channel: R;
  /** Message ids the broker returned on this channel (mandatory, unroutable). */
  readonly returned: Set<string>;
}
export type ResultsState<M, R> =
  | { readonly kind: 'none' }
  | ResultsOpening<M>
  | ResultsOpen<M, R>
  | { readonly kind: 'waiting'; readonly model: M; readonly timer: NodeJS.Timeout };

export interface SubscriptionState<M, C, R> {
  readonly consumer: ConsumerState<M, C>;
  readonly results: ResultsState<M, R>;
}

type ConsumerKind = ConsumerState<unknown, unknown>['kind'];
type ResultsKind = ResultsState<unknown, unknown>['kind'];

const IDLE = { kind: 'idle' } as const;
const NONE = { kind: 'none' } as const;
const STOPPED = { kind: 'stopped' } as const;

export class SubscriptionLifecycle<M, C, R> {
  #consumer: ConsumerState<M, C> = IDLE;
  #results: ResultsState<M, R> = NONE;

  get state(): SubscriptionState<M, C, R> {
    return { consumer: this.#consumer, results: this.#results };
  }

  get consumer(): ConsumerState<M, C> {
    return this.#consumer;
  }

  get results(): ResultsState<M, R> {
    return this.#results;
  }

  get stopped(): boolean {
    return this.#consumer.kind === 'stopped';
  }

  /** The open result channel, if any. */
  get resultsOpen(): ResultsOpen<M, R> | undefined {
    return this.#results.kind === 'open' ? this.#results : undefined;
  }

  /** Whether `state` (a setup, or a live channel) is still the consumer's current state. */
  isConsumer(state: ConsumerState<M, C>): boolean {
    return this.#consumer === state;
  }

  /** Whether `state` (a setup, or a live channel) is still the result channel's current state. */
  isResults(state: ResultsState<M, R>): boolean {
    return this.#results === state;
  }

  // ---- consumer -----------------------------------------------------------------------------------

  /** Starts setting up the consumer channel on `model` (a pending retry is cancelled; an older setup is superseded). */
  consumerOpening(model: M): ConsumerOpening<M> {
    const from = this.#expectConsumer('consumerOpening', 'idle', 'waiting', 'opening');
    if (from.kind === 'waiting') clearTimeout(from.timer);
    const attempt: ConsumerOpening<M> = { kind: 'opening', model };
    this.#consumer = attempt;
    return attempt;
  }

  /** The setup `attempt` consumes on `channel` as `tag`. */
  consumerStarted(attempt: ConsumerOpening<M>, channel: C, tag: string): Consuming<M, C> {
    if (this.#consumer !== attempt)
      this.#illegal('consumerStarted (by a setup that is no longer current)', this.#consumer.kind);
    const consuming: Consuming<M, C> = { kind: 'consuming', model: attempt.model, channel, tag };
    this.#consumer = consuming;
    return consuming;
  }

  /** The setup `attempt` ended without a consumer (refused, failed, or its connection is gone). */
  consumerAbandon(attempt: ConsumerOpening<M>): void {
    if (this.#consumer !== attempt)
      this.#illegal('consumerAbandon (of a setup that is no longer current)', this.#consumer.kind);
    this.#consumer = IDLE;
  }

  /** The consumer on `consuming.channel` is gone (its channel closed, or the broker cancelled it). */
  consumerLost(consuming: Consuming<M, C>): void {
    if (this.#consumer !== consuming)
      this.#illegal('consumerLost (of a consumer that is not current)', this.#consumer.kind);
    this.#consumer = IDLE;
  }

  /** No consumer now: open one on `model` when `timer` fires (its callback calls consumerRetryDue). */
  consumerWait(model: M, timer: NodeJS.Timeout): void {
    this.#expectConsumer('consumerWait', 'idle');
    this.#consumer = { kind: 'waiting', model, timer };
  }

  /** The retry timer fired: idle again (the caller then opens, if the connection is still `model`). */
  consumerRetryDue(): void {
    this.#expectConsumer('consumerRetryDue', 'waiting');
    this.#consumer = IDLE;
  }

  /** Final for the consumer: nothing opens again. Returns the state it left (a consumer to cancel). */
  stop(): ConsumerState<M, C> {
    const from = this.#expectConsumer('stop', 'idle', 'opening', 'consuming', 'waiting');
    if (from.kind === 'waiting') clearTimeout(from.timer);
    this.#consumer = STOPPED;
    // The result channel stays usable (running commands still answer) but is not reopened.
    if (this.#results.kind === 'waiting') {
      clearTimeout(this.#results.timer);
      this.#results = NONE;
    }
    return from;
  }

  // ---- results ------------------------------------------------------------------------------------

  /** Starts setting up the result channel on `model`. Not after stop(). */
  resultsOpening(model: M): ResultsOpening<M> {
    if (this.stopped) this.#illegal('resultsOpening', 'stopped');
    const from = this.#expectResults('resultsOpening', 'none', 'waiting', 'opening');
    if (from.kind === 'waiting') clearTimeout(from.timer);
    const attempt: ResultsOpening<M> = { kind: 'opening', model };
    this.#results = attempt;
    return attempt;
  }

  resultsOpened(attempt: ResultsOpening<M>, channel: R, returned: Set<string>): ResultsOpen<M, R> {
    if (this.#results !== attempt)
      this.#illegal('resultsOpened (by a setup that is no longer current)', this.#results.kind);
    const open: ResultsOpen<M, R> = { kind: 'open', model: attempt.model, channel, returned };
    this.#results = open;
    return open;
  }

  resultsAbandon(attempt: ResultsOpening<M>): void {
    if (this.#results !== attempt)
      this.#illegal('resultsAbandon (of a setup that is no longer current)', this.#results.kind);
    this.#results = NONE;
  }

  resultsLost(open: ResultsOpen<M, R>): void {
    if (this.#results !== open)
      this.#illegal('resultsLost (of a channel that is not current)', this.#results.kind);
    this.#results = NONE;
  }

  /** No result channel now: reopen on `model` when `timer` fires. Not after stop(). */
  resultsWait(model: M, timer: NodeJS.Timeout): void {
    if (this.stopped) this.#illegal('resultsWait', 'stopped');
    this.#expectResults('resultsWait', 'none');
    this.#results = { kind: 'waiting', model, timer };
  }

  resultsReopenDue(): void {
    this.#expectResults('resultsReopenDue', 'waiting');
    this.#results = NONE;
  }

  // ---- both ---------------------------------------------------------------------------------------

  /** The connection went down: both channels are gone, pending reopens cancelled. A stopped consumer stays stopped. */
  connectionDown(): void {
    if (this.#consumer.kind === 'waiting') clearTimeout(this.#consumer.timer);
    if (this.#consumer.kind !== 'stopped') this.#consumer = IDLE;
    if (this.#results.kind === 'waiting') clearTimeout(this.#results.timer);
    this.#results = NONE;
  }

  #expectConsumer(transition: string, ...allowed: ConsumerKind[]): ConsumerState<M, C> {
    if (!allowed.includes(this.#consumer.kind)) this.#illegal(transition, this.#consumer.kind);
    return this.#consumer;
  }

  #expectResults(transition: string, ...allowed: ResultsKind[]): ResultsState<M, R> {
    if (!allowed.includes(this.#results.kind)) this.#illegal(transition, `results ${this.#results.kind}`);
    return this.#results;
  }

  #illegal(transition: string, from: string): never {
    throw new IllegalTransitionError('command subscription', transition, from);
  }
}

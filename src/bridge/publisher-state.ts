/**
 * The publisher's channel life as one state with named transitions (as amqplib's own channel keeps
 * `toClosing`/`toClosed`): which channel is live, what was written to it, and what happens next are
 * one value, so a confirm from a channel that is gone, a setup finishing after a newer one began or
 * a reopen racing a close is a transition the code can see — and one that is not allowed in the
 * current state throws IllegalTransitionError instead of quietly leaving two flags disagreeing.
 *
 *   idle ──opening──▶ opening ──opened──▶ open ──channelLost──▶ idle
 *   opening ──abandon──▶ idle             (the setup failed, or its connection is gone)
 *   opening ──opening──▶ opening          (a newer connection supersedes the setup)
 *   idle ──waitToReopen──▶ reopenWait ──reopenDue──▶ idle;  reopenWait ──opening──▶ opening
 *   any but closed ──connectionDown──▶ idle;  any but closed ──close──▶ closed (final)
 *
 * Generic over the connection model and channel types so the transitions are tested without a broker.
 */

/** The channel being written to and what the publisher wrote on it. */
export interface OpenChannel<C> {
  readonly kind: 'open';
  readonly channel: C;
  /** Highest outbox id written to this channel. */
  cursor: number;
  /** Publishes written and not yet confirmed or nacked. */
  inFlight: number;
  /** channel.publish returned false: wait for 'drain'. */
  waitingForDrain: boolean;
  /** Confirms in a row on this channel (ends the nack backoff). */
  confirmStreak: number;
}

/** A channel being created and its topology prepared on `model`; the object itself identifies the attempt. */
export interface Opening<M> {
  readonly kind: 'opening';
  readonly model: M;
}

export type PublisherState<M, C> =
  | { readonly kind: 'idle' }
  | Opening<M>
  | { readonly kind: 'reopenWait'; readonly timer: NodeJS.Timeout }
  | OpenChannel<C>
  | { readonly kind: 'closed' };

export type PublisherStateKind = PublisherState<unknown, unknown>['kind'];

export class IllegalTransitionError extends Error {
  constructor(what: string, transition: string, from: string) {
    super(`${what}: ${transition} is not allowed in state ${from}`);
    this.name = 'IllegalTransitionError';
  }
}

const IDLE = { kind: 'idle' } as const;
const CLOSED = { kind: 'closed' } as const;

export class PublisherLifecycle<M, C> {
  #state: PublisherState<M, C> = IDLE;

  get state(): PublisherState<M, C> {
    return this.#state;
  }

  get kind(): PublisherStateKind {
    return this.#state.kind;
  }

  /** The open channel's state, if a channel is open. */
  get open(): OpenChannel<C> | undefined {
    return this.#state.kind === 'open' ? this.#state : undefined;
  }

  /** Whether `attempt` is still the setup in progress (a stale one must discard its channel). */
  isOpening(attempt: Opening<M>): boolean {
    return this.#state === attempt;
  }

  /** Whether `open` is still the live channel (confirms and events of an older one are ignored). */
  isCurrent(open: OpenChannel<C>): boolean {
    return this.#state === open;
  }

  /**
   * Starts setting up a channel on `model`: from idle, from reopenWait (its timer is cancelled), or
   * from opening (a newer connection supersedes the older setup, which is discarded when it ends).
   */
  opening(model: M): Opening<M> {
    const from = this.#expect('opening', 'idle', 'reopenWait', 'opening');
    if (from.kind === 'reopenWait') clearTimeout(from.timer);
    const attempt: Opening<M> = { kind: 'opening', model };
    this.#state = attempt;
    return attempt;
  }

  /** The setup `attempt` produced `channel`: it is the live channel, republishing from the start. */
  opened(attempt: Opening<M>, channel: C): OpenChannel<C> {
    if (this.#state !== attempt) this.#illegal('opened (by a setup that is no longer current)');
    const open: OpenChannel<C> = {
      kind: 'open',
      channel,
      cursor: 0,
      inFlight: 0,
      waitingForDrain: false,
      confirmStreak: 0,
    };
    this.#state = open;
    return open;
  }

  /** The open channel is gone (closed, nacked, connection lost): back to idle; returns what it held. */
  channelLost(): OpenChannel<C> {
    const from = this.#expect('channelLost', 'open');
    this.#state = IDLE;
    return from as OpenChannel<C>;
  }

  /** A setup ended without a channel (it failed, or its connection is gone): back to idle. */
  abandon(attempt: Opening<M>): void {
    if (this.#state !== attempt) this.#illegal('abandon (of a setup that is no longer current)');
    this.#state = IDLE;
  }

  /** The connection went down: whatever was open or opening is gone; a pending reopen is cancelled. Returns the lost channel. */
  connectionDown(): OpenChannel<C> | undefined {
    const from = this.#expect('connectionDown', 'idle', 'opening', 'reopenWait', 'open');
    if (from.kind === 'reopenWait') clearTimeout(from.timer);
    this.#state = IDLE;
    return from.kind === 'open' ? from : undefined;
  }

  /** No channel now: reopen when `timer` fires (its callback calls reopenDue). */
  waitToReopen(timer: NodeJS.Timeout): void {
    this.#expect('waitToReopen', 'idle');
    this.#state = { kind: 'reopenWait', timer };
  }

  /** The reopen timer fired: idle again (the caller then opens, if there is a connection). */
  reopenDue(): void {
    this.#expect('reopenDue', 'reopenWait');
    this.#state = IDLE;
  }

  /** Final. Returns the state it left (an open channel to close, a timer already cleared). */
  close(): PublisherState<M, C> {
    const from = this.#expect('close', 'idle', 'opening', 'reopenWait', 'open');
    if (from.kind === 'reopenWait') clearTimeout(from.timer);
    this.#state = CLOSED;
    return from;
  }

  #expect(transition: string, ...allowed: PublisherStateKind[]): PublisherState<M, C> {
    if (!allowed.includes(this.#state.kind)) this.#illegal(transition);
    return this.#state;
  }

  #illegal(transition: string): never {
    throw new IllegalTransitionError('publisher', transition, this.#state.kind);
  }
}

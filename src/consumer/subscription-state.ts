/**
 * The consumer subscription's life as one state with named transitions, so that every race between
 * the broker (channels come and go), the database (an outage pauses consumption) and shutdown is a
 * transition you can see, not a combination of flags. Pure: no I/O, no timers; subscription.ts
 * drives it and does the broker calls each transition stands for, and the unit tests drive it
 * directly. As amqplib's channel does (toClosing/toClosed, and "Channel closed" for a call on a
 * closed channel), a transition called in a state it does not leave throws: such a call is a bug.
 *
 *   detached ──attach──▶ idle ──toSubscribing──▶ subscribing ──toConsuming──▶ consuming
 *                         ▲ ▲                        │ subscribeFailed            │ toCancelling
 *                         │ └────────────────────────┘                            ▼
 *                         └──────────────────── toIdle ───────────────────── cancelling
 *   any ──detach──▶ detached (the channels closed)      any ──toStopped──▶ stopped (terminal;
 *                                                       attach and detach only swap its channels)
 *
 * Whether the subscription should consume (the database answers, the consumer is not stopping) is
 * not stored here: the driver asks `idle` to subscribe and `consuming` to cancel when it should, and
 * asks again when a step (subscribing, cancelling) ends — the step's end is where a change that
 * happened meanwhile is seen.
 */

/** The part of the channels this state knows: only their identity. */
export type StateName = 'detached' | 'idle' | 'subscribing' | 'consuming' | 'cancelling' | 'stopped';

export type SubscriptionState<C> =
  /** No broker channels (not yet connected, or they closed). */
  | { readonly name: 'detached' }
  /** Channels open, no consumers. */
  | { readonly name: 'idle'; readonly channels: C }
  /** basic.consume calls in flight on these channels. */
  | { readonly name: 'subscribing'; readonly channels: C }
  /** Consumers registered under these tags. */
  | { readonly name: 'consuming'; readonly channels: C; readonly tags: readonly string[] }
  /** basic.cancel calls in flight (the messages in hand stay ours, unacknowledged). */
  | { readonly name: 'cancelling'; readonly channels: C }
  /** Terminal: the consumer is stopping; the channels (if any) stay for acks and dead-letters. */
  | { readonly name: 'stopped'; readonly channels: C | undefined };

export class IllegalTransition extends Error {
  override readonly name = 'IllegalTransition';
}

export class SubscriptionMachine<C> {
  #state: SubscriptionState<C> = { name: 'detached' };

  /** Called on every change of state, after it (the driver reports consuming on/off from here). */
  constructor(
    readonly changed: (from: SubscriptionState<C>, to: SubscriptionState<C>) => void = () => undefined,
  ) {}

  get state(): SubscriptionState<C> {
    return this.#state;
  }

  /** The channels in use (to publish, acknowledge, poll on), whatever the consumers are doing. */
  get channels(): C | undefined {
    return this.#state.name === 'detached' ? undefined : this.#state.channels;
  }

  get consuming(): boolean {
    return this.#state.name === 'consuming';
  }

  get stopped(): boolean {
    return this.#state.name === 'stopped';
  }

  /**
   * New channels are up. Any earlier channels are abandoned (they closed or are about to). Once
   * stopped, the new channels only carry the publishes and acks of the messages still in hand.
   */
  attach(channels: C): void {
    if (this.#state.name === 'stopped') this.#to({ name: 'stopped', channels });
    else this.#to({ name: 'idle', channels });
  }

  /**
   * These channels closed (or the connection went down). Returns false, changing nothing, when the
   * state has already moved on to other channels: a late close of older channels is not news.
   */
  detach(channels?: C): boolean {
    const state = this.#state;
    if (state.name === 'detached') return false;
    if (channels !== undefined && state.channels !== channels) return false;
    if (state.name === 'stopped') this.#to({ name: 'stopped', channels: undefined });
    else this.#to({ name: 'detached' });
    return true;
  }

  /** Starts subscribing on the idle channels; returns them. */
  toSubscribing(): C {
    const state = this.#expect('toSubscribing', 'idle');
    this.#to({ name: 'subscribing', channels: state.channels });
    return state.channels;
  }

  /**
   * The consume calls on `channels` returned these tags. True when the subscription took them
   * (it was still subscribing on those channels); false when it moved on meanwhile — channels
   * closed, newer channels, or stopping — and the caller must cancel the tags if the channels
   * are still open.
   */
  toConsuming(channels: C, tags: readonly string[]): boolean {
    const state = this.#state;
    if (state.name !== 'subscribing' || state.channels !== channels) {
      if (state.name === 'idle' || state.name === 'consuming' || state.name === 'cancelling')
        if (state.channels === channels) throw this.#illegal('toConsuming');
      return false;
    }
    this.#to({ name: 'consuming', channels, tags });
    return true;
  }

  /** The consume calls on `channels` failed (the driver resets the connection). */
  subscribeFailed(channels: C): void {
    const state = this.#state;
    if (state.name !== 'subscribing' || state.channels !== channels) return;
    this.#to({ name: 'idle', channels });
  }

  /** Starts cancelling the consumers; returns the channels and the tags to cancel. */
  toCancelling(): { readonly channels: C; readonly tags: readonly string[] } {
    const state = this.#expect('toCancelling', 'consuming');
    this.#to({ name: 'cancelling', channels: state.channels });
    return { channels: state.channels, tags: state.tags };
  }

  /** The cancel calls on `channels` ended; no-op when the state moved on meanwhile. */
  toIdle(channels: C): void {
    const state = this.#state;
    if (state.name === 'cancelling' && state.channels === channels) this.#to({ name: 'idle', channels });
    else if (state.name !== 'detached' && state.name !== 'stopped' && state.channels === channels)
      throw this.#illegal('toIdle');
  }

  /**
   * The consumer is stopping. Returns the consumers to cancel (when it was consuming); from here
   * on it never subscribes again. Calling it twice is a bug.
   */
  toStopped(): { readonly channels: C; readonly tags: readonly string[] } | undefined {
    const state = this.#expect('toStopped', 'detached', 'idle', 'subscribing', 'consuming', 'cancelling');
    this.#to({ name: 'stopped', channels: state.name === 'detached' ? undefined : state.channels });
    return state.name === 'consuming' ? { channels: state.channels, tags: state.tags } : undefined;
  }

  #expect<N extends StateName>(transition: string, ...from: N[]): Extract<SubscriptionState<C>, { name: N }> {
    const state = this.#state;
    if (!(from as StateName[]).includes(state.name)) throw this.#illegal(transition);
    return state as Extract<SubscriptionState<C>, { name: N }>;
  }

  #illegal(transition: string): IllegalTransition {
    return new IllegalTransition(`subscription: ${transition} is illegal in state ${this.#state.name}`);
  }

  #to(next: SubscriptionState<C>): void {
    const from = this.#state;
    this.#state = next;
    this.changed(from, next);
  }
}

/**
 * Nova's delayed STOPPED (Host._event_emit_delayed in nova/virt/libvirt/host.py): a STOPPED event is held
 * for `delayMs` per domain; any later event for that domain cancels it, so a reboot's STOPPED →
 * STARTED pair publishes no `stopped`; a second STOPPED restarts the window. Only STOPPED is ever
 * delayed (delaying STARTED lost events: Nova bug #1433049).
 *
 * Events Nova never sees (undefined, defined, rebooted…) do not cancel a held STOPPED, but they must
 * not overtake it on the wire either: they wait behind it as its followers, and go out right after
 * it when it is released, or right away (before the cancelling event) when it is cancelled.
 */
export interface TimerApi {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const realTimers: TimerApi = {
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

interface Pending<T> {
  readonly item: T;
  readonly heldAt: number;
  readonly handle: unknown;
  readonly followers: T[];
}

export class DelayedStops<T> {
  readonly #pending = new Map<string, Pending<T>>();

  constructor(
    private readonly delayMs: number,
    /** Called when a held STOPPED survives its delay, with how long it was held and its followers. */
    private readonly release: (item: T, heldMs: number, followers: readonly T[]) => void,
    private readonly timers: TimerApi = realTimers,
    private readonly now: () => number = Date.now,
  ) {}

  get size(): number {
    return this.#pending.size;
  }

  /** The domains whose STOPPED is held right now (a snapshot must not describe them: dispatcher). */
  heldUuids(): IterableIterator<string> {
    return this.#pending.keys();
  }

  /** Cancels the pending STOPPED of this domain, if any (hold() does, to restart the window). */
  cancel(uuid: string): boolean {
    return this.cancelWithFollowers(uuid) !== undefined;
  }

  /**
   * Cancels the pending STOPPED of this domain; returns its followers (to publish now), if any.
   * Called for the events Nova itself sees (only those reach its _event_emit_delayed); other events
   * follow() a held STOPPED instead.
   */
  cancelWithFollowers(uuid: string): readonly T[] | undefined {
    const pending = this.#pending.get(uuid);
    if (!pending) return undefined;
    this.timers.clearTimeout(pending.handle);
    this.#pending.delete(uuid);
    return pending.followers;
  }

  /** Queues an event behind this domain's held STOPPED; false when none is held. */
  follow(uuid: string, item: T): boolean {
    const pending = this.#pending.get(uuid);
    if (!pending) return false;
    pending.followers.push(item);
    return true;
  }

  /** Holds a STOPPED for this domain (replacing, i.e. restarting, any pending one). */
  hold(uuid: string, item: T): void {
    this.cancel(uuid);
    const heldAt = this.now();
    const handle = this.timers.setTimeout(() => {
      const current = this.#pending.get(uuid);
      if (!current || current.handle !== handle) return; // cancelled or replaced meanwhile
      this.#pending.delete(uuid);
      this.release(item, this.now() - heldAt, current.followers);
    }, this.delayMs);
    // A held stop must not keep a stopping process alive; shutdown decides what to do with it.
    (handle as { unref?: () => void }).unref?.();
    this.#pending.set(uuid, { item, heldAt, handle, followers: [] });
  }

  /** Shutdown: removes every pending STOPPED and returns them in the order they were held. */
  takeAll(): Array<{ item: T; heldMs: number; followers: readonly T[] }> {
    const now = this.now();
    const all = [...this.#pending.values()].map((pending) => {
      this.timers.clearTimeout(pending.handle);
      return { item: pending.item, heldMs: now - pending.heldAt, followers: pending.followers };
    });
    this.#pending.clear();
    return all;
  }
}

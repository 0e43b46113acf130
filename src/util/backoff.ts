/**
 * Exponential backoff with equal jitter for reconnect loops: the n-th delay is uniform in
 * [delay/2, delay] where delay = min(max, initial * 2^n) — half of it fixed, half random. Jitter
 * keeps a fleet of bridges from reconnecting to a restarted broker or libvirtd in lock-step; the
 * fixed half (unlike full jitter, uniform in [0, delay]) keeps every retry at least delay/2 away,
 * so a peer that keeps failing is never retried almost at once.
 */
export class Backoff {
  #attempt = 0;
  constructor(
    private readonly initialMs: number,
    private readonly maxMs: number,
    private readonly random: () => number = Math.random,
  ) {}

  next(): number {
    const ceiling = Math.min(this.maxMs, this.initialMs * 2 ** Math.min(this.#attempt, 30));
    this.#attempt += 1;
    return Math.round(ceiling / 2 + (ceiling / 2) * this.random());
  }

  get attempts(): number {
    return this.#attempt;
  }

  reset(): void {
    this.#attempt = 0;
  }
}

/** A sleep that can be cut short, so shutdown never waits out a reconnect delay. */
export function cancellableDelay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

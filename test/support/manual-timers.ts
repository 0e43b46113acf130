/**
 * A manual clock for DelayedStops' TimerApi: timers fire only when a test advances time, so tests of
 * the delayed STOPPED (and of the dispatcher around it) decide exactly when a held stop is released.
 */
import type { TimerApi } from '../../src/bridge/delayed-stops';

export class ManualTimers implements TimerApi {
  now = 0;
  #timers = new Map<number, { at: number; callback: () => void }>();
  #next = 1;
  setTimeout(callback: () => void, ms: number): unknown {
    const id = this.#next++;
    this.#timers.set(id, { at: this.now + ms, callback });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.#timers.delete(handle as number);
  }
  advance(ms: number): void {
    this.now += ms;
    for (const [id, timer] of [...this.#timers].sort((a, b) => a[1].at - b[1].at)) {
      if (timer.at <= this.now && this.#timers.has(id)) {
        this.#timers.delete(id);
        timer.callback();
      }
    }
  }
  get pending(): number {
    return this.#timers.size;
  }
}

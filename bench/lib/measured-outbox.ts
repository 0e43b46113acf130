/**
 * An Outbox decorator for the bridge benchmarks: counts appended and confirmed records, their body
 * bytes, and (optionally) each record's occurred_at → broker-confirm latency, measured when the
 * publisher calls confirm() — the same instant the bridge's virtbus_event_to_confirm_seconds
 * histogram observes, but exact instead of bucketed. Wraps any Outbox (memory or journal).
 */
import type { Outbox, OutboxInput, OutboxRecord } from '../../src/bridge/outbox';
import { nowMicros } from '../../src/util/time';
import { Samples } from './stats';

export class MeasuredOutbox implements Outbox {
  appended = 0;
  confirmed = 0;
  bodyBytes = 0;
  /** occurred_at → confirm, milliseconds (only while `measureLatency`). */
  readonly latencies = new Samples();
  /** occurred_at → append() called (drained, translated, sampled, built), ms. */
  readonly toAppend = new Samples();
  /** occurred_at → append() resolved (accepted; durable for the journal), ms. */
  readonly toDurable = new Samples();
  measureLatency = false;
  #waiters: Array<{ count: number; resolve: () => void }> = [];

  constructor(readonly inner: Outbox) {}

  get depth(): number {
    return this.inner.depth;
  }

  get capacity(): number {
    return this.inner.capacity;
  }

  oldestMicros(): number | undefined {
    return this.inner.oldestMicros();
  }

  append(inputs: readonly OutboxInput[]): Promise<void> {
    this.appended += inputs.length;
    for (const input of inputs) this.bodyBytes += input.body.length;
    const appended = this.inner.append(inputs);
    if (!this.measureLatency) return appended;
    const now = nowMicros();
    for (const input of inputs) this.toAppend.push((now - input.occurredMicros) / 1000);
    return appended.then(() => {
      const done = nowMicros();
      for (const input of inputs) this.toDurable.push((done - input.occurredMicros) / 1000);
    });
  }

  readAfter(afterId: number, max: number): OutboxRecord[] {
    return this.inner.readAfter(afterId, max);
  }

  confirm(id: number): void {
    if (this.measureLatency) {
      const record = this.inner.readAfter(id - 1, 1)[0];
      if (record?.id === id) this.latencies.push((nowMicros() - record.occurredMicros) / 1000);
    }
    this.inner.confirm(id);
    this.confirmed += 1;
    if (this.#waiters.some((w) => w.count <= this.confirmed)) {
      const ready = this.#waiters.filter((w) => w.count <= this.confirmed);
      this.#waiters = this.#waiters.filter((w) => w.count > this.confirmed);
      for (const waiter of ready) waiter.resolve();
    }
  }

  /** Resolves when `count` confirms have been seen in total. */
  whenConfirmed(count: number): Promise<void> {
    if (this.confirmed >= count) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ count, resolve }));
  }

  onAppend(listener: () => void): void {
    this.inner.onAppend(listener);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

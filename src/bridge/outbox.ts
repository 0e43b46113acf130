/**
 * The outbox sits between the dispatcher and the publisher: every message is appended here before
 * it is published and leaves only when the broker confirms it, so a broker outage or a lost channel
 * never loses an accepted message; after a reconnect everything unconfirmed is published again, in
 * order (the consumer deduplicates). MemoryOutbox keeps records in memory, bounded; the durable
 * journal (src/bridge/journal-outbox.ts) implements the same interface on disk.
 */

export interface OutboxInput {
  readonly exchange: string;
  readonly routingKey: string;
  readonly messageId: string;
  /** AMQP `type` property, e.g. virtbus.lifecycle.v1. */
  readonly type: string;
  /** libvirt callback time of the event (µs since epoch), for the event→confirm histogram. */
  readonly occurredMicros: number;
  /** Metric label (a transition name). */
  readonly transition: string;
  readonly body: Buffer;
}

export interface OutboxRecord extends OutboxInput {
  /** Monotonic per outbox; publish order is id order. */
  readonly id: number;
}

export interface Outbox {
  /** Unconfirmed records. */
  readonly depth: number;
  /** Most held before append() waits for confirms: records (memory) or bytes (journal). */
  readonly capacity: number;
  /** Bytes on disk, for a durable outbox. */
  readonly bytes?: number;
  /** occurredMicros of the oldest unconfirmed record. */
  oldestMicros(): number | undefined;
  /** Appends in order; resolves once accepted (durably, for a journal). Waits while full. */
  append(inputs: readonly OutboxInput[]): Promise<void>;
  /** Unconfirmed records with id > afterId, in id order, at most max. */
  readAfter(afterId: number, max: number): OutboxRecord[];
  /** The broker confirmed this record. */
  confirm(id: number): void;
  /** Called after every append (the publisher pumps). */
  onAppend(listener: () => void): void;
  close(): Promise<void>;
}

export class MemoryOutbox implements Outbox {
  readonly #records: Array<OutboxRecord | undefined> = [];
  /** Index in #records of the first slot (confirmed slots before it are trimmed). */
  #head = 0;
  #nextId = 1;
  #depth = 0;
  readonly #appendListeners: Array<() => void> = [];
  #spaceWaiters: Array<() => void> = [];

  constructor(readonly capacity: number) {}

  get depth(): number {
    return this.#depth;
  }

  oldestMicros(): number | undefined {
    for (let i = this.#head; i < this.#records.length; i += 1) {
      const record = this.#records[i];
      if (record) return record.occurredMicros;
    }
    return undefined;
  }

  async append(inputs: readonly OutboxInput[]): Promise<void> {
    for (const input of inputs) {
      while (this.#depth >= this.capacity) {
        // Tell the publisher about what this batch added so far: it may be idle, and only its
        // confirms make room (a batch larger than the free space would otherwise wait forever).
        for (const listener of this.#appendListeners) listener();
        await new Promise<void>((resolve) => this.#spaceWaiters.push(resolve));
      }
      this.#records.push({ ...input, id: this.#nextId });
      this.#nextId += 1;
      this.#depth += 1;
    }
    for (const listener of this.#appendListeners) listener();
  }

  readAfter(afterId: number, max: number): OutboxRecord[] {
    const out: OutboxRecord[] = [];
    // ids are dense from the first record ever appended: index = id - firstId.
    const first = this.#records[this.#head];
    const firstId = first ? first.id : this.#nextId;
    let index = Math.max(this.#head, this.#head + (afterId + 1 - firstId));
    for (; index < this.#records.length && out.length < max; index += 1) {
      const record = this.#records[index];
      if (record) out.push(record);
    }
    return out;
  }

  confirm(id: number): void {
    const first = this.#records[this.#head];
    if (!first) return;
    const index = this.#head + (id - first.id);
    if (this.#records[index]?.id !== id) return; // already confirmed (a duplicate confirm after a republish)
    this.#records[index] = undefined;
    this.#depth -= 1;
    while (this.#head < this.#records.length && this.#records[this.#head] === undefined) this.#head += 1;
    if (this.#head > 4096 && this.#head * 2 > this.#records.length) {
      this.#records.splice(0, this.#head);
      this.#head = 0;
    }
    const waiters = this.#spaceWaiters;
    this.#spaceWaiters = [];
    for (const wake of waiters) wake();
  }

  onAppend(listener: () => void): void {
    this.#appendListeners.push(listener);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

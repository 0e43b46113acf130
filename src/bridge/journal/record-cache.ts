/**
 * The journal's memory cache of recently committed records. The publisher follows the journal's
 * tail, so nearly every readAfter() is served from here without touching disk; the cache holds the
 * newest records up to a byte limit and drops confirmed ones (they are never read again).
 * Ids are contiguous: the record at #head has id firstId, the last one the journal's committed id.
 */
import type { OutboxRecord } from '../outbox';

/** Dropped slots are compacted away once this many lead the array (and they are its larger half). */
const COMPACT_AFTER = 4096;

export class RecordCache {
  #records: Array<OutboxRecord | undefined> = [];
  #sizes: number[] = [];
  #head = 0;
  #firstId: number;
  #bytes = 0;

  /** @param nextId the id the next pushed record will have. */
  constructor(nextId: number) {
    this.#firstId = nextId;
  }

  /** Lowest id held; ids below it are read from disk. */
  get firstId(): number {
    return this.#firstId;
  }

  /** Adds the next committed record (its id is one above the last pushed). */
  push(record: OutboxRecord, size: number): void {
    this.#records.push(record);
    this.#sizes.push(size);
    this.#bytes += size;
  }

  /** The record with this id, if held (firstId ≤ id ≤ the last pushed). */
  get(id: number): OutboxRecord | undefined {
    return this.#records[this.#head + id - this.#firstId];
  }

  /** Drops the oldest records while over limitBytes, and every record with id ≤ watermark (confirmed). */
  trim(limitBytes: number, watermark: number): void {
    while (this.#head < this.#records.length && (this.#bytes > limitBytes || this.#firstId <= watermark)) {
      this.#records[this.#head] = undefined;
      this.#bytes -= this.#sizes[this.#head]!;
      this.#head += 1;
      this.#firstId += 1;
    }
    if (this.#head > COMPACT_AFTER && this.#head * 2 > this.#records.length) {
      this.#records.splice(0, this.#head);
      this.#sizes.splice(0, this.#head);
      this.#head = 0;
    }
  }

  /** Frees the memory (the journal is closed). */
  clear(): void {
    this.#records = [];
    this.#sizes = [];
  }
}

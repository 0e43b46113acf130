/**
 * Reading committed records back from the journal's segment files, for readAfter() calls that reach
 * below the memory cache (after a restart, or a backlog larger than cacheBytes) and for the age of
 * the oldest unconfirmed record.
 *
 * Reads are sequential in practice (the publisher follows the ids upwards), so one miss reads a
 * megabyte of the segment into a buffer and the following records are decoded from it; a hint
 * remembers where the last read stopped, and a sparse per-segment index (one offset every
 * INDEX_STRIDE records, src/bridge/journal/segment.ts) finds any other record after at most INDEX_STRIDE - 1 skipped frames.
 * Sealed segments keep an open descriptor only while recently read (at most MAX_OPEN_SEALED), so a
 * long backlog does not hold hundreds of files open.
 */
import * as fs from 'node:fs';
import type { OutboxRecord } from '../outbox';
import { decodeRecord, frameSizeAt, recordIdAt, recordMicrosAt } from './format';
import { closeQuietly } from './fs';
import { INDEX_STRIDE, type Segment } from './segment';

const READ_BUFFER_BYTES = 1024 * 1024;
/** Sealed segments are only read: at most this many keep an open descriptor (least recently read closed first). */
const MAX_OPEN_SEALED = 8;

export class SegmentReader {
  /** The journal's live segments in id order (the journal's own array: it adds and removes). */
  readonly #segments: readonly Segment[];
  /** Confirmed ids above the watermark (the journal's own set): skipped. */
  readonly #confirmed: ReadonlySet<number>;
  #diskReads = 0;

  #buffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);
  #bufferSegment: Segment | undefined;
  #bufferStart = 0;
  #bufferEnd = 0;
  /** Where the last disk read stopped: the record with id #hintId starts at #hintOffset of #hintSegment. */
  #hintSegment: Segment | undefined;
  #hintId = 0;
  #hintOffset = 0;
  /** Sealed segments with an open descriptor, least recently used first. */
  readonly #openSealed: Segment[] = [];

  constructor(segments: readonly Segment[], confirmed: ReadonlySet<number>) {
    this.#segments = segments;
    this.#confirmed = confirmed;
  }

  /** readSync calls made so far. */
  get diskReads(): number {
    return this.#diskReads;
  }

  /** Reads unconfirmed records id … stopId-1 from disk into out (up to max); returns the next id to look at. */
  read(id: number, stopId: number, max: number, out: OutboxRecord[]): number {
    let s = this.#segmentFor(id);
    if (s === -1) return stopId;
    const confirmed = this.#confirmed;
    while (s < this.#segments.length && out.length < max && id < stopId) {
      const segment = this.#segments[s]!;
      if (id < segment.firstId) id = segment.firstId;
      const end = Math.min(segment.firstId + segment.count, stopId);
      if (id >= end) {
        if (id >= segment.firstId + segment.count) {
          s += 1;
          continue;
        }
        break;
      }
      let { offset, at } = this.#locate(segment, id);
      while (at < end && out.length < max) {
        let index = this.#fill(segment, offset, 8);
        const size = frameSizeAt(this.#buffer, index);
        if (index + size > this.#bufferEnd - this.#bufferStart) index = this.#fill(segment, offset, size);
        if (at >= id && !(confirmed.size > 0 && confirmed.has(at))) {
          const found = recordIdAt(this.#buffer, index);
          if (found !== at) throw new Error(`outbox: ${segment.path} holds id ${found} where ${at} belongs`);
          out.push(decodeRecord(this.#buffer, index));
        }
        offset += size;
        at += 1;
      }
      this.#hintSegment = segment;
      this.#hintId = at;
      this.#hintOffset = offset;
      id = at;
      if (at >= segment.firstId + segment.count) s += 1;
    }
    return id;
  }

  /** The occurredMicros of record id, read from its frame header alone; undefined if not on disk. */
  micros(id: number): number | undefined {
    const s = this.#segmentFor(id);
    const segment = this.#segments[s];
    if (!segment || id < segment.firstId) return undefined;
    let { offset, at } = this.#locate(segment, id);
    for (; at <= id; at += 1) {
      const header = Buffer.allocUnsafe(32);
      if (fs.readSync(this.#fdOf(segment), header, 0, 32, offset) < 32) return undefined;
      if (at === id) return recordMicrosAt(header, 0);
      offset += frameSizeAt(header, 0);
    }
    return undefined;
  }

  /** A segment was just sealed: its descriptor now counts against MAX_OPEN_SEALED. */
  sealed(segment: Segment): void {
    this.#touchSealed(segment);
  }

  /** A segment is being deleted: forget it and close its descriptor. */
  forget(segment: Segment): void {
    if (this.#bufferSegment === segment) this.#bufferSegment = undefined;
    if (this.#hintSegment === segment) this.#hintSegment = undefined;
    const at = this.#openSealed.indexOf(segment);
    if (at >= 0) this.#openSealed.splice(at, 1);
    if (segment.fd >= 0) closeQuietly(segment.fd);
    segment.fd = -1;
  }

  /** The journal is closing: every segment's descriptor is closed. */
  closeAll(): void {
    for (const segment of this.#segments) if (segment.fd >= 0) closeQuietly(segment.fd);
    this.#openSealed.length = 0;
    this.#bufferSegment = undefined;
    this.#hintSegment = undefined;
  }

  /** The descriptor of a segment, opening a sealed one for reading if needed. */
  #fdOf(segment: Segment): number {
    if (segment.fd < 0) segment.fd = fs.openSync(segment.path, 'r');
    if (segment.sealed) this.#touchSealed(segment);
    return segment.fd;
  }

  /** Marks a sealed segment's descriptor as just used; closes the least recently used beyond the limit. */
  #touchSealed(segment: Segment): void {
    const open = this.#openSealed;
    if (open[open.length - 1] === segment) return;
    const at = open.indexOf(segment);
    if (at >= 0) open.splice(at, 1);
    open.push(segment);
    while (open.length > MAX_OPEN_SEALED) {
      const evicted = open.shift()!;
      if (evicted.fd >= 0) closeQuietly(evicted.fd);
      evicted.fd = -1;
    }
  }

  /** Index in the segments of the one holding id, or of the first one after it; -1 past the end. */
  #segmentFor(id: number): number {
    const segments = this.#segments;
    let low = 0;
    let high = segments.length - 1;
    let found = -1;
    while (low <= high) {
      const middle = (low + high) >> 1;
      if (segments[middle]!.firstId <= id) {
        found = middle;
        low = middle + 1;
      } else high = middle - 1;
    }
    if (found === -1) return segments.length > 0 ? 0 : -1;
    const segment = segments[found]!;
    if (id < segment.firstId + segment.count) return found;
    return found + 1 < segments.length ? found + 1 : -1;
  }

  /**
   * Makes bytes [offset, offset + want) of segment readable in #buffer and returns their index in
   * it. A miss reads as much of the segment as the buffer holds: sequential reads cost one readSync
   * per megabyte.
   */
  #fill(segment: Segment, offset: number, want: number): number {
    if (this.#bufferSegment === segment && offset >= this.#bufferStart && offset + want <= this.#bufferEnd) {
      return offset - this.#bufferStart;
    }
    if (this.#buffer.length < want) this.#buffer = Buffer.allocUnsafe(want);
    const length = Math.min(this.#buffer.length, segment.size - offset);
    let done = 0;
    while (done < length) {
      const n = fs.readSync(this.#fdOf(segment), this.#buffer, done, length - done, offset + done);
      if (n === 0) break;
      done += n;
    }
    this.#diskReads += 1;
    this.#bufferSegment = segment;
    this.#bufferStart = offset;
    this.#bufferEnd = offset + done;
    if (done < want) {
      throw new Error(
        `outbox: ${segment.path} is shorter than its committed size (${offset + done} < ${offset + want})`,
      );
    }
    return 0;
  }

  /** Offset of the record `id` in `segment` and the id actually found there (≤ id: scan on). */
  #locate(segment: Segment, id: number): { offset: number; at: number } {
    if (this.#hintSegment === segment && this.#hintId <= id && id - this.#hintId < INDEX_STRIDE) {
      return { offset: this.#hintOffset, at: this.#hintId };
    }
    const k = Math.floor((id - segment.firstId) / INDEX_STRIDE);
    return { offset: segment.index[k]!, at: segment.firstId + k * INDEX_STRIDE };
  }
}

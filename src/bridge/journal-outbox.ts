/**
 * The durable outbox: an append-only segment log on local disk with the MemoryOutbox semantics
 * (src/bridge/outbox.ts). Format and design: docs/outbox.md, src/bridge/journal/format.ts.
 *
 * - append() assigns ids, encodes the records and resolves only once they are written and
 *   fdatasync'ed. Appends that arrive while a write is in flight share the next write and the next
 *   fdatasync (group commit); fsyncIntervalMs spaces commits under load. Only committed records are
 *   visible to readAfter(), so nothing is published that a crash could take back.
 * - Confirmations live in memory (a watermark "every id ≤ N is confirmed" plus the few ids confirmed
 *   out of order) and are checkpointed to acks.log every checkpointIntervalMs without fsync; after a
 *   crash a few confirmed records may be published again (the consumer deduplicates), never fewer.
 * - Segments roll at segmentBytes; a sealed segment whose every record is confirmed is deleted.
 *   Disk use (live segments) is bounded by maxBytes: append() waits, like MemoryOutbox, until
 *   deletions make room. It never drops.
 * - Memory stays small: the newest cacheBytes of records are kept for the publisher's usual
 *   tail-following reads; older ones are read back sequentially from disk, located through a sparse
 *   per-segment index (one offset every INDEX_STRIDE records).
 * - open() takes the directory's lock, scans every segment verifying CRCs, truncates a torn tail,
 *   deletes segments that the last checkpoint shows fully confirmed and continues the ids.
 * - A failing write or fdatasync (ENOSPC, EIO) is retried with backoff, rewriting the whole uncommitted
 *   region; the affected appends stay pending meanwhile (the outbox reports `writeErrors`).
 */
import { promisify } from 'node:util';
import * as fs from 'node:fs';
import { join, resolve } from 'node:path';
import type { Logger } from '../util/log';
import type { Outbox, OutboxInput, OutboxRecord } from './outbox';
import {
  SEGMENT_HEADER_BYTES,
  checkRecordFrame,
  decodeRecord,
  decodeSegmentHeader,
  encodeCheckpoint,
  encodeRecord,
  encodeSegmentHeader,
  frameSizeAt,
  idRanges,
  lastCheckpoint,
  parseSegmentName,
  recordFrameBytes,
  recordIdAt,
  recordMicrosAt,
  segmentName,
} from './journal/format';
import { acquireLock } from './journal/lock';

export { JournalLockedError } from './journal/lock';

const writeAsync = promisify(fs.write);
const fdatasyncAsync = promisify(fs.fdatasync);
const fsyncAsync = promisify(fs.fsync);
const openAsync = promisify(fs.open);
const closeAsync = promisify(fs.close);
const renameAsync = promisify(fs.rename);

export const OUTBOX_DEFAULTS = {
  maxBytes: 2 * 1024 ** 3,
  segmentBytes: 64 * 1024 ** 2,
  fsyncIntervalMs: 5,
  cacheBytes: 16 * 1024 ** 2,
  checkpointIntervalMs: 100,
} as const;

/** One sparse-index entry per this many records of a segment. */
const INDEX_STRIDE = 16;
/** acks.log is rewritten with a single checkpoint when it grows past this. */
const ACKS_COMPACT_BYTES = 1024 * 1024;
const ACKS_FILE = 'acks.log';
const READ_BUFFER_BYTES = 1024 * 1024;
const MIN_SEGMENT_BYTES = 4096;
/** Sealed segments are only read: at most this many keep an open descriptor (least recently read closed first). */
const MAX_OPEN_SEALED = 8;
const MAX_SEGMENT_BYTES = 1024 ** 3;

export interface JournalOutboxOptions {
  /** Directory of the journal (created if missing); one bridge per directory, enforced by a lock. */
  readonly dir: string;
  /** Most bytes of live segment files; append() waits for confirms beyond it. Default 2 GiB. */
  readonly maxBytes?: number;
  /** A segment file is sealed and a new one started past this size. Default 64 MiB, at most maxBytes/4. */
  readonly segmentBytes?: number;
  /** Least time between the starts of two commits (write + fdatasync). 0: commit as soon as the previous one ends. Default 5. */
  readonly fsyncIntervalMs?: number;
  /** Bytes of recently appended records kept in memory for readAfter. Default 16 MiB. */
  readonly cacheBytes?: number;
  /** How often confirmations are checkpointed to acks.log. Default 100 ms. */
  readonly checkpointIntervalMs?: number;
  /** false skips fdatasync (benchmarks of CPU cost only: NOT crash-safe against power loss). */
  readonly sync?: boolean;
  readonly logger?: Pick<Logger, 'info' | 'warn' | 'error'>;
}

/** What open() found and did. */
export interface JournalRecovery {
  readonly segments: number;
  /** Records found in the segments kept. */
  readonly records: number;
  /** Of those, not confirmed according to the last checkpoint: they will be published again. */
  readonly unconfirmed: number;
  /** Segments deleted at open because the checkpoint shows them fully confirmed. */
  readonly deletedSegments: number;
  /** Bytes cut from segment tails: a torn last write, or corruption. */
  readonly truncatedBytes: number;
  /** Segments renamed to *.corrupt because their header is unreadable. */
  readonly corruptSegments: readonly string[];
  readonly nextId: number;
  readonly durationMs: number;
}

export interface JournalStats {
  /** Records committed since open. */
  readonly records: number;
  /** Commits: one write + one fdatasync each, however many appends they carried. */
  readonly commits: number;
  readonly bytesWritten: number;
  /** readSync calls serving readAfter for records no longer in the memory cache. */
  readonly diskReads: number;
  readonly rolls: number;
  readonly segmentsDeleted: number;
  readonly checkpoints: number;
  readonly writeErrors: number;
}

interface Segment {
  readonly firstId: number;
  readonly path: string;
  /** Open descriptor, or -1 (a sealed segment not read lately). */
  fd: number;
  /** Committed records (ids firstId … firstId + count - 1). */
  count: number;
  /** Committed bytes, header included: the file's valid length. */
  size: number;
  sealed: boolean;
  /** Offsets of records firstId + k·INDEX_STRIDE. */
  readonly index: number[];
}

interface AppendJob {
  readonly inputs: readonly OutboxInput[];
  readonly sizes: readonly number[];
  /** Next input to stage. */
  next: number;
  /** Id of the job's last record, once all are staged. */
  lastId: number;
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
}

interface Staged {
  readonly record: OutboxRecord;
  readonly size: number;
}

export class JournalOutbox implements Outbox {
  readonly capacity: number;
  readonly recovery: JournalRecovery;
  readonly dir: string;
  readonly #segmentBytes: number;
  readonly #fsyncIntervalMs: number;
  readonly #cacheLimit: number;
  readonly #checkpointIntervalMs: number;
  readonly #sync: boolean;
  readonly #logger: Pick<Logger, 'info' | 'warn' | 'error'> | undefined;
  readonly #releaseLock: () => void;
  readonly #dirFd: number;

  /** Live segments in id order; the last one is the active (written) segment. */
  readonly #segments: Segment[];
  /** Every id ≤ watermark is confirmed (or never existed). */
  #watermark: number;
  /** Confirmed ids above the watermark. */
  readonly #confirmedAbove = new Set<number>();
  /** Id ranges inside the id space with no record (lost to corruption), lowest first. */
  readonly #gaps: Array<[number, number]>;
  /** Highest committed (durable, visible) id. */
  #committedId: number;
  #nextId: number;
  #depth: number;
  /** Bytes of live segments plus staged and in-flight records. */
  #usedBytes: number;

  readonly #admitQueue: AppendJob[] = [];
  readonly #commitWaiters: AppendJob[] = [];
  #staged: Staged[] = [];
  #flushRunning = false;
  #flushTimer: NodeJS.Timeout | undefined;
  #flushImmediate: NodeJS.Immediate | undefined;
  #flushDone: Promise<void> = Promise.resolve();
  #lastCommitStart = 0;
  #writeBuffer = Buffer.allocUnsafe(1024 * 1024);

  /** Recently committed records: #cache[#cacheHead] has id #cacheFirstId; ids are contiguous to #committedId. */
  #cache: Array<OutboxRecord | undefined> = [];
  #cacheSizes: number[] = [];
  #cacheHead = 0;
  #cacheFirstId: number;
  #cacheBytes = 0;

  #readBuffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);
  #readSegment: Segment | undefined;
  #readStart = 0;
  #readEnd = 0;
  /** Where the last disk read stopped: the record with id #hintId starts at #hintOffset of #hintSegment. */
  #hintSegment: Segment | undefined;
  #hintId = 0;
  #hintOffset = 0;
  #oldest: { id: number; micros: number } | undefined;
  /** Sealed segments with an open descriptor, least recently used first. */
  readonly #openSealed: Segment[] = [];

  #acksFd: number;
  #acksSize: number;
  #checkpointTimer: NodeJS.Timeout | undefined;
  #checkpointDirty = false;
  #checkpointing: Promise<void> = Promise.resolve();

  readonly #appendListeners: Array<() => void> = [];
  #closing = false;
  #closed = false;
  #closePromise: Promise<void> | undefined;
  #stats = {
    records: 0,
    commits: 0,
    bytesWritten: 0,
    diskReads: 0,
    rolls: 0,
    segmentsDeleted: 0,
    checkpoints: 0,
    writeErrors: 0,
  };

  /** Opens (creating or recovering) the journal in options.dir. */
  static open(options: JournalOutboxOptions): Promise<JournalOutbox> {
    return Promise.resolve().then(() => new JournalOutbox(options));
  }

  private constructor(options: JournalOutboxOptions) {
    const started = performance.now();
    this.dir = resolve(options.dir);
    this.capacity = positive(options.maxBytes, OUTBOX_DEFAULTS.maxBytes, 'maxBytes');
    this.#segmentBytes = Math.max(
      MIN_SEGMENT_BYTES,
      Math.min(
        positive(options.segmentBytes, OUTBOX_DEFAULTS.segmentBytes, 'segmentBytes'),
        Math.floor(this.capacity / 4),
        MAX_SEGMENT_BYTES,
      ),
    );
    this.#fsyncIntervalMs = nonNegative(options.fsyncIntervalMs, OUTBOX_DEFAULTS.fsyncIntervalMs);
    this.#cacheLimit = nonNegative(options.cacheBytes, OUTBOX_DEFAULTS.cacheBytes);
    this.#checkpointIntervalMs = nonNegative(
      options.checkpointIntervalMs,
      OUTBOX_DEFAULTS.checkpointIntervalMs,
    );
    this.#sync = options.sync ?? true;
    this.#logger = options.logger;

    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    this.#releaseLock = acquireLock(this.dir);
    this.#dirFd = -1;
    try {
      this.#dirFd = fs.openSync(this.dir, 'r');
      const state = this.#recover();
      this.#segments = state.segments;
      this.#watermark = state.watermark;
      for (const id of state.confirmedAbove) this.#confirmedAbove.add(id);
      this.#gaps = state.gaps;
      this.#depth = state.depth;
      this.#committedId = state.nextId - 1;
      this.#nextId = state.nextId;
      this.#cacheFirstId = state.nextId;
      this.#usedBytes = this.#segments.reduce((sum, segment) => sum + segment.size, 0);
      this.#advanceWatermark();
      const acks = this.#rewriteAcks();
      this.#acksFd = acks.fd;
      this.#acksSize = acks.size;
      this.recovery = {
        segments: this.#segments.length,
        records: state.records,
        unconfirmed: this.#depth,
        deletedSegments: state.deletedSegments,
        truncatedBytes: state.truncatedBytes,
        corruptSegments: state.corruptSegments,
        nextId: this.#nextId,
        durationMs: Math.round(performance.now() - started),
      };
    } catch (error) {
      if (this.#dirFd >= 0) closeQuietly(this.#dirFd);
      this.#releaseLock();
      throw error;
    }
    this.#releaseSegments();
    this.#logger?.info(
      { dir: this.dir, ...this.recovery, corruptSegments: this.recovery.corruptSegments.length },
      'outbox journal open',
    );
  }

  get depth(): number {
    return this.#depth;
  }

  /** Bytes of live segment files (plus records accepted but not yet written). */
  get bytes(): number {
    return this.#usedBytes;
  }

  /** append() calls waiting for space (the journal is at maxBytes until confirms free a segment). */
  get waitingForSpace(): number {
    return this.#closing ? 0 : this.#admitQueue.length;
  }

  get segmentCount(): number {
    return this.#segments.length;
  }

  get stats(): JournalStats {
    return { ...this.#stats };
  }

  oldestMicros(): number | undefined {
    if (this.#depth === 0 || this.#closed) return undefined;
    const id = this.#watermark + 1; // #advanceWatermark keeps it the first unconfirmed record
    if (this.#oldest?.id === id) return this.#oldest.micros;
    let micros: number | undefined;
    if (id >= this.#cacheFirstId)
      micros = this.#cache[this.#cacheHead + id - this.#cacheFirstId]?.occurredMicros;
    else micros = this.#readMicros(id);
    if (micros !== undefined) this.#oldest = { id, micros };
    return micros;
  }

  append(inputs: readonly OutboxInput[]): Promise<void> {
    if (this.#closing) return Promise.reject(new Error(`outbox ${this.dir} is closed`));
    let sizes: number[];
    try {
      sizes = inputs.map((input) => recordFrameBytes(input));
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
    if (inputs.length === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.#admitQueue.push({ inputs: [...inputs], sizes, next: 0, lastId: 0, resolve, reject });
      this.#admit();
    });
  }

  readAfter(afterId: number, max: number): OutboxRecord[] {
    const out: OutboxRecord[] = [];
    if (this.#closed || this.#depth === 0 || !(max > 0)) return out;
    let id = Math.max(Math.floor(afterId) + 1, this.#watermark + 1);
    if (!Number.isFinite(id)) return out;
    if (id < this.#cacheFirstId) id = this.#readFromDisk(id, this.#cacheFirstId, max, out);
    const confirmed = this.#confirmedAbove;
    for (; id <= this.#committedId && out.length < max; id += 1) {
      if (confirmed.size > 0 && confirmed.has(id)) continue;
      const record = this.#cache[this.#cacheHead + id - this.#cacheFirstId];
      if (record) out.push(record);
    }
    return out;
  }

  confirm(id: number): void {
    if (this.#closed || !(id > this.#watermark && id <= this.#committedId) || !Number.isInteger(id)) return;
    if (this.#confirmedAbove.has(id) || this.#inGap(id)) return; // a duplicate confirm after a republish
    this.#depth -= 1;
    if (id === this.#watermark + 1) {
      this.#watermark = id;
      this.#advanceWatermark();
      this.#trimCache();
      this.#releaseSegments();
    } else {
      this.#confirmedAbove.add(id);
    }
    this.#checkpointDirty = true;
    if (this.#checkpointTimer === undefined && !this.#closing) {
      this.#checkpointTimer = setTimeout(() => {
        this.#checkpointTimer = undefined;
        this.#checkpoint();
      }, this.#checkpointIntervalMs);
      this.#checkpointTimer.unref();
    }
    // A waiting append may now fit (a segment was freed), or nothing is left to wait for.
    if (this.#admitQueue.length > 0) this.#admit();
  }

  onAppend(listener: () => void): void {
    this.#appendListeners.push(listener);
  }

  /**
   * Commits what was accepted, checkpoints the confirmations, closes the files and releases the lock.
   * Appends still waiting for space are rejected (they were never accepted).
   */
  close(): Promise<void> {
    this.#closePromise ??= this.#close();
    return this.#closePromise;
  }

  async #close(): Promise<void> {
    this.#closing = true;
    const error = new Error(`outbox ${this.dir} closed while the append waited for space`);
    for (const job of this.#admitQueue.splice(0)) job.reject(error);
    clearTimeout(this.#flushTimer);
    clearImmediate(this.#flushImmediate);
    this.#flushTimer = undefined;
    this.#flushImmediate = undefined;
    while (this.#flushRunning || this.#staged.length > 0) {
      if (!this.#flushRunning) this.#startFlush();
      await this.#flushDone;
    }
    clearTimeout(this.#checkpointTimer);
    this.#checkpointTimer = undefined;
    await this.#checkpointing;
    try {
      this.#checkpointDirty = true;
      this.#writeCheckpointSync();
      if (this.#sync) fs.fdatasyncSync(this.#acksFd);
    } catch (failure) {
      this.#logger?.error({ err: failure, dir: this.dir }, 'outbox: final confirmation checkpoint failed');
    }
    this.#closed = true;
    for (const segment of this.#segments) if (segment.fd >= 0) closeQuietly(segment.fd);
    this.#openSealed.length = 0;
    closeQuietly(this.#acksFd);
    closeQuietly(this.#dirFd);
    this.#readSegment = undefined;
    this.#hintSegment = undefined;
    this.#cache = [];
    this.#cacheSizes = [];
    this.#releaseLock();
  }

  // ---- appending ----------------------------------------------------------------------------------

  /** Stages queued appends in order while there is room; schedules a commit. */
  #admit(): void {
    while (this.#admitQueue.length > 0) {
      const job = this.#admitQueue[0]!;
      while (job.next < job.inputs.length) {
        const size = job.sizes[job.next]!;
        const pending = this.#depth + (this.#nextId - 1 - this.#committedId);
        if (this.#usedBytes + size > this.capacity && pending > 0) {
          this.#scheduleFlush();
          return; // confirms that free a segment call #admit again
        }
        const input = job.inputs[job.next]!;
        const record: OutboxRecord = {
          id: this.#nextId,
          exchange: input.exchange,
          routingKey: input.routingKey,
          messageId: input.messageId,
          type: input.type,
          occurredMicros: input.occurredMicros,
          transition: input.transition,
          body: input.body,
        };
        this.#nextId += 1;
        this.#usedBytes += size;
        this.#staged.push({ record, size });
        job.next += 1;
      }
      job.lastId = this.#nextId - 1;
      this.#admitQueue.shift();
      this.#commitWaiters.push(job);
    }
    this.#scheduleFlush();
  }

  #scheduleFlush(): void {
    if (this.#flushRunning || this.#staged.length === 0) return;
    if (this.#flushTimer !== undefined || this.#flushImmediate !== undefined) return;
    const wait = this.#lastCommitStart + this.#fsyncIntervalMs - performance.now();
    if (wait >= 1) {
      this.#flushTimer = setTimeout(() => {
        this.#flushTimer = undefined;
        this.#startFlush();
      }, Math.ceil(wait));
    } else {
      // One turn of the event loop lets appends made in the same turn share the commit.
      this.#flushImmediate = setImmediate(() => {
        this.#flushImmediate = undefined;
        this.#startFlush();
      });
    }
  }

  #startFlush(): void {
    if (this.#flushRunning) return;
    this.#flushRunning = true;
    this.#flushDone = this.#flush().finally(() => {
      this.#flushRunning = false;
      this.#scheduleFlush();
    });
  }

  async #flush(): Promise<void> {
    if (this.#staged.length === 0) return;
    this.#lastCommitStart = performance.now();
    const batch = this.#staged;
    this.#staged = [];
    try {
      await this.#writeBatch(batch);
    } catch (error) {
      // Only when closing: the write failed and will not be retried. Everything uncommitted fails.
      const failure = error instanceof Error ? error : new Error(String(error));
      this.#logger?.error({ err: failure, dir: this.dir }, 'outbox: write failed while closing');
      for (const job of this.#commitWaiters.splice(0)) job.reject(failure);
      this.#staged = [];
    }
  }

  async #writeBatch(batch: readonly Staged[]): Promise<void> {
    let start = 0;
    while (start < batch.length) {
      let segment = this.#segments[this.#segments.length - 1]!;
      if (segment.count > 0 && segment.size + batch[start]!.size > this.#segmentBytes) {
        segment = await this.#retrying('roll', () => this.#roll(batch[start]!.record.id));
      }
      let end = start;
      let bytes = 0;
      while (
        end < batch.length &&
        (end === start || segment.size + bytes + batch[end]!.size <= this.#segmentBytes)
      ) {
        bytes += batch[end]!.size;
        end += 1;
      }
      if (this.#writeBuffer.length < bytes)
        this.#writeBuffer = Buffer.allocUnsafe(Math.max(bytes, this.#writeBuffer.length * 2));
      const buffer = this.#writeBuffer;
      const offsets: number[] = [];
      let at = 0;
      for (let i = start; i < end; i += 1) {
        offsets.push(at);
        at += encodeRecord(buffer, at, batch[i]!.record);
      }
      const position = segment.size;
      await this.#retrying('write', async () => {
        await writeFully(segment.fd, buffer, at, position);
        if (this.#sync) await fdatasyncAsync(segment.fd);
      });
      this.#commit(segment, batch, start, end, offsets, at);
      start = end;
    }
  }

  #commit(
    segment: Segment,
    batch: readonly Staged[],
    start: number,
    end: number,
    offsets: number[],
    bytes: number,
  ): void {
    const base = segment.size;
    for (let i = start; i < end; i += 1) {
      const { record, size } = batch[i]!;
      if ((record.id - segment.firstId) % INDEX_STRIDE === 0) segment.index.push(base + offsets[i - start]!);
      this.#cache.push(record);
      this.#cacheSizes.push(size);
      this.#cacheBytes += size;
    }
    segment.count += end - start;
    segment.size += bytes;
    this.#committedId = batch[end - 1]!.record.id;
    this.#depth += end - start;
    this.#stats.records += end - start;
    this.#stats.commits += 1;
    this.#stats.bytesWritten += bytes;
    this.#trimCache();
    while (this.#commitWaiters.length > 0 && this.#commitWaiters[0]!.lastId <= this.#committedId) {
      this.#commitWaiters.shift()!.resolve();
    }
    for (const listener of this.#appendListeners) {
      try {
        listener();
      } catch (error) {
        this.#logger?.error({ err: error }, 'outbox: append listener failed');
      }
    }
  }

  /** Seals the active segment (already durable) and starts a new one at firstId. */
  async #roll(firstId: number): Promise<Segment> {
    const path = join(this.dir, segmentName(firstId));
    const fd = await openAsync(path, 'w+', 0o600);
    try {
      await writeFully(fd, encodeSegmentHeader(firstId, Date.now()), SEGMENT_HEADER_BYTES, 0);
      if (this.#sync) {
        await fdatasyncAsync(fd);
        await fsyncAsync(this.#dirFd);
      }
    } catch (error) {
      await closeAsync(fd).catch(() => undefined);
      throw error;
    }
    const previous = this.#segments[this.#segments.length - 1]!;
    previous.sealed = true;
    this.#touchSealed(previous);
    const segment: Segment = {
      firstId,
      path,
      fd,
      count: 0,
      size: SEGMENT_HEADER_BYTES,
      sealed: false,
      index: [],
    };
    this.#segments.push(segment);
    this.#usedBytes += SEGMENT_HEADER_BYTES;
    this.#stats.rolls += 1;
    this.#releaseSegments();
    return segment;
  }

  /** Runs a disk operation until it succeeds (backing off), or once more and then throws when closing. */
  async #retrying<T>(what: string, operation: () => Promise<T>): Promise<T> {
    let delay = 100;
    for (;;) {
      try {
        return await operation();
      } catch (error) {
        this.#stats.writeErrors += 1;
        if (this.#closing) throw error;
        this.#logger?.error(
          { err: error, dir: this.dir, retryMs: delay },
          `outbox: ${what} failed; appends wait and the write is retried`,
        );
        await new Promise((wake) => setTimeout(wake, delay));
        delay = Math.min(delay * 2, 5000);
      }
    }
  }

  // ---- confirmations ------------------------------------------------------------------------------

  /** Moves the watermark over ids confirmed out of order and over gaps. */
  #advanceWatermark(): void {
    for (;;) {
      const next = this.#watermark + 1;
      if (this.#confirmedAbove.size > 0 && this.#confirmedAbove.delete(next)) {
        this.#watermark = next;
        continue;
      }
      const gap = this.#gaps[0];
      if (gap && gap[0] <= next) {
        this.#gaps.shift();
        if (gap[1] >= next) this.#watermark = gap[1];
        continue;
      }
      return;
    }
  }

  #inGap(id: number): boolean {
    return this.#gaps.length > 0 && this.#gaps.some(([first, last]) => id >= first && id <= last);
  }

  /** Deletes sealed segments at the head whose records are all confirmed; wakes waiting appends. */
  #releaseSegments(): void {
    let freed = false;
    while (this.#segments.length > 1) {
      const head = this.#segments[0]!;
      if (!head.sealed || head.firstId + head.count - 1 > this.#watermark) break;
      this.#segments.shift();
      this.#usedBytes -= head.size;
      if (this.#readSegment === head) this.#readSegment = undefined;
      if (this.#hintSegment === head) this.#hintSegment = undefined;
      this.#closeSegment(head);
      fs.unlink(head.path, (error) => {
        if (error)
          this.#logger?.warn({ err: error, path: head.path }, 'outbox: cannot delete a confirmed segment');
      });
      this.#stats.segmentsDeleted += 1;
      freed = true;
    }
    if (freed && this.#admitQueue.length > 0 && !this.#closing) this.#admit();
  }

  #checkpoint(): void {
    this.#checkpointing = this.#checkpointing.then(async () => {
      if (this.#closed || !this.#checkpointDirty) return;
      this.#checkpointDirty = false;
      const frame = this.#checkpointFrame();
      try {
        if (this.#acksSize + frame.length > ACKS_COMPACT_BYTES) {
          await this.#compactAcks(frame);
        } else {
          await writeFully(this.#acksFd, frame, frame.length, this.#acksSize);
          this.#acksSize += frame.length;
        }
        this.#stats.checkpoints += 1;
      } catch (error) {
        this.#checkpointDirty = true;
        this.#logger?.warn({ err: error, dir: this.dir }, 'outbox: confirmation checkpoint failed');
      }
    });
  }

  #checkpointFrame(): Buffer {
    return encodeCheckpoint(
      { watermark: this.#watermark, ranges: idRanges(this.#confirmedAbove) },
      Date.now(),
    );
  }

  #writeCheckpointSync(): void {
    if (!this.#checkpointDirty) return;
    this.#checkpointDirty = false;
    const frame = this.#checkpointFrame();
    writeFullySync(this.#acksFd, frame, this.#acksSize);
    this.#acksSize += frame.length;
    this.#stats.checkpoints += 1;
  }

  /** Replaces acks.log by a file holding only `frame` (write, fsync, rename, fsync the directory). */
  async #compactAcks(frame: Buffer): Promise<void> {
    const temporary = join(this.dir, `${ACKS_FILE}.tmp`);
    const fd = await openAsync(temporary, 'w+', 0o600);
    try {
      await writeFully(fd, frame, frame.length, 0);
      if (this.#sync) await fdatasyncAsync(fd);
      await renameAsync(temporary, join(this.dir, ACKS_FILE));
      if (this.#sync) await fsyncAsync(this.#dirFd);
    } catch (error) {
      await closeAsync(fd).catch(() => undefined);
      throw error;
    }
    const old = this.#acksFd;
    this.#acksFd = fd;
    this.#acksSize = frame.length;
    closeQuietly(old);
  }

  /** At open: a fresh acks.log holding the recovered state (synchronously, like the rest of open). */
  #rewriteAcks(): { fd: number; size: number } {
    const frame = this.#checkpointFrame();
    const temporary = join(this.dir, `${ACKS_FILE}.tmp`);
    const fd = fs.openSync(temporary, 'w+', 0o600);
    try {
      writeFullySync(fd, frame, 0);
      if (this.#sync) fs.fdatasyncSync(fd);
      fs.renameSync(temporary, join(this.dir, ACKS_FILE));
      if (this.#sync) fs.fsyncSync(this.#dirFd);
    } catch (error) {
      closeQuietly(fd);
      throw error;
    }
    return { fd, size: frame.length };
  }

  // ---- reading ------------------------------------------------------------------------------------

  #trimCache(): void {
    while (
      this.#cacheHead < this.#cache.length &&
      (this.#cacheBytes > this.#cacheLimit || this.#cacheFirstId <= this.#watermark)
    ) {
      this.#cache[this.#cacheHead] = undefined;
      this.#cacheBytes -= this.#cacheSizes[this.#cacheHead]!;
      this.#cacheHead += 1;
      this.#cacheFirstId += 1;
    }
    if (this.#cacheHead > 4096 && this.#cacheHead * 2 > this.#cache.length) {
      this.#cache.splice(0, this.#cacheHead);
      this.#cacheSizes.splice(0, this.#cacheHead);
      this.#cacheHead = 0;
    }
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

  #closeSegment(segment: Segment): void {
    const at = this.#openSealed.indexOf(segment);
    if (at >= 0) this.#openSealed.splice(at, 1);
    if (segment.fd >= 0) closeQuietly(segment.fd);
    segment.fd = -1;
  }

  /** Index in #segments of the segment holding id, or of the first one after it; -1 past the end. */
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
   * Makes bytes [offset, offset + want) of segment readable in #readBuffer and returns their index in
   * it. A miss reads as much of the segment as the buffer holds: sequential reads cost one readSync
   * per megabyte.
   */
  #fill(segment: Segment, offset: number, want: number): number {
    if (this.#readSegment === segment && offset >= this.#readStart && offset + want <= this.#readEnd) {
      return offset - this.#readStart;
    }
    if (this.#readBuffer.length < want) this.#readBuffer = Buffer.allocUnsafe(want);
    const length = Math.min(this.#readBuffer.length, segment.size - offset);
    let done = 0;
    while (done < length) {
      const n = fs.readSync(this.#fdOf(segment), this.#readBuffer, done, length - done, offset + done);
      if (n === 0) break;
      done += n;
    }
    this.#stats.diskReads += 1;
    this.#readSegment = segment;
    this.#readStart = offset;
    this.#readEnd = offset + done;
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

  /** Reads unconfirmed records id … stopId-1 from disk into out (up to max); returns the next id to look at. */
  #readFromDisk(id: number, stopId: number, max: number, out: OutboxRecord[]): number {
    let s = this.#segmentFor(id);
    if (s === -1) return stopId;
    const confirmed = this.#confirmedAbove;
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
        const size = frameSizeAt(this.#readBuffer, index);
        if (index + size > this.#readEnd - this.#readStart) index = this.#fill(segment, offset, size);
        if (at >= id && !(confirmed.size > 0 && confirmed.has(at))) {
          const found = recordIdAt(this.#readBuffer, index);
          if (found !== at) throw new Error(`outbox: ${segment.path} holds id ${found} where ${at} belongs`);
          out.push(decodeRecord(this.#readBuffer, index));
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

  #readMicros(id: number): number | undefined {
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

  // ---- recovery -----------------------------------------------------------------------------------

  #recover(): {
    segments: Segment[];
    watermark: number;
    confirmedAbove: number[];
    gaps: Array<[number, number]>;
    depth: number;
    records: number;
    nextId: number;
    deletedSegments: number;
    truncatedBytes: number;
    corruptSegments: string[];
  } {
    fs.rmSync(join(this.dir, `${ACKS_FILE}.tmp`), { force: true });
    let watermark = 0;
    const confirmed = new Set<number>();
    const acksPath = join(this.dir, ACKS_FILE);
    if (fs.existsSync(acksPath)) {
      const { checkpoint } = lastCheckpoint(fs.readFileSync(acksPath));
      if (checkpoint) {
        watermark = checkpoint.watermark;
        for (const [first, last] of checkpoint.ranges) {
          for (let id = first; id <= last; id += 1) confirmed.add(id);
        }
      }
    }

    const found = fs
      .readdirSync(this.dir)
      .map((name) => ({ name, firstId: parseSegmentName(name) }))
      .filter((entry): entry is { name: string; firstId: number } => entry.firstId !== undefined)
      .sort((a, b) => a.firstId - b.firstId);
    const segments: Segment[] = [];
    const corruptSegments: string[] = [];
    /** Highest first id of a segment moved aside as corrupt: its ids were used, they are not handed out again. */
    let corruptFirstId = 0;
    let deletedSegments = 0;
    let truncatedBytes = 0;
    let depth = 0;
    let records = 0;
    let changed = false;
    let buffer = Buffer.allocUnsafe(4 * 1024 * 1024);

    for (let i = 0; i < found.length; i += 1) {
      const { name, firstId } = found[i]!;
      const path = join(this.dir, name);
      const isLast = i === found.length - 1;
      const next = found[i + 1];
      if (next && next.firstId - 1 <= watermark) {
        fs.rmSync(path, { force: true }); // every record in it is confirmed
        deletedSegments += 1;
        changed = true;
        continue;
      }
      const fd = fs.openSync(path, 'r+');
      const fileSize = fs.fstatSync(fd).size;
      const header = Buffer.alloc(SEGMENT_HEADER_BYTES);
      fs.readSync(fd, header, 0, SEGMENT_HEADER_BYTES, 0);
      if (decodeSegmentHeader(header) !== firstId) {
        if (isLast && fileSize <= SEGMENT_HEADER_BYTES) {
          // Crashed while starting this segment: nothing was written to it yet. Start it again.
          writeFullySync(fd, encodeSegmentHeader(firstId, Date.now()), 0);
          fs.ftruncateSync(fd, SEGMENT_HEADER_BYTES);
          if (this.#sync) fs.fdatasyncSync(fd);
          segments.push({
            firstId,
            path,
            fd,
            count: 0,
            size: SEGMENT_HEADER_BYTES,
            sealed: false,
            index: [],
          });
          continue;
        }
        fs.closeSync(fd);
        fs.renameSync(path, `${path}.corrupt`);
        corruptSegments.push(name);
        corruptFirstId = Math.max(corruptFirstId, firstId);
        changed = true;
        this.#logger?.error(
          { path },
          'outbox: segment header unreadable; moved aside as *.corrupt, its records are lost',
        );
        continue;
      }
      const segment: Segment = {
        firstId,
        path,
        fd,
        count: 0,
        size: SEGMENT_HEADER_BYTES,
        sealed: !isLast,
        index: [],
      };
      let offset = SEGMENT_HEADER_BYTES;
      let bufferStart = offset;
      let bufferEnd = offset;
      for (;;) {
        let index = offset - bufferStart;
        let check = checkRecordFrame(buffer, index, bufferEnd - offset);
        if (check === 0 && offset < fileSize) {
          // Refill from offset (growing the buffer for a record larger than it).
          const needed = bufferEnd - offset >= 8 ? frameSizeAt(buffer, index) : 8;
          if (needed > buffer.length && needed <= fileSize - offset) buffer = Buffer.allocUnsafe(needed);
          const length = Math.min(buffer.length, fileSize - offset);
          const n = fs.readSync(fd, buffer, 0, length, offset);
          bufferStart = offset;
          bufferEnd = offset + n;
          index = 0;
          check = checkRecordFrame(buffer, 0, n);
        }
        if (check <= 0) break;
        if (recordIdAt(buffer, index) !== firstId + segment.count) break;
        const id = firstId + segment.count;
        if (segment.count % INDEX_STRIDE === 0) segment.index.push(offset);
        if (id > watermark && !confirmed.has(id)) depth += 1;
        segment.count += 1;
        offset += check;
      }
      segment.size = offset;
      records += segment.count;
      if (offset < fileSize) {
        fs.ftruncateSync(fd, offset);
        if (this.#sync) fs.fdatasyncSync(fd);
        truncatedBytes += fileSize - offset;
        const facts = { path, keptRecords: segment.count, cutBytes: fileSize - offset };
        if (isLast)
          this.#logger?.warn(facts, 'outbox: torn tail of the last segment cut (an unfinished write)');
        else this.#logger?.error(facts, 'outbox: corrupt record in a sealed segment; the rest of it is lost');
      }
      if (segment.count === 0 && !isLast) {
        fs.closeSync(fd);
        fs.rmSync(path, { force: true });
        changed = true;
        continue;
      }
      if (!isLast) {
        fs.closeSync(fd); // reopened on demand for reading
        segment.fd = -1;
      }
      segments.push(segment);
    }

    // The ids go on after the highest one ever used; the active segment never goes away, so its name
    // keeps that number even when everything was confirmed.
    let nextId = Math.max(watermark + 1, corruptFirstId);
    const last = segments[segments.length - 1];
    if (last) nextId = Math.max(nextId, last.firstId + last.count);
    // A fresh active segment unless the last one kept can take the next id. It cannot when it was
    // sealed in the scan (the newest segment after it was moved aside as corrupt): its descriptor is
    // closed and appending to it would fail forever.
    if (!last || last.sealed || last.fd < 0 || last.firstId + last.count !== nextId) {
      if (last) {
        last.sealed = true;
        if (last.fd >= 0) fs.closeSync(last.fd);
        last.fd = -1;
      }
      const path = join(this.dir, segmentName(nextId));
      const fd = fs.openSync(path, 'w+', 0o600);
      writeFullySync(fd, encodeSegmentHeader(nextId, Date.now()), 0);
      if (this.#sync) fs.fdatasyncSync(fd);
      segments.push({
        firstId: nextId,
        path,
        fd,
        count: 0,
        size: SEGMENT_HEADER_BYTES,
        sealed: false,
        index: [],
      });
      changed = true;
    }
    if (changed && this.#sync) fs.fsyncSync(this.#dirFd);

    // Ids with no record (before the first segment, between segments) count as confirmed.
    const gaps: Array<[number, number]> = [];
    let expected = Math.max(1, watermark + 1);
    for (const segment of segments) {
      if (segment.firstId > expected) gaps.push([expected, segment.firstId - 1]);
      expected = Math.max(expected, segment.firstId + segment.count);
    }
    const confirmedAbove = [...confirmed].filter(
      (id) => id > watermark && id < nextId && !gaps.some(([first, lastId]) => id >= first && id <= lastId),
    );
    return {
      segments,
      watermark,
      confirmedAbove,
      gaps,
      depth,
      records,
      nextId,
      deletedSegments,
      truncatedBytes,
      corruptSegments,
    };
  }
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value < 1) throw new RangeError(`outbox ${name} must be >= 1`);
  return Math.floor(value);
}

function nonNegative(value: number | undefined, fallback: number): number {
  return value === undefined || !Number.isFinite(value) || value < 0 ? fallback : value;
}

function closeQuietly(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    // Already closed.
  }
}

async function writeFully(fd: number, buffer: Buffer, length: number, position: number): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesWritten } = await writeAsync(fd, buffer, done, length - done, position + done);
    if (bytesWritten <= 0) throw new Error('outbox: write made no progress');
    done += bytesWritten;
  }
}

function writeFullySync(fd: number, buffer: Buffer, position: number): void {
  let done = 0;
  while (done < buffer.length) {
    const n = fs.writeSync(fd, buffer, done, buffer.length - done, position + done);
    if (n <= 0) throw new Error('outbox: write made no progress');
    done += n;
  }
}

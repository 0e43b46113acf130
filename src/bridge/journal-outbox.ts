/**
 * The durable outbox: an append-only segment log on local disk with the MemoryOutbox semantics
 * (src/bridge/outbox.ts). Format and design: docs/outbox.md. This class holds what must change
 * together — ids, the append queue, group commit and the confirmation watermark; its parts live in
 * src/bridge/journal/: recovery at open (recover.ts), reading back from disk (segment-reader.ts),
 * the memory cache (record-cache.ts), commit pacing (commit-pacer.ts), the confirmation
 * checkpoints (acks.ts), the lock (lock.ts).
 *
 * - append() assigns ids and resolves only once its records are written and fdatasync'ed. Appends
 *   that arrive while a write is in flight share the next write and fdatasync (group commit);
 *   fsyncIntervalMs spaces commits under load. Only committed records are visible to readAfter(),
 *   so nothing is published that a crash could take back.
 * - Confirmations live in memory (a watermark "every id ≤ N is confirmed" plus the few ids confirmed
 *   out of order), checkpointed to acks.log without fsync: after a crash a few confirmed records may
 *   be published again (the consumer deduplicates), never fewer.
 * - Segments roll at segmentBytes; a sealed segment whose every record is confirmed is deleted.
 *   Live segments are bounded by maxBytes: append() waits, like MemoryOutbox, until deletions make
 *   room. It never drops.
 * - A failing write or fdatasync (ENOSPC, EIO) is retried with backoff, rewriting the whole
 *   uncommitted region; the affected appends stay pending meanwhile (stats.writeErrors counts).
 */ import * as fs from 'node:fs';
import { resolve } from 'node:path';
import type { Logger } from '../util/log';
import type { Outbox, OutboxInput, OutboxRecord } from './outbox';
import { AcksLog } from './journal/acks';
import { CommitPacer } from './journal/commit-pacer';
import {
  SEGMENT_HEADER_BYTES,
  encodeCheckpoint,
  encodeRecord,
  idRanges,
  recordFrameBytes,
} from './journal/format';
import { closeQuietly, fdatasyncAsync, retryUntilDone, writeFully } from './journal/fs';
import { acquireLock } from './journal/lock';
import {
  journalSettings,
  type JournalOutboxOptions,
  type JournalRecovery,
  type JournalStats,
} from './journal/options';
import { RecordCache } from './journal/record-cache';
import { recoverJournal } from './journal/recover';
import { SegmentReader } from './journal/segment-reader';
import { INDEX_STRIDE, createSegment, type Segment } from './journal/segment';

export { JournalLockedError } from './journal/lock';
export {
  OUTBOX_DEFAULTS,
  type JournalOutboxOptions,
  type JournalRecovery,
  type JournalStats,
} from './journal/options';

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
  readonly #cacheLimit: number;
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
  readonly #pacer: CommitPacer;
  #writeBuffer = Buffer.allocUnsafe(1024 * 1024);

  /** Recently committed records, up to #committedId. */
  readonly #cache: RecordCache;
  /** Older records, read back from the segment files. */
  readonly #reader: SegmentReader;
  #oldest: { id: number; micros: number } | undefined;

  readonly #acks: AcksLog;

  readonly #appendListeners: Array<() => void> = [];
  #closing = false;
  #closed = false;
  #closePromise: Promise<void> | undefined;
  #stats = {
    records: 0,
    commits: 0,
    bytesWritten: 0,
    rolls: 0,
    segmentsDeleted: 0,
    writeErrors: 0,
  };

  /** Opens (creating or recovering) the journal in options.dir. */
  static open(options: JournalOutboxOptions): Promise<JournalOutbox> {
    return Promise.resolve().then(() => new JournalOutbox(options));
  }

  private constructor(options: JournalOutboxOptions) {
    const started = performance.now();
    this.dir = resolve(options.dir);
    const settings = journalSettings(options);
    this.capacity = settings.capacity;
    this.#segmentBytes = settings.segmentBytes;
    this.#pacer = new CommitPacer(
      settings.fsyncIntervalMs,
      () => this.#staged.length > 0,
      () => this.#flush(),
    );
    this.#cacheLimit = settings.cacheBytes;
    this.#sync = settings.sync;
    this.#logger = options.logger;

    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    this.#releaseLock = acquireLock(this.dir);
    this.#dirFd = -1;
    try {
      this.#dirFd = fs.openSync(this.dir, 'r');
      const state = recoverJournal({
        dir: this.dir,
        dirFd: this.#dirFd,
        sync: this.#sync,
        logger: this.#logger,
      });
      this.#segments = state.segments;
      this.#watermark = state.watermark;
      for (const id of state.confirmedAbove) this.#confirmedAbove.add(id);
      this.#gaps = state.gaps;
      this.#depth = state.depth;
      this.#committedId = state.nextId - 1;
      this.#nextId = state.nextId;
      this.#cache = new RecordCache(state.nextId);
      this.#reader = new SegmentReader(this.#segments, this.#confirmedAbove);
      this.#usedBytes = this.#segments.reduce((sum, segment) => sum + segment.size, 0);
      this.#advanceWatermark();
      this.#acks = AcksLog.create({
        dir: this.dir,
        dirFd: this.#dirFd,
        sync: this.#sync,
        intervalMs: settings.checkpointIntervalMs,
        frame: () =>
          encodeCheckpoint(
            { watermark: this.#watermark, ranges: idRanges(this.#confirmedAbove) },
            Date.now(),
          ),
        logger: this.#logger,
      });
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
    return { ...this.#stats, diskReads: this.#reader.diskReads, checkpoints: this.#acks.checkpoints };
  }

  oldestMicros(): number | undefined {
    if (this.#depth === 0 || this.#closed) return undefined;
    const id = this.#watermark + 1; // #advanceWatermark keeps it the first unconfirmed record
    if (this.#oldest?.id === id) return this.#oldest.micros;
    let micros: number | undefined;
    if (id >= this.#cache.firstId) micros = this.#cache.get(id)?.occurredMicros;
    else micros = this.#reader.micros(id);
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
    if (id < this.#cache.firstId) id = this.#reader.read(id, this.#cache.firstId, max, out);
    const confirmed = this.#confirmedAbove;
    for (; id <= this.#committedId && out.length < max; id += 1) {
      if (confirmed.size > 0 && confirmed.has(id)) continue;
      const record = this.#cache.get(id);
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
      this.#cache.trim(this.#cacheLimit, this.#watermark);
      this.#releaseSegments();
    } else {
      this.#confirmedAbove.add(id);
    }
    this.#acks.mark();
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
    await this.#pacer.drain();
    await this.#acks.close();
    this.#closed = true;
    this.#reader.closeAll();
    closeQuietly(this.#dirFd);
    this.#cache.clear();
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
          this.#pacer.schedule();
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
    this.#pacer.schedule();
  }

  async #flush(): Promise<void> {
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
      this.#cache.push(record, size);
    }
    segment.count += end - start;
    segment.size += bytes;
    this.#committedId = batch[end - 1]!.record.id;
    this.#depth += end - start;
    this.#stats.records += end - start;
    this.#stats.commits += 1;
    this.#stats.bytesWritten += bytes;
    this.#cache.trim(this.#cacheLimit, this.#watermark);
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
    const segment = await createSegment(this.dir, this.#dirFd, firstId, this.#sync);
    const previous = this.#segments[this.#segments.length - 1]!;
    previous.sealed = true;
    this.#reader.sealed(previous);
    this.#segments.push(segment);
    this.#usedBytes += SEGMENT_HEADER_BYTES;
    this.#stats.rolls += 1;
    this.#releaseSegments();
    return segment;
  }

  /** Runs a disk operation until it succeeds (backing off), or once more and then throws when closing. */
  #retrying<T>(what: string, operation: () => Promise<T>): Promise<T> {
    return retryUntilDone(operation, (error, retryMs) => {
      this.#stats.writeErrors += 1;
      if (this.#closing) return false;
      const message = `outbox: ${what} failed; appends wait and the write is retried`;
      this.#logger?.error({ err: error, dir: this.dir, retryMs }, message);
      return true;
    });
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
      this.#reader.forget(head);
      fs.unlink(head.path, (error) => {
        if (error)
          this.#logger?.warn({ err: error, path: head.path }, 'outbox: cannot delete a confirmed segment');
      });
      this.#stats.segmentsDeleted += 1;
      freed = true;
    }
    if (freed && this.#admitQueue.length > 0 && !this.#closing) this.#admit();
  }
}

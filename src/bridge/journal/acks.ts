/**
 * acks.log: the journal's confirmation checkpoints (format: src/bridge/journal/format.ts).
 *
 * Checkpoints are appended without fsync (a crash loses at most the last few, and the records they
 * covered are published again, which the consumer deduplicates); the file is rewritten with a single
 * checkpoint when it grows past ACKS_COMPACT_BYTES, and at every open. A rewrite goes through a
 * temporary file, fsync and rename, so acks.log always holds a complete checkpoint.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../../util/log';
import { lastCheckpoint } from './format';
import {
  closeAsync,
  closeQuietly,
  fdatasyncAsync,
  fsyncAsync,
  openAsync,
  renameAsync,
  writeFully,
  writeFullySync,
} from './fs';

const ACKS_FILE = 'acks.log';
const ACKS_TEMPORARY = `${ACKS_FILE}.tmp`;
/** acks.log is rewritten with a single checkpoint when it grows past this. */
const ACKS_COMPACT_BYTES = 1024 * 1024;

/** The confirmations of the last complete checkpoint in dir (none: nothing confirmed). Removes a half-made rewrite. */
export function readAcks(dir: string): { watermark: number; confirmed: Set<number> } {
  fs.rmSync(join(dir, ACKS_TEMPORARY), { force: true });
  let watermark = 0;
  const confirmed = new Set<number>();
  const path = join(dir, ACKS_FILE);
  if (fs.existsSync(path)) {
    const { checkpoint } = lastCheckpoint(fs.readFileSync(path));
    if (checkpoint) {
      watermark = checkpoint.watermark;
      for (const [first, last] of checkpoint.ranges) {
        for (let id = first; id <= last; id += 1) confirmed.add(id);
      }
    }
  }
  return { watermark, confirmed };
}

export interface AcksLogOptions {
  readonly dir: string;
  /** The directory's descriptor, fsync'ed after a rename (owned by the journal). */
  readonly dirFd: number;
  readonly sync: boolean;
  /** Least time between a confirmation and the checkpoint that records it. */
  readonly intervalMs: number;
  /** The checkpoint frame of the journal's confirmations now. */
  readonly frame: () => Buffer;
  readonly logger: Pick<Logger, 'warn' | 'error'> | undefined;
}

/**
 * The open acks.log and its cadence: mark() after confirmations, and a checkpoint is written within
 * intervalMs; close() writes the last one durably. Writes are serialized (one chain), so an append
 * and a compaction never interleave.
 */
export class AcksLog {
  readonly #options: AcksLogOptions;
  #fd: number;
  #size: number;
  #timer: NodeJS.Timeout | undefined;
  #dirty = false;
  #writing: Promise<void> = Promise.resolve();
  #closing = false;
  #checkpoints = 0;

  /** At open: a fresh acks.log holding the recovered state (synchronously, like the rest of open). */
  static create(options: AcksLogOptions): AcksLog {
    const { dir, dirFd, sync } = options;
    const frame = options.frame();
    const temporary = join(dir, ACKS_TEMPORARY);
    const fd = fs.openSync(temporary, 'w+', 0o600);
    try {
      writeFullySync(fd, frame, 0);
      if (sync) fs.fdatasyncSync(fd);
      fs.renameSync(temporary, join(dir, ACKS_FILE));
      if (sync) fs.fsyncSync(dirFd);
    } catch (error) {
      closeQuietly(fd);
      throw error;
    }
    return new AcksLog(options, fd, frame.length);
  }

  private constructor(options: AcksLogOptions, fd: number, size: number) {
    this.#options = options;
    this.#fd = fd;
    this.#size = size;
  }

  /** Checkpoints written since open. */
  get checkpoints(): number {
    return this.#checkpoints;
  }

  /** Confirmations changed: a checkpoint follows within intervalMs. */
  mark(): void {
    this.#dirty = true;
    if (this.#timer !== undefined || this.#closing) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#writing = this.#writing.then(() => this.#checkpoint());
    }, this.#options.intervalMs);
    this.#timer.unref();
  }

  /** Writes the last checkpoint durably (a failure is logged: a crash would republish) and closes the file. */
  async close(): Promise<void> {
    this.#closing = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#writing;
    try {
      const frame = this.#options.frame();
      writeFullySync(this.#fd, frame, this.#size);
      this.#size += frame.length;
      if (this.#options.sync) fs.fdatasyncSync(this.#fd);
      this.#checkpoints += 1;
    } catch (error) {
      const dir = this.#options.dir;
      this.#options.logger?.error({ err: error, dir }, 'outbox: final confirmation checkpoint failed');
    }
    closeQuietly(this.#fd);
  }

  async #checkpoint(): Promise<void> {
    if (this.#closing || !this.#dirty) return;
    this.#dirty = false;
    const frame = this.#options.frame();
    try {
      if (this.#size + frame.length > ACKS_COMPACT_BYTES) {
        await this.#compact(frame);
      } else {
        await writeFully(this.#fd, frame, frame.length, this.#size);
        this.#size += frame.length;
      }
      this.#checkpoints += 1;
    } catch (error) {
      this.#dirty = true;
      this.#options.logger?.warn(
        { err: error, dir: this.#options.dir },
        'outbox: confirmation checkpoint failed',
      );
    }
  }

  /** Replaces acks.log by a file holding only `frame` (write, fsync, rename, fsync the directory). */
  async #compact(frame: Buffer): Promise<void> {
    const { dir, dirFd, sync } = this.#options;
    const temporary = join(dir, ACKS_TEMPORARY);
    const fd = await openAsync(temporary, 'w+', 0o600);
    try {
      await writeFully(fd, frame, frame.length, 0);
      if (sync) await fdatasyncAsync(fd);
      await renameAsync(temporary, join(dir, ACKS_FILE));
      if (sync) await fsyncAsync(dirFd);
    } catch (error) {
      await closeAsync(fd).catch(() => undefined);
      throw error;
    }
    const old = this.#fd;
    this.#fd = fd;
    this.#size = frame.length;
    closeQuietly(old);
  }
}

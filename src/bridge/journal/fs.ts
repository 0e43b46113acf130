/**
 * File primitives of the outbox journal. A write to a regular file may be short (a signal, a full
 * disk mid-way), so every journal write loops until the whole buffer is on disk or the kernel
 * reports an error; the journal never leaves a frame half-written without knowing it.
 */
import * as fs from 'node:fs';
import { promisify } from 'node:util';

const writeAsync = promisify(fs.write);
export const fdatasyncAsync = promisify(fs.fdatasync);
export const fsyncAsync = promisify(fs.fsync);
export const openAsync = promisify(fs.open);
export const closeAsync = promisify(fs.close);
export const renameAsync = promisify(fs.rename);

/** Writes buffer[0, length) at position, looping over short writes. */
export async function writeFully(
  fd: number,
  buffer: Buffer,
  length: number,
  position: number,
): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesWritten } = await writeAsync(fd, buffer, done, length - done, position + done);
    if (bytesWritten <= 0) throw new Error('outbox: write made no progress');
    done += bytesWritten;
  }
}

/** writeFully for the synchronous paths (open and close, which run before/after the event loop's work). */
export function writeFullySync(fd: number, buffer: Buffer, position: number): void {
  let done = 0;
  while (done < buffer.length) {
    const n = fs.writeSync(fd, buffer, done, buffer.length - done, position + done);
    if (n <= 0) throw new Error('outbox: write made no progress');
    done += n;
  }
}

/** Closes a descriptor that may already be closed (teardown paths must not throw half-way). */
export function closeQuietly(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    // Already closed.
  }
}

/**
 * Runs a disk operation until it succeeds, backing off from 100 ms to 5 s: a full disk or an I/O
 * error must stall the journal's appends, never lose them. onError sees each failure and says
 * whether to retry (false once the journal is closing: then the error is thrown).
 */
export async function retryUntilDone<T>(
  operation: () => Promise<T>,
  onError: (error: unknown, retryMs: number) => boolean,
): Promise<T> {
  let delay = 100;
  for (;;) {
    try {
      return await operation();
    } catch (error) {
      if (!onError(error, delay)) throw error;
      await new Promise((wake) => setTimeout(wake, delay));
      delay = Math.min(delay * 2, 5000);
    }
  }
}

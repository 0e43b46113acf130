/**
 * A segment file of the journal as the journal tracks it, and the making of a new one. A new
 * segment's header is written and fdatasync'ed, and the directory fsync'ed, before any record goes
 * into it, so every segment holding a record is found again after a crash; a crash between creating
 * the file and writing its header leaves a headerless last segment, which recovery starts again
 * (src/bridge/journal/recover.ts).
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { SEGMENT_HEADER_BYTES, encodeSegmentHeader, segmentName } from './format';
import { closeAsync, fdatasyncAsync, fsyncAsync, openAsync, writeFully, writeFullySync } from './fs';

/** One sparse-index entry per this many records of a segment. */
export const INDEX_STRIDE = 16;

/** One segment file as the journal knows it. */
export interface Segment {
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

/** A segment with no record yet, open for appending. */
export function emptySegment(firstId: number, path: string, fd: number): Segment {
  return { firstId, path, fd, count: 0, size: SEGMENT_HEADER_BYTES, sealed: false, index: [] };
}

/** Creates the segment file starting at firstId (header written, synced, directory synced when sync). */
export async function createSegment(
  dir: string,
  dirFd: number,
  firstId: number,
  sync: boolean,
): Promise<Segment> {
  const path = join(dir, segmentName(firstId));
  const fd = await openAsync(path, 'w+', 0o600);
  try {
    await writeFully(fd, encodeSegmentHeader(firstId, Date.now()), SEGMENT_HEADER_BYTES, 0);
    if (sync) {
      await fdatasyncAsync(fd);
      await fsyncAsync(dirFd);
    }
  } catch (error) {
    await closeAsync(fd).catch(() => undefined);
    throw error;
  }
  return emptySegment(firstId, path, fd);
}

/** createSegment for recovery, which runs synchronously; the caller fsyncs the directory once at the end. */
export function createSegmentSync(dir: string, firstId: number, sync: boolean): Segment {
  const path = join(dir, segmentName(firstId));
  const fd = fs.openSync(path, 'w+', 0o600);
  writeFullySync(fd, encodeSegmentHeader(firstId, Date.now()), 0);
  if (sync) fs.fdatasyncSync(fd);
  return emptySegment(firstId, path, fd);
}

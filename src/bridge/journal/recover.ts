/**
 * Recovery at open: what the journal directory holds after a clean stop or a crash, made consistent.
 *
 * Every segment is scanned and every record's CRC verified. A torn tail (an unfinished write) is
 * cut; a record that fails its check in a sealed segment cuts the rest of that segment (logged as an
 * error: those records are lost); a segment whose header is unreadable is moved aside as *.corrupt.
 * Segments the last checkpoint shows fully confirmed are deleted. Ids continue after the highest one
 * ever used, so an id is never handed out twice, and ids with no record left (lost, or before the
 * first segment) count as confirmed. Everything here is synchronous: open() completes before the
 * journal takes its first append.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../../util/log';
import { readAcks } from './acks';
import {
  SEGMENT_HEADER_BYTES,
  checkRecordFrame,
  decodeSegmentHeader,
  encodeSegmentHeader,
  frameSizeAt,
  parseSegmentName,
  recordIdAt,
} from './format';
import { writeFullySync } from './fs';
import { INDEX_STRIDE, createSegmentSync, emptySegment, type Segment } from './segment';

export interface RecoveredJournal {
  /** Live segments in id order; the last one is open for appending. */
  readonly segments: Segment[];
  readonly watermark: number;
  readonly confirmedAbove: number[];
  /** Id ranges with no record, lowest first. */
  readonly gaps: Array<[number, number]>;
  /** Records kept and not confirmed. */
  readonly depth: number;
  readonly records: number;
  readonly nextId: number;
  readonly deletedSegments: number;
  readonly truncatedBytes: number;
  readonly corruptSegments: string[];
}

export interface RecoverOptions {
  readonly dir: string;
  /** The directory's open descriptor, fsync'ed after files were created, cut or removed. */
  readonly dirFd: number;
  readonly sync: boolean;
  readonly logger: Pick<Logger, 'warn' | 'error'> | undefined;
}

export function recoverJournal({ dir, dirFd, sync, logger }: RecoverOptions): RecoveredJournal {
  const { watermark, confirmed } = readAcks(dir);
  const found = fs
    .readdirSync(dir)
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
    const path = join(dir, name);
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
        if (sync) fs.fdatasyncSync(fd);
        segments.push(emptySegment(firstId, path, fd));
        continue;
      }
      fs.closeSync(fd);
      fs.renameSync(path, `${path}.corrupt`);
      corruptSegments.push(name);
      corruptFirstId = Math.max(corruptFirstId, firstId);
      changed = true;
      logger?.error(
        { path },
        'outbox: segment header unreadable; moved aside as *.corrupt, its records are lost',
      );
      continue;
    }
    const segment: Segment = { ...emptySegment(firstId, path, fd), sealed: !isLast };
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
      if (sync) fs.fdatasyncSync(fd);
      truncatedBytes += fileSize - offset;
      const facts = { path, keptRecords: segment.count, cutBytes: fileSize - offset };
      if (isLast) logger?.warn(facts, 'outbox: torn tail of the last segment cut (an unfinished write)');
      else logger?.error(facts, 'outbox: corrupt record in a sealed segment; the rest of it is lost');
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
    segments.push(createSegmentSync(dir, nextId, sync));
    changed = true;
  }
  if (changed && sync) fs.fsyncSync(dirFd);

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

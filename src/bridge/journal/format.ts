/**
 * On-disk formats of the journal outbox (all integers little-endian; ids and microsecond times are
 * float64, exact up to 2^53).
 *
 * Segment file `seg-<first id, 16 digits>.log`:
 *   header (32 bytes): magic "VBOUTSEG" | f64 first id | f64 created (ms since epoch) | u32 version (1)
 *                      | u32 CRC-32 of bytes 0..28
 *   frames, back to back: u32 payload length | u32 CRC-32 of the payload | payload
 *   record payload:  u8 kind (1) | u8 flags (0) | u16 exchange length | f64 id | f64 occurredMicros
 *                    | u16 routingKey length | u16 messageId length | u16 type length
 *                    | u16 transition length | u32 body length
 *                    | exchange | routingKey | messageId | type | transition (UTF-8) | body
 *   Ids inside one segment are dense: the n-th frame carries first id + n.
 *
 * Confirmation file `acks.log`: frames as above whose payload is a checkpoint:
 *   u8 kind (2) | u8 flags (0) | u16 0 | u32 range count | f64 watermark (every id ≤ it is confirmed)
 *   | f64 written (ms since epoch) | range count × (f64 first | f64 last): confirmed ids above the
 *   watermark. Each checkpoint is complete; recovery uses the last one whose CRC holds.
 */
import type { OutboxInput, OutboxRecord } from '../outbox';
import { crc32 } from './crc32';

export const SEGMENT_MAGIC = 'VBOUTSEG';
export const SEGMENT_VERSION = 1;
export const SEGMENT_HEADER_BYTES = 32;
export const FRAME_HEADER_BYTES = 8;
export const RECORD_FIXED_BYTES = 32;
/** Largest record payload accepted (RabbitMQ's own max_message_size default is 128 MiB). */
export const MAX_PAYLOAD_BYTES = 128 * 1024 * 1024;
export const MAX_STRING_BYTES = 0xffff;
export const KIND_RECORD = 1;
export const KIND_CHECKPOINT = 2;
export const CHECKPOINT_FIXED_BYTES = 24;
/** Checkpoints keep at most this many out-of-order ranges; confirms beyond them are simply replayed. */
export const MAX_CHECKPOINT_RANGES = 4096;

const SEGMENT_NAME = /^seg-(\d{16})\.log$/;

export function segmentName(firstId: number): string {
  return `seg-${String(firstId).padStart(16, '0')}.log`;
}

/** The first id encoded in a segment file name, or undefined for other files. */
export function parseSegmentName(name: string): number | undefined {
  const match = SEGMENT_NAME.exec(name);
  return match?.[1] === undefined ? undefined : Number(match[1]);
}

export function encodeSegmentHeader(firstId: number, createdMs: number): Buffer {
  const header = Buffer.alloc(SEGMENT_HEADER_BYTES);
  header.write(SEGMENT_MAGIC, 0, 'latin1');
  header.writeDoubleLE(firstId, 8);
  header.writeDoubleLE(createdMs, 16);
  header.writeUInt32LE(SEGMENT_VERSION, 24);
  header.writeUInt32LE(crc32(header.subarray(0, 28)), 28);
  return header;
}

/** The first id a segment header declares, or undefined when the header is not valid. */
export function decodeSegmentHeader(header: Buffer): number | undefined {
  if (header.length < SEGMENT_HEADER_BYTES) return undefined;
  if (header.toString('latin1', 0, 8) !== SEGMENT_MAGIC) return undefined;
  if (header.readUInt32LE(28) !== crc32(header.subarray(0, 28))) return undefined;
  if (header.readUInt32LE(24) !== SEGMENT_VERSION) return undefined;
  return header.readDoubleLE(8);
}

/** Throws when an input cannot be journalled; returns its frame size in bytes. */
export function recordFrameBytes(input: OutboxInput): number {
  let bytes = FRAME_HEADER_BYTES + RECORD_FIXED_BYTES;
  for (const [name, value] of [
    ['exchange', input.exchange],
    ['routingKey', input.routingKey],
    ['messageId', input.messageId],
    ['type', input.type],
    ['transition', input.transition],
  ] as const) {
    if (typeof value !== 'string') throw new TypeError(`outbox record ${name} must be a string`);
    const length = Buffer.byteLength(value, 'utf8');
    if (length > MAX_STRING_BYTES) throw new RangeError(`outbox record ${name} is longer than 65535 bytes`);
    bytes += length;
  }
  if (!(input.body instanceof Uint8Array)) throw new TypeError('outbox record body must be a Buffer');
  if (typeof input.occurredMicros !== 'number' || !Number.isFinite(input.occurredMicros)) {
    throw new TypeError('outbox record occurredMicros must be a finite number');
  }
  bytes += input.body.length;
  if (bytes - FRAME_HEADER_BYTES > MAX_PAYLOAD_BYTES) throw new RangeError('outbox record exceeds 128 MiB');
  return bytes;
}

/** Writes the frame of `record` at `offset` (the caller sized `buffer`); returns the frame size. */
export function encodeRecord(buffer: Buffer, offset: number, record: OutboxRecord): number {
  const payload = offset + FRAME_HEADER_BYTES;
  let at = payload + RECORD_FIXED_BYTES;
  const exchange = buffer.write(record.exchange, at, 'utf8');
  at += exchange;
  const routingKey = buffer.write(record.routingKey, at, 'utf8');
  at += routingKey;
  const messageId = buffer.write(record.messageId, at, 'utf8');
  at += messageId;
  const type = buffer.write(record.type, at, 'utf8');
  at += type;
  const transition = buffer.write(record.transition, at, 'utf8');
  at += transition;
  buffer.set(record.body, at);
  at += record.body.length;
  buffer[payload] = KIND_RECORD;
  buffer[payload + 1] = 0;
  buffer.writeUInt16LE(exchange, payload + 2);
  buffer.writeDoubleLE(record.id, payload + 4);
  buffer.writeDoubleLE(record.occurredMicros, payload + 12);
  buffer.writeUInt16LE(routingKey, payload + 20);
  buffer.writeUInt16LE(messageId, payload + 22);
  buffer.writeUInt16LE(type, payload + 24);
  buffer.writeUInt16LE(transition, payload + 26);
  buffer.writeUInt32LE(record.body.length, payload + 28);
  const length = at - payload;
  buffer.writeUInt32LE(length, offset);
  buffer.writeUInt32LE(crc32(buffer.subarray(payload, at)), offset + 4);
  return at - offset;
}

/**
 * Checks the frame at `offset` of the `available` bytes in `buffer`: its total size when it is a
 * complete, well-formed record whose CRC holds; 0 when more bytes are needed (the frame header's
 * length says how many: see frameSizeAt); -1 when it is not a valid record.
 */
export function checkRecordFrame(buffer: Buffer, offset: number, available: number): number {
  if (available < FRAME_HEADER_BYTES) return 0;
  const length = buffer.readUInt32LE(offset);
  if (length < RECORD_FIXED_BYTES || length > MAX_PAYLOAD_BYTES) return -1;
  if (available < FRAME_HEADER_BYTES + length) return 0;
  const payload = offset + FRAME_HEADER_BYTES;
  if (buffer[payload] !== KIND_RECORD) return -1;
  const declared =
    RECORD_FIXED_BYTES +
    buffer.readUInt16LE(payload + 2) +
    buffer.readUInt16LE(payload + 20) +
    buffer.readUInt16LE(payload + 22) +
    buffer.readUInt16LE(payload + 24) +
    buffer.readUInt16LE(payload + 26) +
    buffer.readUInt32LE(payload + 28);
  if (declared !== length) return -1;
  if (crc32(buffer.subarray(payload, payload + length)) !== buffer.readUInt32LE(offset + 4)) return -1;
  return FRAME_HEADER_BYTES + length;
}

/** Total size of the frame starting at `offset` (its header must be in the buffer). */
export function frameSizeAt(buffer: Buffer, offset: number): number {
  return FRAME_HEADER_BYTES + buffer.readUInt32LE(offset);
}

export function recordIdAt(buffer: Buffer, offset: number): number {
  return buffer.readDoubleLE(offset + FRAME_HEADER_BYTES + 4);
}

export function recordMicrosAt(buffer: Buffer, offset: number): number {
  return buffer.readDoubleLE(offset + FRAME_HEADER_BYTES + 12);
}

/** Decodes the (checked) record frame at `offset`; the body is copied out of `buffer`. */
export function decodeRecord(buffer: Buffer, offset: number): OutboxRecord {
  const payload = offset + FRAME_HEADER_BYTES;
  const exchangeLength = buffer.readUInt16LE(payload + 2);
  const routingKeyLength = buffer.readUInt16LE(payload + 20);
  const messageIdLength = buffer.readUInt16LE(payload + 22);
  const typeLength = buffer.readUInt16LE(payload + 24);
  const transitionLength = buffer.readUInt16LE(payload + 26);
  const bodyLength = buffer.readUInt32LE(payload + 28);
  let at = payload + RECORD_FIXED_BYTES;
  const exchange = buffer.toString('utf8', at, (at += exchangeLength));
  const routingKey = buffer.toString('utf8', at, (at += routingKeyLength));
  const messageId = buffer.toString('utf8', at, (at += messageIdLength));
  const type = buffer.toString('utf8', at, (at += typeLength));
  const transition = buffer.toString('utf8', at, (at += transitionLength));
  const body = Buffer.allocUnsafe(bodyLength);
  buffer.copy(body, 0, at, at + bodyLength);
  return {
    id: buffer.readDoubleLE(payload + 4),
    exchange,
    routingKey,
    messageId,
    type,
    occurredMicros: buffer.readDoubleLE(payload + 12),
    transition,
    body,
  };
}

export interface Checkpoint {
  /** Every id ≤ watermark is confirmed. */
  readonly watermark: number;
  /** Confirmed ids above the watermark, as inclusive [first, last] ranges in increasing order. */
  readonly ranges: ReadonlyArray<readonly [number, number]>;
}

/** Sorted, non-adjacent inclusive ranges of a set of ids (at most MAX_CHECKPOINT_RANGES, lowest first). */
export function idRanges(ids: Iterable<number>): Array<[number, number]> {
  const sorted = Float64Array.from(ids).sort();
  const ranges: Array<[number, number]> = [];
  for (const id of sorted) {
    const last = ranges[ranges.length - 1];
    if (last && id === last[1] + 1) last[1] = id;
    else {
      if (ranges.length === MAX_CHECKPOINT_RANGES) break;
      ranges.push([id, id]);
    }
  }
  return ranges;
}

export function encodeCheckpoint(checkpoint: Checkpoint, writtenMs: number): Buffer {
  const count = Math.min(checkpoint.ranges.length, MAX_CHECKPOINT_RANGES);
  const length = CHECKPOINT_FIXED_BYTES + count * 16;
  const frame = Buffer.alloc(FRAME_HEADER_BYTES + length);
  const payload = FRAME_HEADER_BYTES;
  frame[payload] = KIND_CHECKPOINT;
  frame.writeUInt32LE(count, payload + 4);
  frame.writeDoubleLE(checkpoint.watermark, payload + 8);
  frame.writeDoubleLE(writtenMs, payload + 16);
  for (let i = 0; i < count; i += 1) {
    const [first, last] = checkpoint.ranges[i]!;
    frame.writeDoubleLE(first, payload + CHECKPOINT_FIXED_BYTES + i * 16);
    frame.writeDoubleLE(last, payload + CHECKPOINT_FIXED_BYTES + i * 16 + 8);
  }
  frame.writeUInt32LE(length, 0);
  frame.writeUInt32LE(crc32(frame.subarray(payload)), 4);
  return frame;
}

/** The last valid checkpoint in an acks file's contents, and where the valid frames end. */
export function lastCheckpoint(data: Buffer): { checkpoint: Checkpoint | undefined; validBytes: number } {
  let offset = 0;
  let checkpoint: Checkpoint | undefined;
  while (offset + FRAME_HEADER_BYTES <= data.length) {
    const length = data.readUInt32LE(offset);
    const payload = offset + FRAME_HEADER_BYTES;
    if (length < CHECKPOINT_FIXED_BYTES || payload + length > data.length) break;
    if (crc32(data.subarray(payload, payload + length)) !== data.readUInt32LE(offset + 4)) break;
    const count = data.readUInt32LE(payload + 4);
    if (data[payload] !== KIND_CHECKPOINT || length !== CHECKPOINT_FIXED_BYTES + count * 16) break;
    const ranges: Array<[number, number]> = [];
    for (let i = 0; i < count; i += 1) {
      const at = payload + CHECKPOINT_FIXED_BYTES + i * 16;
      ranges.push([data.readDoubleLE(at), data.readDoubleLE(at + 8)]);
    }
    checkpoint = { watermark: data.readDoubleLE(payload + 8), ranges };
    offset = payload + length;
  }
  return { checkpoint, validBytes: offset };
}

/**
 * The journal's options, their defaults and their checks, and what the journal reports.
 *
 * The three options an operator sets (bridge.outbox.maxBytes, segmentBytes, fsyncIntervalMs) take
 * their defaults from the configuration schema, the one place they are declared, and are checked by
 * the same rules (a positive integer; a natural number), so a JournalOutbox opened by a test or a
 * benchmark behaves as one opened from configuration. An out-of-range value is refused with a
 * RangeError naming the option, never replaced by a default behind the caller's back. cacheBytes and
 * checkpointIntervalMs are internal tuning, not configuration: their defaults live here.
 */
import { schema } from '../../config/schema';
import type { Logger } from '../../util/log';

const configured = schema.bridge.outbox;

export const OUTBOX_DEFAULTS = {
  maxBytes: configured.maxBytes.default,
  segmentBytes: configured.segmentBytes.default,
  fsyncIntervalMs: configured.fsyncIntervalMs.default,
  cacheBytes: 16 * 1024 ** 2,
  checkpointIntervalMs: 100,
} as const;

const MIN_SEGMENT_BYTES = 4096;
const MAX_SEGMENT_BYTES = 1024 ** 3;

export interface JournalOutboxOptions {
  /** Directory of the journal (created if missing); one bridge per directory, enforced by a lock. */
  readonly dir: string;
  /** Most bytes of live segment files; append() waits for confirms beyond it. Default: bridge.outbox.maxBytes. */
  readonly maxBytes?: number;
  /** A segment file is sealed and a new one started past this size, at most maxBytes/4. Default: bridge.outbox.segmentBytes. */
  readonly segmentBytes?: number;
  /** Least time between the starts of two commits (write + fdatasync). 0: commit as soon as the previous one ends. Default: bridge.outbox.fsyncIntervalMs. */
  readonly fsyncIntervalMs?: number;
  /** Bytes of recently appended records kept in memory for readAfter. Default 16 MiB. */
  readonly cacheBytes?: number;
  /** How often confirmations are checkpointed to acks.log. Default 100 ms. */
  readonly checkpointIntervalMs?: number;
  /** false skips fdatasync (benchmarks of CPU cost only: NOT crash-safe against power loss). */
  readonly sync?: boolean;
  readonly logger?: Pick<Logger, 'info' | 'warn' | 'error'>;
}

/** The options checked, defaulted and clamped. */
export interface JournalSettings {
  readonly capacity: number;
  readonly segmentBytes: number;
  readonly fsyncIntervalMs: number;
  readonly cacheBytes: number;
  readonly checkpointIntervalMs: number;
  readonly sync: boolean;
}

export function journalSettings(options: JournalOutboxOptions): JournalSettings {
  const capacity = integer(options.maxBytes, OUTBOX_DEFAULTS.maxBytes, 'maxBytes', 1);
  const segmentBytes = integer(options.segmentBytes, OUTBOX_DEFAULTS.segmentBytes, 'segmentBytes', 1);
  return {
    capacity,
    // Capped at maxBytes/4 (docs/outbox.md): space is freed a whole sealed segment at a time.
    segmentBytes: Math.max(
      MIN_SEGMENT_BYTES,
      Math.min(segmentBytes, Math.floor(capacity / 4), MAX_SEGMENT_BYTES),
    ),
    fsyncIntervalMs: integer(options.fsyncIntervalMs, OUTBOX_DEFAULTS.fsyncIntervalMs, 'fsyncIntervalMs', 0),
    cacheBytes: integer(options.cacheBytes, OUTBOX_DEFAULTS.cacheBytes, 'cacheBytes', 0),
    checkpointIntervalMs: integer(
      options.checkpointIntervalMs,
      OUTBOX_DEFAULTS.checkpointIntervalMs,
      'checkpointIntervalMs',
      0,
    ),
    sync: options.sync ?? true,
  };
}

function integer(value: number | undefined, fallback: number, name: string, min: 0 | 1): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < min)
    throw new RangeError(`outbox ${name} must be an integer >= ${min}`);
  return value;
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

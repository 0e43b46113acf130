/**
 * The order of what one instance went through, as positions: (occurred_at, boot_id, seq). Within
 * one bridge process (the same boot_id) its own sequence orders — its wall clock may step back
 * (NTP) or forward without changing what came first. Only across processes or hosts, where no
 * shared sequence exists, do wall clocks compare. A stop result's position has no boot_id (a result
 * carries none), so it compares by the bridge's wall clock.
 */
import type { EventPosition, InstanceRow } from '../store/types';
import type { LifecycleEventIn } from './validate';

export function eventPosition(event: LifecycleEventIn): EventPosition {
  return { at_us: event.occurredUs, boot_id: event.bootId, seq: event.seq };
}

/** The position of the last message applied to the row; null when none was. */
export function rowPosition(row: InstanceRow): EventPosition | null {
  if (row.event_at_us === null) return null;
  return { at_us: row.event_at_us, boot_id: row.event_boot_id, seq: row.event_seq };
}

/** True when `next` comes after `last` (always, when nothing was applied yet). */
export function isAfter(next: EventPosition, last: EventPosition | null): boolean {
  if (last === null) return true;
  if (next.boot_id !== null && next.boot_id === last.boot_id && next.seq !== null && last.seq !== null)
    return next.seq > last.seq;
  // Across processes the same microsecond is not an order: treat it as new.
  return next.at_us >= last.at_us;
}

/**
 * True when the row already reflects this message or a newer one: the same bridge process's seq,
 * otherwise occurred_at against the row's position (set by applied lifecycle messages and by
 * successful stop results).
 */
export function isNotNewer(event: LifecycleEventIn, row: InstanceRow): boolean {
  return !isAfter(eventPosition(event), rowPosition(row));
}

/** Time formats used on the wire. */

/** ISO-8601 UTC with microseconds: 2026-11-27T08:50:27.745123Z (JS Dates only carry milliseconds). */
export function isoMicros(epochMicros: number): string {
  const millis = Math.floor(epochMicros / 1000);
  const micros = Math.floor(epochMicros - millis * 1000);
  return new Date(millis).toISOString().replace('Z', `${String(micros).padStart(3, '0')}Z`);
}

/** Microseconds since the epoch, now (millisecond clock plus the monotonic clock's sub-millisecond part). */
export function nowMicros(): number {
  return Math.floor((performance.timeOrigin + performance.now()) * 1000);
}

/** Parses isoMicros() output (or any ISO string) back to epoch microseconds; NaN when invalid. */
export function parseIsoMicros(value: string): number {
  const match = /^(.*T\d{2}:\d{2}:\d{2})(?:\.(\d{1,6}))?Z$/.exec(value);
  if (!match?.[1]) return Number.NaN;
  const seconds = Date.parse(`${match[1]}Z`);
  if (Number.isNaN(seconds)) return Number.NaN;
  const fraction = (match[2] ?? '').padEnd(6, '0');
  return seconds * 1000 + Number(fraction);
}

/** oslo.messaging's timestamp: Python's str(utcnow()), "2026-08-21 21:01:48.123456" (no fraction when 0). */
export function osloTimestamp(epochMicros: number): string {
  const iso = isoMicros(epochMicros);
  const [date, rest] = iso.slice(0, -1).split('T') as [string, string];
  const [clock, fraction] = rest.split('.') as [string, string];
  return fraction === '000000' ? `${date} ${clock}` : `${date} ${clock}.${fraction}`;
}

/** Nova's notification datetime: "2026-08-21T21:01:48Z" (seconds precision). */
export function novaDateTime(epochMicros: number): string {
  return new Date(Math.floor(epochMicros / 1000)).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

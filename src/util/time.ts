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

/** The wire's UTC timestamps: what isoMicros() writes, also without or with a shorter fraction, or +00:00. */
const ISO_UTC = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(?:Z|\+00:00)$/;

/**
 * Epoch milliseconds of a UTC calendar date and time of day, or NaN unless every part is in range
 * (month 1–12, a day the month has, hour 0–23, minute and second 0–59): the date must round-trip.
 */
export function utcMillis(
  year: number,
  month: number,
  day: number,
  hour: number,
  minute: number,
  second: number,
): number {
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  date.setUTCHours(hour, minute, second, 0);
  if (
    date.getUTCFullYear() !== year ||
    date.getUTCMonth() !== month - 1 ||
    date.getUTCDate() !== day ||
    date.getUTCHours() !== hour ||
    date.getUTCMinutes() !== minute ||
    date.getUTCSeconds() !== second
  )
    return Number.NaN;
  return date.getTime();
}

/**
 * Parses isoMicros() output back to epoch microseconds: `YYYY-MM-DDTHH:MM:SS[.f{1,6}]` with `Z` or
 * `+00:00`, a date and time that exist (no February 30, no 24:00, no leap second, no expanded
 * year). NaN for anything else.
 */
export function parseIsoMicros(value: string): number {
  const match = ISO_UTC.exec(value);
  if (!match) return Number.NaN;
  const [, year, month, day, hour, minute, second, fraction] = match as unknown as [
    string,
    string,
    string,
    string,
    string,
    string,
    string,
    string | undefined,
  ];
  const millis = utcMillis(
    Number(year),
    Number(month),
    Number(day),
    Number(hour),
    Number(minute),
    Number(second),
  );
  if (Number.isNaN(millis)) return Number.NaN;
  return millis * 1000 + Number((fraction ?? '').padEnd(6, '0'));
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

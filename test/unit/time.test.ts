/**
 * Wire timestamps (src/util/time.ts): parseIsoMicros accepts what the bridge and the consumer write
 * (ISO-8601 UTC, `Z` or `+00:00`, up to microseconds) and rejects everything else, including dates
 * that do not exist.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { isoMicros, parseIsoMicros } from '../../src/util/time';

const MICROS = Date.UTC(2026, 10, 27, 8, 50, 27, 745) * 1000 + 123;

describe('parseIsoMicros', () => {
  it('accepts the wire forms', () => {
    assert.equal(parseIsoMicros('2026-11-27T08:50:27.745123Z'), MICROS);
    assert.equal(parseIsoMicros('2026-11-27T08:50:27.745123+00:00'), MICROS);
    assert.equal(parseIsoMicros('2026-11-27T08:50:27.7451Z'), MICROS - 23);
    assert.equal(parseIsoMicros('2026-11-27T08:50:27Z'), MICROS - 745123);
    assert.equal(parseIsoMicros('2024-02-29T23:59:59Z'), Date.UTC(2024, 1, 29, 23, 59, 59) * 1000);
    assert.equal(parseIsoMicros(isoMicros(MICROS)), MICROS);
  });

  for (const bad of [
    '2026-02-30T10:00:00Z',
    '2025-02-29T10:00:00Z',
    '2026-04-31T10:00:00Z',
    '2026-13-01T10:00:00Z',
    '2026-00-10T10:00:00Z',
    '2026-01-00T10:00:00Z',
    '2026-02-27T24:00:00Z',
    '2026-02-27T10:60:00Z',
    '2026-02-27T10:00:60Z',
    '+002026-02-27T10:00:00Z',
    '2026-02-27T10:00:00.1234567Z',
    '2026-02-27T10:00:00.Z',
    '2026-02-27T10:00:00',
    '2026-02-27T10:00:00+01:00',
    '2026-02-27T10:00:00-00:00',
    '2026-02-27 10:00:00Z',
    '2026-02-27T10:00Z',
    ' 2026-02-27T10:00:00Z',
    '2026-02-27T10:00:00Z\n',
    'yesterday',
    '',
  ])
    it(`rejects ${JSON.stringify(bad)}`, () => {
      assert.ok(Number.isNaN(parseIsoMicros(bad)));
    });
});

/**
 * The journal's options: defaults come from the configuration schema (one declaration) and a value
 * configuration would refuse is refused here too, naming the option, rather than silently defaulted.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig } from '../../src/config/load';
import { OUTBOX_DEFAULTS, journalSettings } from '../../src/bridge/journal/options';

describe('journal options', () => {
  it('defaults to what configuration defaults to', () => {
    const configured = loadConfig({ env: {}, skipDefaultFile: true }).bridge.outbox;
    assert.equal(OUTBOX_DEFAULTS.maxBytes, configured.maxBytes);
    assert.equal(OUTBOX_DEFAULTS.segmentBytes, configured.segmentBytes);
    assert.equal(OUTBOX_DEFAULTS.fsyncIntervalMs, configured.fsyncIntervalMs);
    const settings = journalSettings({ dir: 'unused' });
    assert.equal(settings.capacity, configured.maxBytes);
    assert.equal(settings.segmentBytes, configured.segmentBytes);
    assert.equal(settings.fsyncIntervalMs, configured.fsyncIntervalMs);
    assert.equal(settings.sync, true);
  });

  it('refuses what the schema refuses (positive-int, nat), naming the option', () => {
    for (const [option, value] of [
      ['maxBytes', 0],
      ['maxBytes', 1.5],
      ['segmentBytes', -1],
      ['fsyncIntervalMs', -1],
      ['fsyncIntervalMs', Number.NaN],
      ['cacheBytes', -5],
      ['checkpointIntervalMs', 2.5],
    ] as const) {
      assert.throws(
        () => journalSettings({ dir: 'unused', [option]: value }),
        (error: unknown) => error instanceof RangeError && error.message.includes(option),
        `${option} = ${value}`,
      );
    }
    assert.equal(journalSettings({ dir: 'unused', fsyncIntervalMs: 0 }).fsyncIntervalMs, 0);
  });

  it('caps segmentBytes at maxBytes/4 (and at least 4 KiB)', () => {
    assert.equal(
      journalSettings({ dir: 'unused', maxBytes: 64 * 1024, segmentBytes: 1 << 20 }).segmentBytes,
      16 * 1024,
    );
    assert.equal(journalSettings({ dir: 'unused', maxBytes: 8 * 1024, segmentBytes: 1 }).segmentBytes, 4096);
  });
});

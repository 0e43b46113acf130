/**
 * Operator input to the store (src/store/input.ts): `virtbus instances set` assignments and
 * `virtbus instances import` records.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { applyAssignments, normalizeTime } from '../../src/store/input';
import { rowFromInput } from '../../src/store/schema';
import type { InstanceRow } from '../../src/store/types';

const UUID = '6695eb01-f6a4-8304-79aa-97f2502e193f';

/** A row in the middle of a stop: powering-off with a pending command. */
function stopping(): InstanceRow {
  return {
    ...rowFromInput(
      {
        uuid: UUID,
        host: 'cmp-01',
        vm_state: 'active',
        task_state: 'powering-off',
        power_state: 4,
        launched_at: null,
      },
      '2026-01-01T00:00:00.000000Z',
    ),
    pending_command_id: 'c0ffee00-0000-4000-8000-000000000001',
    pending_action: 'stop',
    command_deadline_ms: 1_800_000_000_000,
  };
}

describe('instances set', () => {
  for (const value of ['rebooting', 'null', '']) {
    it(`task_state=${value} forgets the pending stop command`, () => {
      const next = applyAssignments(stopping(), [`task_state=${value}`]);
      assert.equal(next.task_state, value === 'rebooting' ? 'rebooting' : null);
      assert.deepEqual(
        [next.pending_command_id, next.pending_action, next.command_deadline_ms],
        [null, null, null],
      );
    });
  }

  it('task_state set to its current value keeps the pending stop', () => {
    const row = stopping();
    const next = applyAssignments(row, ['task_state=powering-off']);
    assert.equal(next.pending_command_id, row.pending_command_id);
    assert.equal(next.command_deadline_ms, row.command_deadline_ms);
  });

  it('other keys keep the pending stop', () => {
    const row = stopping();
    const next = applyAssignments(row, ['power_state=1', 'display_name=web']);
    assert.equal(next.pending_command_id, row.pending_command_id);
  });
});

describe('imported times', () => {
  it('normalises ISO-8601 with any offset to UTC microseconds', () => {
    assert.equal(normalizeTime('2026-08-20T10:00:30Z'), '2026-08-20T10:00:30.000000Z');
    assert.equal(normalizeTime('2026-08-20T10:00:30.5+02:00'), '2026-08-20T08:00:30.500000Z');
    assert.equal(normalizeTime('2026-08-20T01:00:00-0130'), '2026-08-20T02:30:00.000000Z');
    assert.equal(normalizeTime('2026-08-20 10:00:30'), '2026-08-20T10:00:30.000000Z');
    assert.equal(normalizeTime('2026-08-20'), '2026-08-20T00:00:00.000000Z');
  });

  for (const bad of ['2026-02-30T10:00:00Z', '2026-02-27T24:00:00+01:00', '+002026-02-27T10:00:00Z', 'soon'])
    it(`rejects ${JSON.stringify(bad)}`, () => {
      assert.equal(normalizeTime(bad), undefined);
    });
});

/**
 * The consumer writes instance.update notifications with encodeInstanceUpdate (fixed parts already
 * escaped, only the row's values serialised); buildInstanceUpdate is the readable reference. They
 * must give the same bytes for every row, clock and attribute, however odd.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { buildInstanceUpdate, encodeInstanceUpdate } from '../../src/notify/instance-update';
import type { InstanceRow } from '../../src/store/types';
import { parseInstance } from '../../src/store/input';
import { rowFromInput } from '../../src/store/schema';
import { isoMicros } from '../../src/util/time';
import { random } from '../support/random';

const STRINGS = [
  '',
  'cmp-01',
  'a "quoted" name',
  'back\\slash',
  'line\nbreak\ttab\u0001',
  'ünïcödé ✓ 😀',
  'lone \ud800 surrogate',
  '\u2028\u2029',
  '</script>',
];
const VALUES: unknown[] = [
  null,
  0,
  1.5,
  -3,
  true,
  false,
  ...STRINGS,
  [],
  ['a', 1, null],
  {},
  { nested: { deep: ['x', { y: 'z"' }] } },
  { 'nova_object.name': 'FlavorPayload', 'nova_object.data': { vcpus: 1, extra_specs: {} } },
  { id: 'f1', name: 'm1.small', ram: '2048', disk: 20, swap: '', 'os-flavor-access:is_public': false },
  512,
];
const ATTRS = [
  'display_name',
  'user_id',
  'tenant_id',
  'project_id',
  'reservation_id',
  'display_description',
  'host_name',
  'hostname',
  'node',
  'os_type',
  'architecture',
  'availability_zone',
  'flavor',
  'image_uuid',
  'key_name',
  'kernel_id',
  'ramdisk_id',
  'terminated_at',
  'deleted_at',
  'progress',
  'ip_addresses',
  'metadata',
  'locked',
  'auto_disk_config',
  'locked_reason',
  'tags',
  'memory_mb',
  'vcpus',
  'root_gb',
  'ephemeral_gb',
];
const TIMES = [
  null,
  '2026-01-01T00:00:00.000000Z',
  '2026-08-21T21:01:48.123456Z',
  '1999-12-31T23:59:59.999999Z',
  '2026-02-30T10:00:00.000000Z',
  '2026-13-01T00:00:00.000000Z',
  '2026-08-21T21:01:48Z',
  '2026-08-21T21:01:48.5Z',
  '2026-08-21T21:01:48.12345xZ',
  'not a time',
];
const VM_STATES = ['active', 'stopped', 'paused', 'soft-delete', 'weird "state"'];
const TASKS = [null, 'powering-off', 'migrating'];

function pick<T>(next: () => number, items: readonly T[]): T {
  return items[Math.floor(next() * items.length)] as T;
}

function randomRow(next: () => number, index: number): InstanceRow {
  const attrs: Record<string, unknown> = {};
  for (const key of ATTRS) if (next() < 0.3) attrs[key] = pick(next, VALUES);
  if (next() < 0.2) attrs.unrelated = pick(next, VALUES);
  return {
    uuid: `5e1f0000-0000-4000-8000-${index.toString(16).padStart(12, '0')}`,
    host: next() < 0.1 ? null : pick(next, STRINGS.slice(1)),
    vm_state: pick(next, VM_STATES),
    task_state: pick(next, TASKS),
    power_state: pick(next, [0, 1, 2, 3, 4, 6, 7, 42]),
    launched_at: pick(next, TIMES),
    created_at: pick(next, TIMES) ?? '2026-01-01T00:00:00.000000Z',
    updated_at:
      next() < 0.5 ? isoMicros(1_700_000_000_000_000 + Math.floor(next() * 1e12)) : (pick(next, TIMES) ?? ''),
    event_at_us: null,
    event_boot_id: null,
    event_seq: null,
    pending_command_id: null,
    pending_command_host: null,
    pending_action: null,
    command_deadline_ms: null,
    last_action: null,
    last_action_at: null,
    last_error: null,
    migration: null,
    attrs,
    version: 1,
  };
}

describe('instance.update wire form', () => {
  it('encodeInstanceUpdate gives exactly the bytes of the reference envelope (2,000 random rows)', () => {
    const next = random(7);
    for (let index = 0; index < 2000; index += 1) {
      const row = randomRow(next, index);
      const before = next() < 0.5 ? row : { vm_state: pick(next, VM_STATES), task_state: pick(next, TASKS) };
      const nowMicros =
        next() < 0.1
          ? Math.floor(1_780_000_000 + next() * 1e6) * 1_000_000
          : 1_780_000_000_000_000 + Math.floor(next() * 1e13);
      const ids = {
        message: `0a4e2b8e-6d0b-4b0e-9a43-${index.toString(16).padStart(12, '0')}`,
        request: `3f1c8a0e-0000-4000-8000-${index.toString(16).padStart(12, '0')}`,
        unique: `5d1c0a3f-9e2b-4c7d-a1b2-${index.toString(16).padStart(12, '0')}`,
      };
      const publisherService = next() < 0.1 ? 'nova-api' : undefined;
      const payloadVersion = next() < 0.5 ? ('2.0' as const) : ('2.1' as const);
      const options = { nowMicros, ids, payloadVersion, ...(publisherService ? { publisherService } : {}) };
      const reference = JSON.stringify(buildInstanceUpdate(row, before, options).envelope);
      const encoded = encodeInstanceUpdate(row, before, options);
      assert.equal(encoded.body.toString('utf8'), reference, `row ${index}`);
      assert.equal(encoded.messageId, ids.message);
    }
  });

  it('the clock: whole seconds without a fraction, the month start, many calls within one second', () => {
    const ids = { message: 'm', request: 'r', unique: 'u-1' };
    const row = randomRow(random(1), 1);
    for (const nowMicros of [
      Date.UTC(2026, 0, 1) * 1000,
      Date.UTC(2026, 0, 31, 23, 59, 59) * 1000 + 999_999,
      Date.UTC(2026, 1, 1) * 1000 + 1,
      Date.UTC(2026, 1, 1) * 1000 + 1.7,
      Date.UTC(2028, 1, 29, 12) * 1000 + 500_000,
    ])
      assert.equal(
        encodeInstanceUpdate(row, row, { nowMicros, ids }).body.toString('utf8'),
        JSON.stringify(buildInstanceUpdate(row, row, { nowMicros, ids }).envelope),
      );
  });
});

/** An imported row, as `virtbus instances import` stores it. */
function parseRow(record: Record<string, unknown>): InstanceRow {
  return rowFromInput(parseInstance('test', record), '2026-11-27T08:00:00.000000Z');
}

const OPTIONS = {
  nowMicros: Date.UTC(2026, 10, 27, 9) * 1000,
  ids: { message: 'm', request: 'r', unique: 'u' },
};

/** The payload's nova_object.data of a wire body. */
function payloadData(body: string): Record<string, unknown> {
  const envelope = JSON.parse(body) as { 'oslo.message': string };
  const inner = JSON.parse(envelope['oslo.message']) as {
    payload: { 'nova_object.data': Record<string, unknown> };
  };
  return inner.payload['nova_object.data'];
}

describe('instance.update datetimes', () => {
  it("created_at, launched_at, terminated_at and deleted_at all in Nova's datetime format", () => {
    const row = parseRow({
      uuid: '6695eb01-f6a4-8304-79aa-97f2502e193f',
      host: 'cmp-01',
      vm_state: 'deleted',
      power_state: 4,
      launched_at: '2026-08-20T10:00:30.5+02:00',
      created_at: '2026-08-19 12:00:00',
      terminated_at: '2026-08-21T10:00:00.123456Z',
      deleted_at: '2026-08-21T12:00:01+02:00',
    });
    for (const body of [
      JSON.stringify(buildInstanceUpdate(row, row, OPTIONS).envelope),
      encodeInstanceUpdate(row, row, OPTIONS).body.toString('utf8'),
    ]) {
      const data = payloadData(body);
      assert.deepEqual(
        [data.created_at, data.launched_at, data.terminated_at, data.deleted_at],
        ['2026-08-19T12:00:00Z', '2026-08-20T08:00:30Z', '2026-08-21T10:00:00Z', '2026-08-21T10:00:01Z'],
      );
    }
  });

  it('a datetime attribute stored unnormalised (before imports normalised it) is formatted too', () => {
    const row = parseRow({ uuid: '6695eb01-f6a4-8304-79aa-97f2502e193f', host: 'cmp-01' });
    const raw = { ...row, attrs: { terminated_at: '2026-08-21 10:00:00', deleted_at: 'garbage' } };
    const data = payloadData(encodeInstanceUpdate(raw, raw, OPTIONS).body.toString('utf8'));
    assert.deepEqual([data.terminated_at, data.deleted_at], ['2026-08-21T10:00:00Z', null]);
  });
});

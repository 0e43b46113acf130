/**
 * src/consumer/validate.ts on its own: what reaches Nova's decisions and, for everything else, the
 * reason the message is dead-lettered with (docs/message-format.md). One case per rule, so a reader
 * sees which field each refusal names. (The bounded sync_end list, libvirt codes and command-id
 * rules: handler-validate.test.ts.)
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { validateCommandResult, validateLifecycle } from '../../src/consumer/validate';

const NOW_US = Date.UTC(2026, 5, 1) * 1000;
const AT = '2026-06-01T00:00:00.000000Z';
const SKEW_MS = 60_000;

function body(record: unknown): Buffer {
  return Buffer.from(JSON.stringify(record));
}

function lifecycle(fields: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    schema: 'virtbus.lifecycle/1',
    event_id: randomUUID(),
    host: 'cmp-a',
    instance_uuid: randomUUID(),
    transition: 'stopped',
    power_state: 4,
    occurred_at: AT,
    seq: 7,
    boot_id: randomUUID(),
    ...fields,
  };
}

function refusedLifecycle(record: unknown): string {
  const result = validateLifecycle(Buffer.isBuffer(record) ? record : body(record), NOW_US, SKEW_MS);
  assert.ok(!result.ok, 'refused');
  return result.reason;
}

describe('validate: lifecycle messages', () => {
  it('a valid message: times parsed to µs, the UUID lower-cased, extra fields ignored', () => {
    const uuid = randomUUID().toUpperCase();
    const result = validateLifecycle(
      body(lifecycle({ instance_uuid: uuid, future_field: 1 })),
      NOW_US,
      SKEW_MS,
    );
    assert.ok(result.ok);
    assert.equal(result.value.instanceUuid, uuid.toLowerCase());
    assert.equal(result.value.occurredUs, NOW_US);
    assert.equal(result.value.transition, 'stopped');
    assert.equal(result.value.powerState, 4);
    assert.equal(result.value.snapshot, undefined);
    assert.equal(result.value.libvirt, null);
  });

  it('a null power_state (the bridge could not read it) is valid', () => {
    const result = validateLifecycle(body(lifecycle({ power_state: null })), NOW_US, SKEW_MS);
    assert.ok(result.ok);
    assert.equal(result.value.powerState, null);
  });

  it('a snapshot without taken_at counts as taken when it occurred', () => {
    const result = validateLifecycle(
      body(lifecycle({ transition: 'sync', snapshot: { id: 's1', reason: 'start', count: 1 } })),
      NOW_US,
      SKEW_MS,
    );
    assert.ok(result.ok);
    assert.deepEqual(result.value.snapshot, { id: 's1', takenUs: NOW_US });
  });

  const refusals: Array<[string, unknown, RegExp]> = [
    ['not UTF-8', Buffer.from([0xff, 0xfe, 0x00]), /^body is not UTF-8$/],
    ['not JSON', Buffer.from('{"schema":'), /^body is not JSON: /],
    ['not an object', [1, 2], /^the message is not a JSON object$/],
    ['no schema', lifecycle({ schema: undefined }), /^missing field schema$/],
    [
      'another schema',
      lifecycle({ schema: 'virtbus.lifecycle/2' }),
      /^unknown schema "virtbus\.lifecycle\/2"/,
    ],
    ['no host', lifecycle({ host: undefined }), /^missing field host$/],
    ['an empty host', lifecycle({ host: '' }), /^field host: empty$/],
    ['a numeric host', lifecycle({ host: 7 }), /^field host: expected a string, got 7$/],
    ['a host over 255 characters', lifecycle({ host: 'h'.repeat(256) }), /^field host: longer than 255/],
    [
      'an unknown transition',
      lifecycle({ transition: 'exploded' }),
      /^field transition: unknown transition "exploded"/,
    ],
    ['no instance_uuid', lifecycle({ instance_uuid: undefined }), /^missing field instance_uuid$/],
    ['a malformed instance_uuid', lifecycle({ instance_uuid: 'vm-1' }), /^field instance_uuid: not a UUID/],
    [
      'an instance_uuid in sync_end',
      lifecycle({ transition: 'sync_end' }),
      /^field instance_uuid: must be null/,
    ],
    ['no power_state', lifecycle({ power_state: undefined }), /^missing field power_state$/],
    [
      'a power_state Nova has no code for',
      lifecycle({ power_state: 2 }),
      /^field power_state: 2 is not a Nova power_state code/,
    ],
    [
      'an occurred_at that is no time',
      lifecycle({ occurred_at: 'yesterday' }),
      /^field occurred_at: not an ISO-8601 UTC time/,
    ],
    ['an occurred_at before 2000', lifecycle({ occurred_at: '1999-12-31T23:59:59Z' }), /is before 2000$/],
    [
      'an occurred_at beyond the clock skew',
      lifecycle({ occurred_at: '2026-06-01T00:02:00Z' }),
      /in the future beyond the allowed clock skew$/,
    ],
    ['no seq', lifecycle({ seq: undefined }), /^missing field seq$/],
    ['a negative seq', lifecycle({ seq: -1 }), /^field seq: expected a non-negative integer, got -1$/],
    ['a fractional seq', lifecycle({ seq: 1.5 }), /^field seq: expected a non-negative integer/],
    ['no boot_id', lifecycle({ boot_id: undefined }), /^missing field boot_id$/],
    ['a snapshot that is no object', lifecycle({ snapshot: 'x' }), /^field snapshot is not a JSON object$/],
    [
      'sync_end without a snapshot',
      lifecycle({ transition: 'sync_end', instance_uuid: null, instance_uuids: [] }),
      /^sync_end without snapshot$/,
    ],
    [
      'sync_end without its list',
      lifecycle({ transition: 'sync_end', instance_uuid: null, snapshot: { id: 's' } }),
      /^field instance_uuids: expected an array, got missing$/,
    ],
    [
      'sync_end listing a non-UUID',
      lifecycle({
        transition: 'sync_end',
        instance_uuid: null,
        snapshot: { id: 's' },
        instance_uuids: ['x'],
      }),
      /^field instance_uuids\[0\]: not a UUID/,
    ],
  ];
  for (const [what, record, reason] of refusals)
    it(`refuses ${what}`, () => {
      assert.match(refusedLifecycle(record), reason);
    });
});

describe('validate: stop-command results', () => {
  function result(fields: Record<string, unknown> = {}): Buffer {
    return body({
      schema: 'virtbus.command-result/1',
      command_id: randomUUID(),
      action: 'force_stop',
      host: 'cmp-a',
      instance_uuid: randomUUID(),
      outcome: 'stopped',
      method: 'destroy',
      power_state: 4,
      error: null,
      finished_at: AT,
      ...fields,
    });
  }

  it('a valid result, with finished_at as the bridge’s µs', () => {
    const validated = validateCommandResult(result(), NOW_US, SKEW_MS);
    assert.ok(validated.ok);
    assert.equal(validated.value.action, 'force_stop');
    assert.equal(validated.value.outcome, 'stopped');
    assert.equal(validated.value.method, 'destroy');
    assert.equal(validated.value.finishedUs, NOW_US);
  });

  it('every outcome a bridge sends is accepted', () => {
    for (const outcome of [
      'stopped',
      'already_stopped',
      'failed',
      'expired',
      'refused',
      'skipped',
      'not_found',
    ])
      assert.ok(validateCommandResult(result({ outcome }), NOW_US, SKEW_MS).ok, outcome);
  });

  it('a missing method reads as none; a missing finished_at as no position; a long error is cut to 1000', () => {
    const validated = validateCommandResult(
      result({ method: undefined, finished_at: undefined, error: 'e'.repeat(5000), outcome: 'failed' }),
      NOW_US,
      SKEW_MS,
    );
    assert.ok(validated.ok);
    assert.equal(validated.value.method, 'none');
    assert.equal(validated.value.finishedUs, null);
    assert.equal(validated.value.error?.length, 1000);
  });

  const refusals: Array<[string, Record<string, unknown>, RegExp]> = [
    ['another schema', { schema: 'virtbus.command/1' }, /^unknown schema "virtbus\.command\/1"/],
    ['an unknown action', { action: 'reboot' }, /^field action: unknown action "reboot"$/],
    ['an unknown outcome', { outcome: 'exploded' }, /^field outcome: unknown outcome "exploded"$/],
    ['no power_state', { power_state: undefined }, /^missing field power_state$/],
    [
      'a power_state Nova has no code for',
      { power_state: 5 },
      /^field power_state: 5 is not a Nova power_state code/,
    ],
    ['a numeric error', { error: 3 }, /^field error: expected a string or null, got 3$/],
    ['a malformed instance_uuid', { instance_uuid: 'vm-1' }, /^field instance_uuid: not a UUID/],
    ['no host', { host: undefined }, /^missing field host$/],
    [
      'a finished_at beyond the clock skew',
      { finished_at: '2026-06-01T00:02:00Z' },
      /^field finished_at: .* in the future/,
    ],
  ];
  for (const [what, fields, reason] of refusals)
    it(`refuses ${what}`, () => {
      const validated = validateCommandResult(result(fields), NOW_US, SKEW_MS);
      assert.ok(!validated.ok);
      assert.match(validated.reason, reason);
    });
});

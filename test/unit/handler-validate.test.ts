/**
 * What the consumer's validation lets through to the handler, for the fields the handler's newer
 * decisions read: the bounded sync_end list, the libvirt codes (a migration's detail), UUID command
 * ids in results.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { MAX_SNAPSHOT, validateCommandResult, validateLifecycle } from '../../src/consumer/validate';

const NOW_US = Date.UTC(2026, 5, 1) * 1000;
const AT = '2026-06-01T00:00:00.000000Z';

function lifecycle(fields: Record<string, unknown>): Buffer {
  return Buffer.from(
    JSON.stringify({
      schema: 'virtbus.lifecycle/1',
      event_id: randomUUID(),
      host: 'cmp-a',
      instance_uuid: randomUUID(),
      transition: 'started',
      power_state: 1,
      occurred_at: AT,
      seq: 7,
      boot_id: randomUUID(),
      ...fields,
    }),
  );
}

function syncEnd(count: number): Buffer {
  const uuid = randomUUID();
  return lifecycle({
    transition: 'sync_end',
    instance_uuid: null,
    power_state: null,
    snapshot: { id: randomUUID(), reason: 'periodic', count, taken_at: AT },
    instance_uuids: new Array<string>(count).fill(uuid),
  });
}

describe('validate: lifecycle fields the handler reads', () => {
  it(`sync_end lists at most ${MAX_SNAPSHOT} domains; a longer one is refused with its reason`, () => {
    assert.equal(MAX_SNAPSHOT, 100_000);
    assert.ok(validateLifecycle(syncEnd(MAX_SNAPSHOT), NOW_US, 60_000).ok);
    const over = validateLifecycle(syncEnd(MAX_SNAPSHOT + 1), NOW_US, 60_000);
    assert.ok(!over.ok);
    assert.equal(over.reason, 'field instance_uuids: more than 100000 entries');
  });

  it('carries the libvirt event and detail codes (a migration tells itself by them)', () => {
    const value = validateLifecycle(
      lifecycle({ libvirt: { event: 'STARTED', detail: 'MIGRATED', event_code: 2, detail_code: 1 } }),
      NOW_US,
      60_000,
    );
    assert.ok(value.ok);
    assert.deepEqual(value.value.libvirt, { eventCode: 2, detailCode: 1 });
    const none = validateLifecycle(lifecycle({ libvirt: null }), NOW_US, 60_000);
    assert.ok(none.ok);
    assert.equal(none.value.libvirt, null);
    const reboot = validateLifecycle(
      lifecycle({
        transition: 'rebooted',
        libvirt: { event: 'REBOOT', detail: null, event_code: -1, detail_code: null },
      }),
      NOW_US,
      60_000,
    );
    assert.ok(reboot.ok);
    assert.deepEqual(reboot.value.libvirt, { eventCode: -1, detailCode: null });
  });

  it('refuses ill-typed libvirt codes', () => {
    const bad = validateLifecycle(
      lifecycle({ libvirt: { event_code: 'STARTED', detail_code: 1 } }),
      NOW_US,
      60_000,
    );
    assert.ok(!bad.ok);
    assert.match(bad.reason, /^field libvirt\.event_code: expected an integer/);
    const detail = validateLifecycle(
      lifecycle({ libvirt: { event_code: 2, detail_code: 1.5 } }),
      NOW_US,
      60_000,
    );
    assert.ok(!detail.ok);
    assert.match(detail.reason, /^field libvirt\.detail_code: expected an integer or null/);
  });
});

describe('validate: command results', () => {
  const result = (commandId: unknown): Buffer =>
    Buffer.from(
      JSON.stringify({
        schema: 'virtbus.command-result/1',
        command_id: commandId,
        action: 'stop',
        host: 'cmp-a',
        instance_uuid: randomUUID(),
        outcome: 'stopped',
        method: 'shutdown',
        power_state: 4,
        error: null,
        finished_at: AT,
      }),
    );

  it('command_id must be a UUID (lower-cased as the consumer stores its own)', () => {
    const id = randomUUID();
    const ok = validateCommandResult(result(id.toUpperCase()), NOW_US, 60_000);
    assert.ok(ok.ok);
    assert.equal(ok.value.commandId, id);
    for (const bad of ['c', 'x'.repeat(300), 42, null]) {
      const refused = validateCommandResult(result(bad), NOW_US, 60_000);
      assert.ok(!refused.ok, String(bad));
      assert.match(refused.reason, /^field command_id: not a UUID/);
    }
  });
});

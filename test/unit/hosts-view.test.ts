/**
 * The hosts view's pure parts: when a host counts as silent (the overdue bound of two periodic
 * intervals, running rows), the maintenance switch and its expiry, `--until` parsing, the optional
 * snapshot.interval_seconds on the wire, the keeper's merging of what a batch showed, and the
 * handler withholding stop and force_stop for a host in maintenance (and only for it).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Registry } from 'prom-client';
import { parseUntil } from '../../src/cli/commands/hosts';
import { UsageError } from '../../src/cli/usage';
import { hostState, hostViews } from '../../src/consumer/host-status';
import { HostsKeeper } from '../../src/consumer/hosts';
import { MaintenanceView, maintenanceActive } from '../../src/consumer/maintenance';
import { createConsumerMetrics } from '../../src/consumer/metrics';
import { validateLifecycle } from '../../src/consumer/validate';
import { buildLifecycleMessage } from '../../src/messages/lifecycle';
import type { HostObservation, HostRecord, HostStore, Maintenance } from '../../src/store/hosts-types';
import { createLogger } from '../../src/util/log';
import { isoMicros } from '../../src/util/time';
import { Bridge, rig } from './handler-kit';

const NOW = 1_800_000_000_000_000;
const S = 1e6;

function record(
  takenAgoS: number | null,
  interval: number | null,
  extra: Partial<HostRecord> = {},
): HostRecord {
  return {
    host: 'cmp-a',
    lastEventUs: NOW - S,
    lastSeenUs: NOW - S,
    bootId: 'b',
    snapshot:
      takenAgoS === null
        ? null
        : { id: 's', takenUs: NOW - takenAgoS * S, seenUs: NOW, bootId: 'b', intervalSeconds: interval },
    maintenance: null,
    ...extra,
  };
}

describe('hosts view: silent hosts', () => {
  it('ok up to two intervals, silent beyond while guests run, overdue when none do', () => {
    assert.equal(hostState(record(1200, 600), 3, NOW), 'ok', 'exactly two intervals: not yet');
    assert.equal(hostState(record(1201, 600), 3, NOW), 'silent');
    assert.equal(hostState(record(1201, 600), 0, NOW), 'overdue');
  });

  it('unknown without a snapshot, without an announced interval, or with periodic snapshots off', () => {
    assert.equal(hostState(undefined, 3, NOW), 'unknown');
    assert.equal(hostState(record(null, null), 3, NOW), 'unknown');
    assert.equal(hostState(record(99999, null), 3, NOW), 'unknown');
    assert.equal(hostState(record(99999, 0), 3, NOW), 'unknown');
  });

  it('lists hosts with rows but no messages too, rows by power-state name, deleted excluded upstream', () => {
    const views = hostViews(
      [record(10, 600)],
      [
        { host: 'cmp-a', powerState: 1, count: 2 },
        { host: 'cmp-a', powerState: 4, count: 1 },
        { host: 'cmp-b', powerState: 1, count: 5 },
      ],
      NOW,
    );
    assert.deepEqual(
      views.map((view) => [view.host, view.state, view.rows, view.snapshotAgeSeconds]),
      [
        ['cmp-a', 'ok', { running: 2, shutdown: 1 }, 10],
        ['cmp-b', 'unknown', { running: 5 }, null],
      ],
    );
  });
});

describe('hosts view: maintenance switch', () => {
  const on = (untilUs: number | null): Maintenance => ({ reason: 'r', sinceUs: NOW - S, untilUs, by: null });

  it('is on until it expires', () => {
    assert.equal(maintenanceActive(on(null), NOW), true);
    assert.equal(maintenanceActive(on(NOW + 1), NOW), true);
    assert.equal(maintenanceActive(on(NOW), NOW), false);
    assert.equal(maintenanceActive(null, NOW), false);
    const view = new MaintenanceView();
    view.update([record(1, 600, { maintenance: on(NOW + S) }), { ...record(1, 600), host: 'cmp-b' }]);
    assert.equal(view.check('cmp-a', NOW)?.reason, 'r');
    assert.equal(view.check('cmp-a', NOW + S), undefined, 'expired');
    assert.equal(view.check('cmp-b', NOW), undefined);
    assert.equal(view.check(null, NOW), undefined);
    view.update([]);
    assert.equal(view.check('cmp-a', NOW), undefined, 'enabled again');
  });

  it('--until takes a duration or a zoned ISO-8601 time in the future', () => {
    assert.equal(parseUntil('90m', NOW), NOW + 90 * 60 * S);
    assert.equal(parseUntil('2d', NOW), NOW + 2 * 86400 * S);
    assert.equal(parseUntil('2027-06-15T06:00:00Z', NOW), Date.parse('2027-06-15T06:00:00Z') * 1000);
    assert.equal(parseUntil('2027-06-15T07:00:00+01:00', NOW), Date.parse('2027-06-15T06:00:00Z') * 1000);
    assert.throws(() => parseUntil('2027-06-15T06:00:00', NOW), UsageError, 'no zone');
    assert.throws(() => parseUntil('2020-01-01T00:00:00Z', NOW), /in the past/);
    assert.throws(() => parseUntil('soon', NOW), UsageError);
    assert.throws(() => parseUntil('0m', NOW), /in the past/);
  });
});

describe('hosts view: snapshot.interval_seconds on the wire', () => {
  const body = (snapshot: Record<string, unknown>): Buffer => {
    const message = buildLifecycleMessage({
      host: 'cmp-a',
      instanceUuid: null,
      domainName: null,
      transition: 'sync_end',
      libvirt: null,
      powerState: null,
      occurredMicros: NOW,
      publishedMicros: NOW,
      delayedMs: 0,
      seq: 1,
      bootId: 'b',
      snapshot: { id: 's', reason: 'periodic', count: 0, taken_at: isoMicros(NOW) },
      instanceUuids: [],
    });
    return Buffer.from(JSON.stringify({ ...message, snapshot: { ...message.snapshot, ...snapshot } }));
  };

  it('is read when present, optional, and a bad one is a reason', () => {
    const read = validateLifecycle(body({ interval_seconds: 600 }), NOW, 60000);
    assert.ok(read.ok);
    assert.equal(read.value.snapshot?.intervalSeconds, 600);
    const without = validateLifecycle(body({}), NOW, 60000);
    assert.ok(without.ok);
    assert.equal(without.value.snapshot?.intervalSeconds, undefined);
    for (const bad of [-1, 1.5, '600']) {
      const refused = validateLifecycle(body({ interval_seconds: bad }), NOW, 60000);
      assert.ok(!refused.ok);
      assert.match(refused.reason, /snapshot\.interval_seconds/);
    }
  });
});

describe('hosts view: the keeper', () => {
  it('merges a batch per host (newest event and boot_id, applied sync_end only) and keeps a failed flush', async () => {
    const flushed: HostObservation[][] = [];
    let fail = true;
    const store: HostStore = {
      record: (observations) => {
        if (fail) return Promise.reject(new Error('database down'));
        flushed.push([...observations]);
        return Promise.resolve();
      },
      list: () => Promise.resolve([]),
      powerCounts: () => Promise.resolve([]),
      setMaintenance: () => Promise.resolve(true),
    };
    let clock = NOW;
    const keeper = new HostsKeeper({
      store,
      metrics: createConsumerMetrics(new Registry()).hosts,
      logger: createLogger('silent', 'test'),
      intervalMs: 1000,
      now: () => clock,
    });
    const old = new Bridge('cmp-a');
    const fresh = new Bridge('cmp-a');
    const applied = {
      ...fresh.syncEnd([]),
      snapshot: { id: 'good', takenUs: fresh.clockUs, intervalSeconds: 60 },
    };
    const failed = { ...fresh.syncEnd([]), snapshot: { id: 'failed', takenUs: fresh.clockUs + 5 } };
    const older = old.event('u', 'started', 1);
    keeper.observe(
      [
        { kind: 'lifecycle', event: applied },
        { kind: 'lifecycle', event: failed },
        { kind: 'lifecycle', event: { ...older, occurredUs: 1 } },
      ],
      [
        { ok: true, outcome: 'sync_end', published: undefined },
        { ok: false, error: new Error('x') },
        { ok: true, outcome: 'synced', published: undefined },
      ],
    );
    await keeper.tick();
    assert.equal(flushed.length, 0, 'the flush failed');
    fail = false;
    clock += 5;
    await keeper.tick();
    assert.equal(flushed.length, 1);
    const [seen] = flushed[0] ?? [];
    assert.equal(seen?.host, 'cmp-a');
    assert.equal(seen?.bootId, fresh.bootId, 'boot_id of the newest event');
    assert.equal(seen?.lastEventUs, failed.occurredUs);
    assert.deepEqual(seen?.snapshot, {
      id: 'good',
      takenUs: applied.snapshot.takenUs,
      seenUs: NOW,
      bootId: fresh.bootId,
      intervalSeconds: 60,
    });
    await keeper.tick();
    assert.equal(flushed.length, 1, 'nothing new: nothing flushed');
  });
});

describe('hosts view: the handler in maintenance', () => {
  const inMaintenance = (host: string | null): Maintenance | undefined =>
    host === 'cmp-a' ? { reason: 'r', sinceUs: 0, untilUs: null, by: null } : undefined;

  it('records the power state but withholds stop and force_stop for the host, and only for it', async () => {
    const r = rig({ maintenance: inMaintenance });
    const a = new Bridge('cmp-a');
    const b = new Bridge('cmp-b');
    const down = r.instance('cmp-a');
    const risen = r.instance('cmp-a', { vm_state: 'stopped', power_state: 4 });
    const elsewhere = r.instance('cmp-b');
    assert.equal(await r.handler.handleLifecycle(a.event(down, 'stopped', 4)), 'synced');
    assert.equal(await r.handler.handleLifecycle(a.event(risen, 'started', 1)), 'synced');
    assert.equal(await r.handler.handleLifecycle(b.event(elsewhere, 'stopped', 4)), 'synced');
    assert.deepEqual(
      r.commands.map((command) => [command.instance_uuid, command.action]),
      [[elsewhere, 'stop']],
    );
    const downRow = r.store.row(down);
    assert.deepEqual(
      [downRow.vm_state, downRow.task_state, downRow.power_state, downRow.last_action],
      ['active', null, 4, 'maintenance_stop'],
    );
    const risenRow = r.store.row(risen);
    assert.deepEqual(
      [risenRow.vm_state, risenRow.task_state, risenRow.power_state, risenRow.last_action],
      ['stopped', null, 1, 'maintenance_force_stop'],
    );
    assert.equal(await r.actions('maintenance_stop_withheld'), 2);
  });
});

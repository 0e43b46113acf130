/**
 * Migration following, broker-free: the row moves to the destination only when both hosts agree,
 * in any delivery order, with one instance.update and never a stop or force_stop; one host's word
 * alone never moves it (a host claiming another's guest), holds back stops only for the window, and
 * a failed migration returns the row to normal sync.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { LifecycleEventIn } from '../../src/consumer/validate';
import { Bridge, resultFor, rig } from './handler-kit';

/** libvirt detail codes (libvirt-domain.h). */
const STARTED_MIGRATED = 1;
const SUSPENDED_MIGRATED = 1;
const SUSPENDED_POSTCOPY = 7;
const RESUMED_MIGRATED = 1;
const RESUMED_POSTCOPY = 3;
const STOPPED_MIGRATED = 3;
const STOPPED_FAILED = 5;

function permutations<T>(items: readonly T[]): T[][] {
  if (items.length <= 1) return [items.slice()];
  return items.flatMap((item, index) =>
    permutations([...items.slice(0, index), ...items.slice(index + 1)]).map((rest) => [item, ...rest]),
  );
}

/** Every merge of two hosts' streams that keeps each host's own order (one queue per bridge is FIFO). */
function interleavings<T>(a: readonly T[], b: readonly T[]): T[][] {
  if (a.length === 0) return [b.slice()];
  if (b.length === 0) return [a.slice()];
  const [headA, ...restA] = a as [T, ...T[]];
  const [headB, ...restB] = b as [T, ...T[]];
  return [
    ...interleavings(restA, b).map((rest) => [headA, ...rest]),
    ...interleavings(a, restB).map((rest) => [headB, ...rest]),
  ];
}

/** A pre-copy live migration A → B as QEMU 7.2 / libvirt 9.0 tells it (persistent source domain). */
function precopy(uuid: string, a: Bridge, b: Bridge): LifecycleEventIn[] {
  return [
    a.event(uuid, 'paused', 3, SUSPENDED_MIGRATED),
    b.event(uuid, 'started', 3, STARTED_MIGRATED),
    b.event(uuid, 'resumed', 1, RESUMED_MIGRATED),
    // A snapshot while the bridge holds the STOPPED lists the persistent domain shut off.
    a.event(uuid, 'sync', 4),
    a.event(uuid, 'stopped', 4, STOPPED_MIGRATED),
  ];
}

describe('handler: live migration', () => {
  it("every interleaving of the two hosts' messages in a pre-copy migration moves the row once and commands nothing", async () => {
    // One host's messages reach the consumer in its order (one queue, FIFO; a redelivered one is
    // older and ignored); the two hosts' streams interleave in every way, the destination's even
    // out of its own order.
    const orders = permutations([0, 1, 2, 3, 4]).filter(
      (order) => order.filter((index) => index === 0 || index === 3 || index === 4).join() === '0,3,4',
    );
    assert.equal(orders.length, 20);
    for (const order of orders) {
      const r = rig();
      const uuid = r.instance('cmp-a');
      const events = precopy(uuid, new Bridge('cmp-a'), new Bridge('cmp-b'));
      for (const index of order) await r.handler.handleLifecycle(events[index] as LifecycleEventIn);
      const row = r.store.row(uuid);
      const label = `order ${order.join(',')}`;
      assert.equal(row.host, 'cmp-b', label);
      assert.equal(row.power_state, 1, label);
      assert.equal(row.vm_state, 'active', label);
      assert.equal(row.task_state, null, label);
      assert.equal(row.migration, null, label);
      assert.deepEqual(r.commands, [], label);
      assert.equal(await r.actions('migration_followed'), 1, label);
      assert.deepEqual(r.updates, [{ uuid, host: 'cmp-b', power_state: 'running' }], label);
    }
  });

  it('the destination late (real QEMU): its paused STARTED and paused snapshot are evidence only; one update, running, on B', async () => {
    // As test/qemu/migration.test.ts saw it: B's messages held back arrive in one burst — STARTED
    // MIGRATED (the incoming domain is paused: live 3), a snapshot taken before the switchover
    // listing it PAUSED, RESUMED MIGRATED (1), a snapshot listing it RUNNING. Every merge with A's
    // stream (paused, stopped MIGRATED, a snapshot listing the persistent domain shut off).
    // The real run saw B's PAUSED snapshot dispatched just before its STARTED: both B orders.
    const bOrders = [
      ['b0', 'b1', 'b2', 'b3'],
      ['b1', 'b0', 'b2', 'b3'],
    ];
    let runs = 0;
    for (const delivery of bOrders.flatMap((bOrder) => interleavings(['a0', 'a1', 'a2'], bOrder))) {
      const r = rig();
      const uuid = r.instance('cmp-a');
      const a = new Bridge('cmp-a');
      const b = new Bridge('cmp-b');
      const bFirst = delivery.indexOf('b1') < delivery.indexOf('b0');
      const pausedSnapshotFirst = bFirst ? b.event(uuid, 'sync', 3) : undefined;
      const events: Record<string, LifecycleEventIn> = {
        b0: b.event(uuid, 'started', 3, STARTED_MIGRATED),
        a0: a.event(uuid, 'paused', 3, SUSPENDED_MIGRATED),
        b1: pausedSnapshotFirst ?? b.event(uuid, 'sync', 3),
        b2: b.event(uuid, 'resumed', 1, RESUMED_MIGRATED),
        a1: a.event(uuid, 'stopped', 4, STOPPED_MIGRATED),
        a2: a.event(uuid, 'sync', 4),
        b3: b.event(uuid, 'sync', 1),
      };
      for (const key of delivery) await r.handler.handleLifecycle(events[key] as LifecycleEventIn);
      const label = `delivery ${delivery.join(',')}`;
      const row = r.store.row(uuid);
      assert.equal(row.host, 'cmp-b', label);
      assert.equal(row.power_state, 1, label);
      assert.equal(row.vm_state, 'active', label);
      assert.equal(row.task_state, null, label);
      assert.deepEqual(r.commands, [], label);
      assert.equal(await r.actions('migration_followed'), 1, label);
      assert.deepEqual(
        r.updates.filter((update) => update.host === 'cmp-b'),
        [{ uuid, host: 'cmp-b', power_state: 'running' }],
        label,
      );
      runs += 1;
    }
    assert.equal(runs, 70);
  });

  it('the destination late, source already gone: STARTED MIGRATED (paused) does not move the row, RESUMED does', async () => {
    const r = rig();
    const uuid = r.instance('cmp-a');
    const a = new Bridge('cmp-a');
    const b = new Bridge('cmp-b');
    const started = b.event(uuid, 'started', 3, STARTED_MIGRATED);
    const pausedSnapshot = b.event(uuid, 'sync', 3);
    const resumed = b.event(uuid, 'resumed', 1, RESUMED_MIGRATED);
    const runningSnapshot = b.event(uuid, 'sync', 1);
    await r.handler.handleLifecycle(a.event(uuid, 'paused', 3, SUSPENDED_MIGRATED));
    await r.handler.handleLifecycle(a.event(uuid, 'stopped', 4, STOPPED_MIGRATED));
    assert.equal(await r.handler.handleLifecycle(started), 'migrating');
    assert.equal(r.store.row(uuid).host, 'cmp-a');
    assert.equal(r.store.row(uuid).migration?.dest, 'cmp-b');
    assert.equal(await r.handler.handleLifecycle(pausedSnapshot), 'skipped_host');
    assert.equal(await r.handler.handleLifecycle(resumed), 'migrated');
    assert.equal(await r.handler.handleLifecycle(runningSnapshot), 'synced');
    assert.deepEqual(r.updates, [{ uuid, host: 'cmp-b', power_state: 'running' }]);
    assert.deepEqual(r.commands, []);
  });

  it('a destination RESUMED whose live power_state is not running is evidence only', async () => {
    const r = rig();
    const uuid = r.instance('cmp-a');
    const a = new Bridge('cmp-a');
    const b = new Bridge('cmp-b');
    await r.handler.handleLifecycle(a.event(uuid, 'stopped', 4, STOPPED_MIGRATED));
    assert.equal(await r.handler.handleLifecycle(b.event(uuid, 'resumed', 3, RESUMED_MIGRATED)), 'migrating');
    assert.equal(r.store.row(uuid).host, 'cmp-a');
    assert.equal(await r.handler.handleLifecycle(b.event(uuid, 'sync', 1)), 'migrated');
    assert.deepEqual(r.updates, [{ uuid, host: 'cmp-b', power_state: 'running' }]);
    assert.deepEqual(r.commands, []);
  });

  it("post-copy as real QEMU tells it: every merge of the two hosts' streams moves the row once", async () => {
    let runs = 0;
    for (const delivery of interleavings(['a0', 'a1', 'a2', 'a3'], ['b0', 'b1', 'b2', 'b3'])) {
      const r = rig();
      const uuid = r.instance('cmp-a');
      const a = new Bridge('cmp-a');
      const b = new Bridge('cmp-b');
      const events: Record<string, LifecycleEventIn> = {
        b0: b.event(uuid, 'started', 3, STARTED_MIGRATED),
        a0: a.event(uuid, 'paused', 3, SUSPENDED_MIGRATED),
        a1: a.event(uuid, 'postcopy_started', 3, SUSPENDED_POSTCOPY),
        b1: b.event(uuid, 'defined', 3),
        b2: b.event(uuid, 'resumed', 1, RESUMED_POSTCOPY),
        b3: b.event(uuid, 'resumed', 1, RESUMED_MIGRATED),
        a2: a.syncEnd([]),
        a3: a.event(uuid, 'stopped', 0, STOPPED_MIGRATED),
      };
      for (const key of delivery) await r.handler.handleLifecycle(events[key] as LifecycleEventIn);
      const label = `delivery ${delivery.join(',')}`;
      const row = r.store.row(uuid);
      assert.equal(row.host, 'cmp-b', label);
      assert.equal(row.power_state, 1, label);
      assert.equal(row.task_state, null, label);
      assert.deepEqual(r.commands, [], label);
      assert.equal(await r.actions('migration_followed'), 1, label);
      assert.deepEqual(
        r.updates.filter((update) => update.host === 'cmp-b'),
        [{ uuid, host: 'cmp-b', power_state: 'running' }],
        label,
      );
      runs += 1;
    }
    assert.equal(runs, 70);
  });

  it('a delayed source: the destination runs the guest long before the source says it left', async () => {
    const r = rig();
    const uuid = r.instance('cmp-a');
    const a = new Bridge('cmp-a');
    const b = new Bridge('cmp-b');
    // The source's STOPPED MIGRATED is held by the bridge's stop delay; a snapshot it takes
    // meanwhile lists the (persistent, now shut off) domain and is dispatched first.
    const paused = a.event(uuid, 'paused', 3, SUSPENDED_MIGRATED);
    const started = b.event(uuid, 'started', 3, STARTED_MIGRATED);
    const resumed = b.event(uuid, 'resumed', 1, RESUMED_MIGRATED);
    const snapshot = a.event(uuid, 'sync', 4);
    const stopped = a.event(uuid, 'stopped', 4, STOPPED_MIGRATED);
    assert.equal(await r.handler.handleLifecycle(started), 'migrating');
    assert.equal(await r.handler.handleLifecycle(resumed), 'migrating');
    // Nova's 4b for the snapshot — withheld while the migration is in evidence.
    r.clock += 30_000_000;
    assert.equal(await r.handler.handleLifecycle(snapshot), 'synced');
    assert.deepEqual(r.commands, []);
    assert.equal(await r.actions('migration_stop_withheld'), 1);
    assert.equal(await r.handler.handleLifecycle(paused), 'out_of_order');
    assert.equal(await r.handler.handleLifecycle(stopped), 'migrated');
    assert.equal(r.store.row(uuid).host, 'cmp-b');
    assert.equal(r.store.row(uuid).power_state, 1);
    // Late words of the source after the move: Nova's host check skips them.
    assert.equal(await r.handler.handleLifecycle(a.event(uuid, 'sync', 4)), 'skipped_host');
    assert.equal(await r.handler.handleLifecycle(a.syncEnd([uuid])), 'sync_end');
    assert.deepEqual(r.commands, []);
  });

  it('post-copy: postcopy_started then stopped migrated on the source, resumed postcopy/migrated on the destination', async () => {
    for (const order of permutations([0, 1, 2, 3])) {
      const r = rig();
      const uuid = r.instance('cmp-a');
      const a = new Bridge('cmp-a');
      const b = new Bridge('cmp-b');
      const events = [
        a.event(uuid, 'postcopy_started', 3, SUSPENDED_POSTCOPY),
        b.event(uuid, 'resumed', 1, RESUMED_POSTCOPY),
        b.event(uuid, 'resumed', 1, RESUMED_MIGRATED),
        a.event(uuid, 'stopped', 0, STOPPED_MIGRATED),
      ];
      for (const index of order) await r.handler.handleLifecycle(events[index] as LifecycleEventIn);
      const label = `order ${order.join(',')}`;
      assert.equal(r.store.row(uuid).host, 'cmp-b', label);
      assert.equal(r.store.row(uuid).power_state, 1, label);
      assert.deepEqual(r.commands, [], label);
      assert.equal(r.updates.length, 1, label);
    }
  });

  it('migration_completed from the source counts as its word', async () => {
    const r = rig();
    const uuid = r.instance('cmp-a');
    const a = new Bridge('cmp-a');
    const b = new Bridge('cmp-b');
    assert.equal(
      await r.handler.handleLifecycle(a.event(uuid, 'migration_completed', 3, SUSPENDED_MIGRATED)),
      'migrating',
    );
    // STARTED MIGRATED is evidence only (the incoming domain, paused until the switchover).
    assert.equal(await r.handler.handleLifecycle(b.event(uuid, 'started', 1, STARTED_MIGRATED)), 'migrating');
    assert.equal(r.store.row(uuid).host, 'cmp-a');
    assert.equal(await r.handler.handleLifecycle(b.event(uuid, 'resumed', 1, RESUMED_MIGRATED)), 'migrated');
    assert.equal(r.store.row(uuid).host, 'cmp-b');
  });

  it("a host claiming another host's guest never moves the row", async () => {
    const r = rig();
    const uuid = r.instance('cmp-a');
    const a = new Bridge('cmp-a');
    const evil = new Bridge('cmp-b');
    assert.equal(
      await r.handler.handleLifecycle(evil.event(uuid, 'started', 1, STARTED_MIGRATED)),
      'migrating',
    );
    assert.equal(
      await r.handler.handleLifecycle(evil.event(uuid, 'resumed', 1, RESUMED_MIGRATED)),
      'migrating',
    );
    assert.equal(await r.handler.handleLifecycle(evil.event(uuid, 'sync', 1)), 'migrating');
    // The real host keeps reporting the guest running there.
    assert.equal(await r.handler.handleLifecycle(a.event(uuid, 'sync', 1)), 'synced');
    assert.equal(await r.handler.handleLifecycle(a.syncEnd([uuid])), 'sync_end');
    const row = r.store.row(uuid);
    assert.equal(row.host, 'cmp-a');
    assert.equal(row.power_state, 1);
    assert.deepEqual(r.updates, []);
    assert.deepEqual(r.commands, []);
  });

  it('half evidence expires: after the window the row is synced (and stopped) normally again', async () => {
    const r = rig({ migrationWindowMs: 60_000 });
    const uuid = r.instance('cmp-a');
    const a = new Bridge('cmp-a');
    const b = new Bridge('cmp-b');
    await r.handler.handleLifecycle(b.event(uuid, 'started', 3, STARTED_MIGRATED));
    assert.equal(await r.handler.handleLifecycle(a.event(uuid, 'stopped', 4, 0)), 'synced');
    assert.equal(r.commands.length, 0, 'withheld within the window');
    r.clock += 61_000_000;
    assert.equal(await r.handler.handleLifecycle(a.event(uuid, 'sync', 4)), 'synced');
    assert.equal(r.commands.length, 1, "Nova's 4b after the window");
    assert.equal(r.commands[0]?.host, 'cmp-a');
    assert.equal(r.store.row(uuid).migration, null);
  });

  it('a failed migration (source resumes, destination stops FAILED) returns to normal sync', async () => {
    const r = rig();
    const uuid = r.instance('cmp-a');
    const a = new Bridge('cmp-a');
    const b = new Bridge('cmp-b');
    await r.handler.handleLifecycle(a.event(uuid, 'paused', 3, SUSPENDED_MIGRATED));
    await r.handler.handleLifecycle(b.event(uuid, 'started', 3, STARTED_MIGRATED));
    // The destination's STOPPED FAILED voids its word; the source's RESUMED MIGRATED voids its own.
    assert.equal(
      await r.handler.handleLifecycle(b.event(uuid, 'stopped', 0, STOPPED_FAILED)),
      'skipped_host',
    );
    assert.equal(r.store.row(uuid).migration?.dest, null);
    assert.equal(r.store.row(uuid).migration?.source_state, 'leaving');
    assert.equal(await r.handler.handleLifecycle(a.event(uuid, 'resumed', 1, RESUMED_MIGRATED)), 'synced');
    const row = r.store.row(uuid);
    assert.equal(row.host, 'cmp-a');
    assert.equal(row.migration, null);
    // The guest then shuts down by itself on A: Nova's 4b as usual.
    await r.handler.handleLifecycle(a.event(uuid, 'stopped', 4, 0));
    assert.equal(r.commands.length, 1);
  });

  it('guests migrated while a bridge was down converge through snapshots, in either order', async () => {
    for (const destFirst of [true, false]) {
      const r = rig();
      const uuid = r.instance('cmp-a');
      const other = r.instance('cmp-a');
      const a = new Bridge('cmp-a');
      const b = new Bridge('cmp-b');
      const destSync = b.event(uuid, 'sync', 1);
      const sourceEnd = a.syncEnd([other]);
      if (destFirst) {
        assert.equal(await r.handler.handleLifecycle(destSync), 'migrating');
        assert.equal(await r.handler.handleLifecycle(sourceEnd), 'sync_end');
      } else {
        assert.equal(await r.handler.handleLifecycle(sourceEnd), 'sync_end');
        assert.equal(await r.handler.handleLifecycle(destSync), 'migrated');
      }
      const row = r.store.row(uuid);
      assert.equal(row.host, 'cmp-b', `dest first: ${destFirst}`);
      assert.equal(row.power_state, 1);
      assert.equal(r.store.row(other).host, 'cmp-a');
      assert.deepEqual(r.commands, []);
    }
  });

  it('a stop out to the source is superseded by the move; its late result is not applied', async () => {
    const r = rig();
    const uuid = r.instance('cmp-a');
    const a = new Bridge('cmp-a');
    const b = new Bridge('cmp-b');
    // The source's guest looked shut off before any migration word: 4b sent a stop to cmp-a.
    await r.handler.handleLifecycle(a.event(uuid, 'stopped', 4, 0));
    const command = r.commands[0];
    assert.ok(command);
    await r.handler.handleLifecycle(a.event(uuid, 'migration_completed', 3, SUSPENDED_MIGRATED));
    assert.equal(await r.handler.handleLifecycle(b.event(uuid, 'resumed', 1, RESUMED_MIGRATED)), 'migrated');
    assert.equal(r.store.row(uuid).task_state, null);
    assert.equal(await r.handler.handleResult(resultFor(command, 'already_stopped', 4)), 'late_result');
    const row = r.store.row(uuid);
    assert.equal(row.host, 'cmp-b');
    assert.equal(row.vm_state, 'active');
    assert.equal(row.power_state, 1);
    assert.equal(r.commands.length, 1);
  });

  it('followMigrations false: rows never change host (the destination is skipped_host)', async () => {
    const r = rig({ followMigrations: false });
    const uuid = r.instance('cmp-a');
    for (const event of precopy(uuid, new Bridge('cmp-a'), new Bridge('cmp-b')).slice(0, 4))
      await r.handler.handleLifecycle(event);
    assert.equal(r.store.row(uuid).host, 'cmp-a');
    assert.equal(r.store.row(uuid).migration, null);
  });

  it('observe mode follows migrations too and never commands', async () => {
    const r = rig({ mode: 'observe' });
    const uuid = r.instance('cmp-a');
    for (const event of precopy(uuid, new Bridge('cmp-a'), new Bridge('cmp-b')).reverse())
      await r.handler.handleLifecycle(event);
    assert.equal(r.store.row(uuid).host, 'cmp-b');
    assert.deepEqual(r.commands, []);
  });
});

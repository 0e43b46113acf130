/**
 * Live migration on real QEMU guests between two hosts (issue 9, item 3): the instance row must
 * FOLLOW the guest — host becomes the destination, power_state running, one instance.update saying
 * so per move — and no stop or force_stop may ever reach either host, whatever order the two hosts'
 * messages reach the consumer in. Before this, a migrated guest's row ended stopped/4 because the
 * source's STOPPED (detail MIGRATED) looked like a guest shut off behind Nova's back.
 *
 * The consumer moves a row only when BOTH hosts agree (the destination reports the guest
 * started/resumed after a migration, the source reports it gone); one host's word alone never moves
 * it (any host could otherwise claim another host's guest). The scenarios:
 * - plain `virsh migrate --live` A→B and back (the source keeps its shut-off definition, so its
 *   STOPPED/MIGRATED carries power_state 4 and its snapshots list the guest SHUTOFF: the stop trap);
 * - post-copy (`--postcopy`, then `virsh migrate-postcopy` while the slowed pre-copy runs);
 * - reordered delivery: one host's messages held back (its bridge's broker connection held by a proxy)
 *   while the other host's flow, in both directions — destination late, then source late;
 * - delayed delivery: the consumer down during the migration, both hosts' messages queued;
 * - a bridge down during the migration, source side then destination side: the snapshot taken when it
 *   comes back completes the agreement;
 * - a guest destroyed while its bridge is down: the start snapshot converges it (Nova's 4b stop).
 * Migrations other than the plain one use Nova's flags (`--persistent --undefinesource`, as
 * LibvirtDriver's live_migration_flag): the source then forgets the domain.
 *
 * Each scenario has its own guest (so one failure does not cascade); all boot in parallel at set-up.
 * Snapshots are taken every few seconds (Nova: 600 s) so they overlap every migration. The bus
 * sequences each move produced are printed as diagnostics (docs/consumer.md shows them).
 */
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startQemuHost, startVirtbus, type QemuGuest, type ServiceProcess } from '../../src/sandbox';
import { openStore } from '../../src/store/open';
import { createLogger } from '../../src/util/log';
import type { InstanceStore } from '../../src/store/types';
import { onTeardown, testBroker } from '../support/services';
import { instance, tempSqliteUrl } from '../support/consumer';
import {
  BusObserver,
  consumerCaughtUp,
  HoldableProxy,
  outboxDir,
  startBridge,
  waitRow,
  type BridgeSettings,
  type RigHost,
} from '../support/qemu-migration';

const HOST_A = 'cmp-a.example.org';
const HOST_B = 'cmp-b.example.org';
/** Nova's live_migration_flag (minus PEER2PEER, which needs the hosts to reach each other by URI). */
const NOVA_FLAGS = ['--persistent', '--undefinesource'];
const BRIDGE: BridgeSettings = { stopDelayMs: 2000, resyncSeconds: 4 };

describe('live migration between two real qemu hosts: the row follows the guest', async () => {
  const started = Date.now();
  const [broker, qemuA, qemuB] = await Promise.all([
    testBroker(),
    startQemuHost({ name: 'mig-a' }),
    startQemuHost({ name: 'mig-b' }),
  ]);
  onTeardown(() => qemuA.dispose());
  onTeardown(() => qemuB.dispose());

  // One guest per scenario, booted in parallel (TCG: ~10 s each, idle afterwards).
  const define = (host: typeof qemuA, name: string): Promise<QemuGuest> =>
    host.defineGuest({ name, control: false });
  const [live, postcopy, reorder, queued, down, gone] = await Promise.all([
    define(qemuA, 'mig-live'),
    define(qemuA, 'mig-postcopy'),
    define(qemuA, 'mig-reorder'),
    define(qemuA, 'mig-queued'),
    define(qemuA, 'mig-down'),
    define(qemuB, 'mig-gone'),
  ]);
  const all = [live, postcopy, reorder, queued, down, gone];
  const migrating = [live, postcopy, reorder, queued, down];
  // Running (in libvirt's eyes) before any bridge starts: a start snapshot listing a defined guest
  // SHUTOFF would make Nova's sync stop its active row. The kernels then boot while the rest starts.
  const running = Promise.all(all.map((guest) => guest.start()));
  const booted = running.then(() => Promise.all(all.map((guest) => guest.waitBooted(180000))));

  const dbUrl = tempSqliteUrl();
  const store: InstanceStore = openStore(
    { url: dbUrl, poolSize: 1, sqliteSynchronous: 'full', busyTimeoutMs: 5000 },
    createLogger('silent', 'test'),
  );
  onTeardown(() => store.close());
  await store.upsert([
    ...migrating.map((guest) => instance({ uuid: guest.uuid, host: HOST_A })),
    instance({ uuid: gone.uuid, host: HOST_B }),
  ]);

  const consumerEnv = {
    VIRTBUS_AMQP_URL: broker.url,
    VIRTBUS_DB_URL: dbUrl,
    VIRTBUS_STOP_TIMEOUT_MS: '20000',
    VIRTBUS_LOG_LEVEL: 'info',
  };
  let consumer: ServiceProcess = startVirtbus('consumer', consumerEnv);
  const startConsumer = async (): Promise<void> => {
    consumer = startVirtbus('consumer', consumerEnv);
    await consumer.waitForLog('consuming', (line) => line.msg === 'consuming', 30000);
  };
  const stopConsumer = async (): Promise<void> => {
    const exit = await consumer.stop('SIGTERM');
    assert.deepEqual(exit, { code: 0, signal: null }, `consumer exit; stderr: ${consumer.stderr()}`);
  };
  onTeardown(stopConsumer);
  await consumer.waitForLog('consuming', (line) => line.msg === 'consuming', 30000);
  const observer = await BusObserver.open(broker.url);

  const brokerAddress = new URL(broker.url);
  const proxyTarget = { host: brokerAddress.hostname, port: Number(brokerAddress.port) };
  const [proxyA, proxyB] = await Promise.all([
    HoldableProxy.start(proxyTarget),
    HoldableProxy.start(proxyTarget),
  ]);
  onTeardown(() => proxyA.close());
  onTeardown(() => proxyB.close());
  const A: RigHost = { name: HOST_A, qemu: qemuA, proxy: proxyA, bridge: undefined };
  const B: RigHost = { name: HOST_B, qemu: qemuB, proxy: proxyB, bridge: undefined };
  const outboxes = new Map([
    [A, outboxDir('a')],
    [B, outboxDir('b')],
  ]);
  const bridgeUp = (host: RigHost): Promise<unknown> =>
    startBridge(host, broker.url, outboxes.get(host) as string, BRIDGE);
  const bridgeDown = async (host: RigHost): Promise<void> => {
    const bridge = host.bridge;
    host.bridge = undefined;
    if (!bridge) return;
    host.proxy.release();
    const exit = await bridge.stop('SIGTERM');
    assert.deepEqual(exit, { code: 0, signal: null }, `bridge ${host.name} exit; stderr: ${bridge.stderr()}`);
  };
  onTeardown(() => bridgeDown(A));
  onTeardown(() => bridgeDown(B));

  await running;
  await Promise.all([bridgeUp(A), bridgeUp(B), booted]);
  await consumerCaughtUp(observer);
  console.log(`# migration set-up: ${Math.round((Date.now() - started) / 1000)} s`);

  /** Prints the bus sequence of a move (both hosts, in arrival order) as test diagnostics. */
  const record = (t: TestContext, label: string, guest: QemuGuest, since: number): void => {
    t.diagnostic(`${label} (${guest.name}): bus messages in arrival order`);
    for (const line of observer.describe(guest.uuid, since)) t.diagnostic(`  ${line}`);
  };

  /** Runs `virsh migrate` on the source; resolves with the time the migration finished. */
  const migrate = async (
    guest: QemuGuest,
    from: RigHost,
    to: RigHost,
    flags: readonly string[],
  ): Promise<number> => {
    await from.qemu.migrate(guest.name, to.qemu, flags);
    return Date.now();
  };

  /** The source host no longer runs the guest: either forgot it or holds it shut off. */
  const assertLeft = async (guest: QemuGuest, from: RigHost): Promise<void> => {
    const state = (await from.qemu.virsh('domstate', guest.name).catch(() => 'absent')).trim();
    assert.ok(state === 'absent' || state === 'shut off', `${guest.name} on ${from.name}: ${state}`);
  };

  /**
   * Everything a completed move must show: the row on the destination, active and running, no task;
   * exactly one instance.update naming the destination, saying running; no command for the guest —
   * checked again after the late messages (the source's delayed STOPPED, a snapshot of each host
   * taken after the migration) have been consumed, so nothing that arrives late moves it back.
   */
  const assertFollowed = async (
    t: TestContext,
    label: string,
    guest: QemuGuest,
    from: RigHost,
    to: RigHost,
    since: number,
    finished: number,
    source: 'spoke' | 'silent' = 'spoke',
  ): Promise<void> => {
    try {
      await waitRow(
        store,
        observer,
        guest.uuid,
        `the row of ${guest.name} to follow it to ${to.name}`,
        (row) => row.host === to.name && row.power_state === 1,
      );
      // The source's STOPPED/MIGRATED, held for the stop delay, is the last live word of a move.
      if (source === 'spoke')
        await observer.waitLifecycle(
          `${from.name}'s STOPPED for ${guest.name}`,
          (message) =>
            message.instance_uuid === guest.uuid &&
            message.host === from.name &&
            message.transition === 'stopped',
          since,
        );
      await Promise.all([
        observer.waitSnapshot(from.name, finished),
        observer.waitSnapshot(to.name, finished),
      ]);
      await consumerCaughtUp(observer);
      const row = await store.get(guest.uuid);
      assert.ok(row);
      assert.equal(row.host, to.name, 'the row stays on the destination');
      assert.equal(row.power_state, 1);
      assert.equal(row.vm_state, 'active');
      assert.equal(row.task_state, null);
      assert.deepEqual(
        observer.commandsFor(guest.uuid).map((seen) => seen.body),
        [],
        'no stop or force_stop to either host',
      );
      const updates = observer
        .notificationsFor(guest.uuid, since)
        .map((seen) => seen.body.payload['nova_object.data'])
        .filter((data) => data.host === to.name);
      assert.equal(
        updates.length,
        1,
        `one instance.update naming ${to.name}, got: ${JSON.stringify(
          updates.map((data) => [data.host, data.power_state, data.state, data.task_state]),
        )}`,
      );
      assert.equal(updates[0]?.power_state, 'running');
      assert.equal(updates[0]?.state, 'active');
      assert.equal(updates[0]?.task_state, null);
    } finally {
      record(t, label, guest, since);
    }
    assert.equal((await to.qemu.virsh('domstate', guest.name)).trim(), 'running');
    await assertLeft(guest, from);
  };

  it('live migration A→B and back (plain virsh migrate --live): the row follows both ways, never a stop', async (t) => {
    let since = Date.now();
    let finished = await migrate(live, A, B, []);
    // The translations the consumer relies on, as the bridges published them.
    const bus = (host: string, transition: string, detail: string): Promise<unknown> =>
      observer.waitLifecycle(
        `${host} ${transition}/${detail} for ${live.name}`,
        (message) =>
          message.instance_uuid === live.uuid &&
          message.host === host &&
          message.transition === transition &&
          message.libvirt?.detail === detail,
        since,
        20000,
      );
    await Promise.all([
      bus(HOST_B, 'started', 'MIGRATED'),
      bus(HOST_B, 'resumed', 'MIGRATED'),
      bus(HOST_A, 'stopped', 'MIGRATED'),
    ]);
    await assertFollowed(t, 'plain live migration A→B', live, A, B, since, finished);

    since = Date.now();
    finished = await migrate(live, B, A, []);
    await assertFollowed(t, 'plain live migration B→A', live, B, A, since, finished);
  });

  it('post-copy migration A→B (--postcopy, then virsh migrate-postcopy while it runs): the row follows, never a stop', async (t) => {
    const since = Date.now();
    // 2 MiB/s keeps the pre-copy phase running for tens of seconds, so the switch always lands in it.
    let settled = false;
    const migration = A.qemu
      .migrate(postcopy.name, B.qemu, [...NOVA_FLAGS, '--postcopy', '--bandwidth', '2'])
      .finally(() => (settled = true));
    let switched = false;
    while (!settled && !switched) {
      await sleep(250);
      // Refused until the migration job is under way ("Enable postcopy…"): retry.
      switched = await A.qemu.virsh('migrate-postcopy', postcopy.name).then(
        () => true,
        () => false,
      );
    }
    await migration;
    const finished = Date.now();
    assert.ok(switched, 'virsh migrate-postcopy was accepted while the migration ran');
    await observer.waitLifecycle(
      `${HOST_A}'s postcopy_started for ${postcopy.name}`,
      (message) =>
        message.instance_uuid === postcopy.uuid &&
        message.host === HOST_A &&
        message.transition === 'postcopy_started',
      since,
      20000,
    );
    await assertFollowed(t, 'post-copy live migration A→B', postcopy, A, B, since, finished);
  });

  it('reordered delivery: the destination’s messages held back, then the source’s — same outcome, never a stop', async (t) => {
    // A→B with B's messages held: the consumer hears the source's whole story first (SUSPENDED,
    // STOPPED/MIGRATED with power_state 4 — the source keeps its definition — and snapshots listing
    // the guest SHUTOFF). The source's word alone must neither move the row nor stop the guest.
    let since = Date.now();
    B.proxy.hold();
    let finished: number;
    try {
      // 10 MiB/s stretches the destination's STARTED → RESUMED window (the incoming guest paused)
      // beyond one snapshot interval, so B's held burst always holds a snapshot listing it PAUSED
      // between the two — as any large guest's migration does.
      finished = await migrate(reorder, A, B, ['--bandwidth', '10']);
      await observer.waitLifecycle(
        `${HOST_A}'s STOPPED for ${reorder.name}`,
        (message) =>
          message.instance_uuid === reorder.uuid &&
          message.host === HOST_A &&
          message.transition === 'stopped',
        since,
      );
      await observer.waitSnapshot(HOST_A, finished);
      await consumerCaughtUp(observer);
      const early = await store.get(reorder.uuid);
      assert.equal(early?.host, HOST_A, 'the source alone does not move the row');
      assert.deepEqual(
        observer.commandsFor(reorder.uuid).map((seen) => seen.body),
        [],
        'no stop on the source’s word',
      );
    } finally {
      B.proxy.release();
    }
    await assertFollowed(
      t,
      'plain live migration A→B, destination (B) delivered late',
      reorder,
      A,
      B,
      since,
      finished,
    );

    // B→A with B (now the source) held: the destination's STARTED/RESUMED arrive first.
    since = Date.now();
    B.proxy.hold();
    try {
      finished = await migrate(reorder, B, A, []);
      await observer.waitLifecycle(
        `${HOST_A}'s RESUMED for ${reorder.name}`,
        (message) =>
          message.instance_uuid === reorder.uuid &&
          message.host === HOST_A &&
          message.transition === 'resumed',
        since,
      );
      await observer.waitSnapshot(HOST_A, finished);
      await consumerCaughtUp(observer);
      const early = await store.get(reorder.uuid);
      assert.equal(early?.host, HOST_B, 'the destination alone does not move the row');
      assert.deepEqual(
        observer.commandsFor(reorder.uuid).map((seen) => seen.body),
        [],
        'no command meanwhile',
      );
    } finally {
      B.proxy.release();
    }
    await assertFollowed(
      t,
      'plain live migration B→A, source (B) delivered late',
      reorder,
      B,
      A,
      since,
      finished,
    );
  });

  it('delayed delivery: the consumer down during the migration, both hosts’ messages queued — same outcome', async (t) => {
    const since = Date.now();
    await stopConsumer();
    let finished: number;
    try {
      finished = await migrate(queued, A, B, NOVA_FLAGS);
      const seen = (host: string, transition: string): Promise<unknown> =>
        observer.waitLifecycle(
          `${host}'s ${transition} for ${queued.name}`,
          (message) =>
            message.instance_uuid === queued.uuid &&
            message.host === host &&
            message.transition === transition,
          since,
        );
      await Promise.all([
        seen(HOST_A, 'stopped'),
        seen(HOST_B, 'resumed'),
        observer.waitSnapshot(HOST_A, finished),
        observer.waitSnapshot(HOST_B, finished),
      ]);
    } finally {
      await startConsumer();
    }
    await assertFollowed(
      t,
      'live migration A→B (Nova flags), consumer down meanwhile',
      queued,
      A,
      B,
      since,
      finished,
    );
  });

  it('a bridge down during the migration: the snapshot it takes when back completes the agreement', async (t) => {
    // Source side down: only the destination speaks, which is not enough; A's start snapshot,
    // without the guest (Nova's flags undefine it on the source), is the source's word.
    let since = Date.now();
    await bridgeDown(A);
    let finished: number;
    try {
      finished = await migrate(down, A, B, NOVA_FLAGS);
      await observer.waitLifecycle(
        `${HOST_B}'s RESUMED for ${down.name}`,
        (message) =>
          message.instance_uuid === down.uuid && message.host === HOST_B && message.transition === 'resumed',
        since,
      );
      await observer.waitSnapshot(HOST_B, finished);
      await consumerCaughtUp(observer);
      const early = await store.get(down.uuid);
      assert.equal(early?.host, HOST_A, 'the destination alone does not move the row');
      assert.deepEqual(
        observer.commandsFor(down.uuid).map((seen) => seen.body),
        [],
        'no command meanwhile',
      );
    } finally {
      await bridgeUp(A);
    }
    await assertFollowed(
      t,
      'live migration A→B (Nova flags), source bridge (A) down',
      down,
      A,
      B,
      since,
      finished,
      'silent',
    );

    // Destination side down: only the source speaks; A's start snapshot lists the guest running.
    since = Date.now();
    await bridgeDown(A);
    try {
      finished = await migrate(down, B, A, NOVA_FLAGS);
      await observer.waitLifecycle(
        `${HOST_B}'s STOPPED for ${down.name}`,
        (message) =>
          message.instance_uuid === down.uuid && message.host === HOST_B && message.transition === 'stopped',
        since,
      );
      await observer.waitSnapshot(HOST_B, finished);
      await consumerCaughtUp(observer);
      const early = await store.get(down.uuid);
      assert.equal(early?.host, HOST_B, 'the source alone does not move the row');
      assert.deepEqual(
        observer.commandsFor(down.uuid).map((seen) => seen.body),
        [],
        'no command meanwhile',
      );
    } finally {
      await bridgeUp(A);
    }
    await assertFollowed(
      t,
      'live migration B→A (Nova flags), destination bridge (A) down',
      down,
      B,
      A,
      since,
      finished,
    );
  });

  it('a guest destroyed while its bridge is down converges through the start snapshot: stopped on its own host', async (t) => {
    const since = Date.now();
    await bridgeDown(B);
    try {
      await B.qemu.virsh('destroy', gone.name);
    } finally {
      await bridgeUp(B);
    }
    try {
      // Nova's periodic sync: active + SHUTDOWN → stop (4b) on the instance's host, which finds it off.
      let row = await store.get(gone.uuid);
      const deadline = Date.now() + 45000;
      while (!(row?.vm_state === 'stopped' && row.task_state === null) && Date.now() < deadline) {
        await sleep(200);
        row = await store.get(gone.uuid);
      }
      assert.equal(row?.vm_state, 'stopped', JSON.stringify(row));
      assert.equal(row?.task_state, null);
      assert.equal(row?.power_state, 4);
      assert.equal(row?.host, HOST_B);
      assert.equal(row?.last_action, 'stop_completed');
      const sent = observer.commandsFor(gone.uuid).map((seen) => seen.body);
      assert.equal(sent.length, 1, JSON.stringify(sent));
      assert.equal(sent[0]?.action, 'stop');
      assert.equal(sent[0]?.host, HOST_B);
      const results = observer.results
        .filter((seen) => seen.body.instance_uuid === gone.uuid)
        .map((seen) => seen.body);
      assert.deepEqual(
        results.map((result) => [result.host, result.outcome]),
        [[HOST_B, 'already_stopped']],
      );
      assert.equal((await B.qemu.virsh('domstate', gone.name)).trim(), 'shut off');
    } finally {
      record(t, 'guest destroyed on B while bridge B was down', gone, since);
    }
  });

  it('no stop or force_stop was ever sent for a migrating guest, to either host', () => {
    const uuids = new Set(migrating.map((guest) => guest.uuid));
    assert.deepEqual(
      observer.commands.filter((seen) => uuids.has(seen.body.instance_uuid)).map((seen) => seen.body),
      [],
    );
    console.log(`# migration file so far: ${Math.round((Date.now() - started) / 1000)} s`);
  });
});

/**
 * Nova's behaviour, branch by branch, as the consumer's handler reproduces it — one readable file,
 * broker-free (handler-kit.ts: an in-memory store with the real compare-and-swap, a manual clock,
 * recorded notifications and commands). The expectations are written from Nova's own source,
 * nova/compute/manager.py, in its order:
 *
 *   1. handle_events / handle_lifecycle_event: the transition → power state map, InstanceNotFound,
 *      the staleness guard ("The event may be delayed" — bug #1468431).
 *   2. _sync_power_states / _query_driver_power_state_and_sync: a snapshot's live state taken as
 *      is, a domain the hypervisor no longer has read as NOSTATE, a pending task skipped.
 *   3. _sync_instance_power_state: the host check, the task check, the power_state write, then the
 *      vm_state × power_state table (rows 4a–4k in src/consumer/nova.ts).
 *   4. The stop API: compute_api.stop's checks (force_stop has none), task_state powering-off, the
 *      command to the host's bridge, and how it ends (its result, or the consumer's timeout).
 *
 * What virtbus adds to Nova's steps has its own section: the event-position check (redelivery and
 * reordering on a bus), the live migration in evidence (stops withheld), observe mode. Live
 * migration following in depth is handler-migration.test.ts; result outcomes in depth
 * handler-results.test.ts; the ordering rule handler-ordering.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { expiryTask } from '../../src/consumer/stop-results';
import { PowerState } from '../../src/libvirt/constants';
import type { Transition } from '../../src/libvirt/translate';
import { VM_STATES } from '../../src/store/types';
import { createLogger } from '../../src/util/log';
import { Bridge, resultFor, rig, type Rig } from './handler-kit';

const { NOSTATE, RUNNING, PAUSED, SHUTDOWN, CRASHED, SUSPENDED } = PowerState;
const POWER_STATES = [NOSTATE, RUNNING, PAUSED, SHUTDOWN, CRASHED, SUSPENDED] as const;
const NAMES: Record<number, string> = {
  0: 'NOSTATE',
  1: 'RUNNING',
  3: 'PAUSED',
  4: 'SHUTDOWN',
  6: 'CRASHED',
  7: 'SUSPENDED',
};

/** Every sync action counted so far, as {action: count} without the zeros. */
async function actionsOf(r: Rig): Promise<Record<string, number>> {
  const metric = await r.metrics.syncActions.get();
  return Object.fromEntries(
    metric.values
      .filter((value) => value.value > 0)
      .map((value) => [String(value.labels.action), value.value]),
  );
}

describe("Nova 1: handle_lifecycle_event's transition → power state", () => {
  // Nova: STOPPED → SHUTDOWN; STARTED, RESUMED → RUNNING; PAUSED, POSTCOPY_STARTED,
  // MIGRATION_COMPLETED → PAUSED. (EVENT_LIFECYCLE_SUSPENDED → SUSPENDED exists in Nova, but its
  // libvirt driver never emits it: host.py maps every VIR_DOMAIN_EVENT_SUSPENDED to PAUSED,
  // POSTCOPY_STARTED or MIGRATION_COMPLETED, and PMSUSPENDED to nothing.)
  const synced: Array<[Transition, number]> = [
    ['stopped', SHUTDOWN],
    ['started', RUNNING],
    ['resumed', RUNNING],
    ['paused', PAUSED],
    ['postcopy_started', PAUSED],
    ['migration_completed', PAUSED],
  ];
  for (const [transition, power] of synced)
    it(`${transition} syncs power_state ${NAMES[power]} when the live state agrees`, async () => {
      const r = rig({ mode: 'observe', followMigrations: false });
      const uuid = r.instance('cmp-a', { power_state: power === RUNNING ? PAUSED : RUNNING });
      const before = r.store.row(uuid);
      assert.equal(
        await r.handler.handleLifecycle(new Bridge('cmp-a').event(uuid, transition, power)),
        'synced',
      );
      assert.equal(r.store.row(uuid).power_state, power);
      assert.equal(r.store.row(uuid).version, before.version + 1);
      assert.equal((await actionsOf(r)).power_state_updated, 1);
    });

  // The libvirt driver emits no lifecycle event for these (host.py's _event_lifecycle_callback):
  // Nova never hears of them; virtbus publishes them and the consumer acknowledges them unchanged.
  for (const transition of [
    'defined',
    'undefined',
    'shutdown',
    'pmsuspended',
    'crashed',
    'rebooted',
  ] as const)
    it(`${transition} is ignored: no row read, no write`, async () => {
      const r = rig();
      const uuid = r.instance('cmp-a');
      const before = r.store.row(uuid);
      assert.equal(
        await r.handler.handleLifecycle(new Bridge('cmp-a').event(uuid, transition, SHUTDOWN)),
        'ignored',
      );
      assert.deepEqual(r.store.row(uuid), before);
      assert.deepEqual(r.updates, []);
    });

  it('an unknown instance is InstanceNotFound: acknowledged, nothing written', async () => {
    const r = rig();
    const stranger = '6f1c1a43-7a3b-4c6e-9d1f-0c0ffee00000';
    assert.equal(
      await r.handler.handleLifecycle(new Bridge('cmp-a').event(stranger, 'stopped', SHUTDOWN)),
      'not_found',
    );
    assert.equal(r.store.rows.size, 0);
  });

  it('a deleted instance is still found on the event path (read_deleted=yes) and syncs (4j)', async () => {
    const r = rig();
    const uuid = r.instance('cmp-a', { vm_state: 'deleted', power_state: SHUTDOWN });
    assert.equal(
      await r.handler.handleLifecycle(new Bridge('cmp-a').event(uuid, 'started', RUNNING)),
      'synced',
    );
    assert.equal(r.store.row(uuid).power_state, RUNNING);
    assert.deepEqual(await actionsOf(r), { power_state_updated: 1, warn_not_deleted: 1 });
  });

  it('the staleness guard: a lifecycle event the live power state contradicts is dropped', async () => {
    const r = rig();
    const uuid = r.instance('cmp-a');
    const before = r.store.row(uuid);
    // STOPPED, but the bridge read the guest running again when it published: a later event says so.
    assert.equal(
      await r.handler.handleLifecycle(new Bridge('cmp-a').event(uuid, 'stopped', RUNNING)),
      'stale',
    );
    assert.deepEqual(r.store.row(uuid), before);
    assert.deepEqual(r.commands, []);
  });

  it('the staleness guard holds when the bridge could not read the live state (null)', async () => {
    const r = rig();
    const uuid = r.instance('cmp-a');
    assert.equal(await r.handler.handleLifecycle(new Bridge('cmp-a').event(uuid, 'stopped', null)), 'stale');
    assert.equal(r.store.row(uuid).power_state, RUNNING);
  });
});

describe('Nova 2: the periodic sync (_sync_power_states)', () => {
  it("a snapshot's live state is taken as it is: no staleness guard on the periodic path", async () => {
    const r = rig();
    const uuid = r.instance('cmp-a');
    assert.equal(await r.handler.handleLifecycle(new Bridge('cmp-a').event(uuid, 'sync', PAUSED)), 'synced');
    assert.equal(r.store.row(uuid).power_state, PAUSED);
    assert.deepEqual(await actionsOf(r), { power_state_updated: 1, warn_paused: 1 });
  });

  it('a snapshot the bridge could not read (null) syncs nothing', async () => {
    const r = rig();
    const uuid = r.instance('cmp-a');
    const before = r.store.row(uuid);
    assert.equal(await r.handler.handleLifecycle(new Bridge('cmp-a').event(uuid, 'sync', null)), 'stale');
    assert.deepEqual(r.store.row(uuid), before);
  });

  it("a deleted row is not in the host's list (InstanceList.get_by_host): not found", async () => {
    const r = rig();
    const uuid = r.instance('cmp-a', { vm_state: 'deleted' });
    const before = r.store.row(uuid);
    assert.equal(
      await r.handler.handleLifecycle(new Bridge('cmp-a').event(uuid, 'sync', RUNNING)),
      'not_found',
    );
    assert.deepEqual(r.store.row(uuid), before);
  });

  it('a row of the host missing from the snapshot: get_info raised InstanceNotFound, synced as NOSTATE (4e)', async () => {
    const r = rig();
    const listed = r.instance('cmp-a');
    const gone = r.instance('cmp-a');
    const elsewhere = r.instance('cmp-b');
    const bridge = new Bridge('cmp-a');
    assert.equal(await r.handler.handleLifecycle(bridge.syncEnd([listed])), 'sync_end');
    assert.equal(r.store.row(gone).power_state, NOSTATE);
    assert.equal(r.store.row(listed).power_state, RUNNING);
    assert.equal(r.store.row(elsewhere).power_state, RUNNING, "another host's rows are not its snapshot's");
    assert.deepEqual(await actionsOf(r), { power_state_updated: 1, vanished: 1, warn_not_found: 1 });
    assert.deepEqual(r.commands, [], '4e only warns');
  });

  it('a missing row with a pending task is skipped (_query_driver_power_state_and_sync checks the task first)', async () => {
    const r = rig();
    const uuid = r.instance('cmp-a', { task_state: 'rebooting' });
    const before = r.store.row(uuid);
    assert.equal(await r.handler.handleLifecycle(new Bridge('cmp-a').syncEnd([])), 'sync_end');
    assert.equal(r.store.row(uuid).power_state, before.power_state);
    assert.equal(r.store.row(uuid).task_state, 'rebooting');
  });

  it('a missing row that changed after the snapshot was taken is left alone (the snapshot is older news)', async () => {
    const r = rig();
    const uuid = r.instance('cmp-a');
    const bridge = new Bridge('cmp-a');
    const end = bridge.syncEnd([]);
    // The instance was (re)created on this host after the snapshot: updated_at is newer.
    r.store.rows.set(uuid, { ...r.store.row(uuid), updated_at: '2099-01-01T00:00:00.000000Z' });
    assert.equal(await r.handler.handleLifecycle(end), 'sync_end');
    assert.equal(r.store.row(uuid).power_state, RUNNING);
  });

  it('missing deleted and stopped rows: deleted ones are not listed; a stopped one at NOSTATE is 4g, no action', async () => {
    const r = rig();
    const deleted = r.instance('cmp-a', { vm_state: 'deleted', power_state: RUNNING });
    const stopped = r.instance('cmp-a', { vm_state: 'stopped', power_state: SHUTDOWN });
    assert.equal(await r.handler.handleLifecycle(new Bridge('cmp-a').syncEnd([])), 'sync_end');
    assert.equal(r.store.row(deleted).power_state, RUNNING);
    assert.equal(r.store.row(stopped).power_state, NOSTATE);
    assert.deepEqual(r.commands, []);
  });
});

describe("Nova 3: _sync_instance_power_state's checks", () => {
  it('the instance moved to another host: "During the sync_power process the instance has moved"', async () => {
    const r = rig({ followMigrations: false });
    const uuid = r.instance('cmp-b');
    const before = r.store.row(uuid);
    assert.equal(
      await r.handler.handleLifecycle(new Bridge('cmp-a').event(uuid, 'stopped', SHUTDOWN)),
      'skipped_host',
    );
    assert.equal(
      await r.handler.handleLifecycle(new Bridge('cmp-a').event(uuid, 'sync', SHUTDOWN)),
      'skipped_host',
    );
    assert.deepEqual(r.store.row(uuid), before);
    assert.deepEqual(r.commands, []);
  });

  it('an instance never scheduled (host null) is not this host’s either', async () => {
    const r = rig({ followMigrations: false });
    const uuid = r.instance('cmp-a', { host: null });
    assert.equal(
      await r.handler.handleLifecycle(new Bridge('cmp-a').event(uuid, 'stopped', SHUTDOWN)),
      'skipped_host',
    );
  });

  for (const task of ['powering-off', 'rebooting', 'migrating', 'spawning', 'deleting'])
    it(`task_state ${task} in progress: "the instance has a pending task. Skip." — not even power_state`, async () => {
      const r = rig();
      const uuid = r.instance('cmp-a', { task_state: task });
      const before = r.store.row(uuid);
      assert.equal(
        await r.handler.handleLifecycle(new Bridge('cmp-a').event(uuid, 'stopped', SHUTDOWN)),
        'skipped_task',
      );
      assert.equal(
        await r.handler.handleLifecycle(new Bridge('cmp-a').event(uuid, 'sync', SHUTDOWN)),
        'skipped_task',
      );
      assert.deepEqual(r.store.row(uuid), before);
    });

  it('power_state is always written from the hypervisor, with one instance.update for the change', async () => {
    const r = rig();
    const uuid = r.instance('cmp-a', { vm_state: 'building', power_state: NOSTATE });
    await r.handler.handleLifecycle(new Bridge('cmp-a').event(uuid, 'started', RUNNING));
    assert.equal(r.store.row(uuid).power_state, RUNNING);
    assert.deepEqual(r.updates, [{ uuid, host: 'cmp-a', power_state: 'running' }]);
  });

  it('an unchanged power_state writes only the event position: no notification, no action', async () => {
    const r = rig();
    const uuid = r.instance('cmp-a');
    assert.equal(await r.handler.handleLifecycle(new Bridge('cmp-a').event(uuid, 'sync', RUNNING)), 'synced');
    assert.deepEqual(r.updates, []);
    assert.deepEqual(await actionsOf(r), {});
    assert.notEqual(r.store.row(uuid).event_at_us, null, 'the position is recorded');
  });
});

/**
 * _sync_instance_power_state's vm_state × power_state table, written from Nova's source (not from
 * nova.ts): what each pair does, as the sync action counted ('' = nothing beyond the write).
 */
function novaAction(vmState: string, power: number): string {
  switch (vmState) {
    case 'building':
    case 'rescued':
    case 'resized':
    case 'suspended':
    case 'error':
      return ''; // 4a: "we ignore these vm_state for now"
    case 'active':
      if (power === SHUTDOWN || power === CRASHED) return 'stop'; // 4b: _stop_unexpected_shutdown_instance
      if (power === SUSPENDED) return 'stop'; // 4c: "Instance is suspended unexpectedly"
      if (power === PAUSED) return 'warn_paused'; // 4d: "Instance is paused unexpectedly. Ignore."
      if (power === NOSTATE) return 'warn_not_found'; // 4e: "Instance is unexpectedly not found"
      return ''; // 4f: RUNNING is the rational state
    case 'stopped':
      return power === NOSTATE || power === SHUTDOWN || power === CRASHED ? '' : 'force_stop'; // 4g
    case 'paused':
      return power === SHUTDOWN || power === CRASHED ? 'force_stop' : ''; // 4h / 4i
    case 'soft-delete':
    case 'deleted':
      return power === NOSTATE || power === SHUTDOWN ? '' : 'warn_not_deleted'; // 4j
    default:
      return ''; // 4k shelved, shelved_offloaded: nothing
  }
}

describe('Nova 3: the vm_state × power_state table (every pair)', () => {
  for (const vmState of VM_STATES.filter((state) => state !== 'deleted'))
    for (const power of POWER_STATES) {
      const expected = novaAction(vmState, power);
      it(`${vmState} × ${NAMES[power]} → ${expected || 'no action'}`, async () => {
        const r = rig();
        const initial = power === RUNNING ? PAUSED : RUNNING;
        const uuid = r.instance('cmp-a', { vm_state: vmState, power_state: initial });
        assert.equal(
          await r.handler.handleLifecycle(new Bridge('cmp-a').event(uuid, 'sync', power)),
          'synced',
        );
        const row = r.store.row(uuid);
        assert.equal(row.power_state, power, 'power_state written first, whatever the branch');
        const actions = await actionsOf(r);
        assert.deepEqual(actions, { power_state_updated: 1, ...(expected ? { [expected]: 1 } : {}) });
        if (expected === 'stop' || expected === 'force_stop') {
          assert.equal(r.commands.length, 1);
          assert.equal(r.commands[0]?.action, expected);
          assert.equal(row.task_state, 'powering-off');
          assert.equal(row.vm_state, vmState, 'the stop API leaves vm_state to the compute host');
        } else {
          assert.deepEqual(r.commands, []);
          assert.equal(row.task_state, null);
        }
      });
    }

  // 'deleted' only through the event path (the periodic one does not list deleted rows).
  for (const [transition, power, expected] of [
    ['stopped', SHUTDOWN, ''],
    ['started', RUNNING, 'warn_not_deleted'],
    ['paused', PAUSED, 'warn_not_deleted'],
  ] as const)
    it(`deleted × ${NAMES[power]} (a ${transition} event) → ${expected || 'no action'}`, async () => {
      const r = rig();
      const uuid = r.instance('cmp-a', { vm_state: 'deleted', power_state: NOSTATE });
      assert.equal(
        await r.handler.handleLifecycle(new Bridge('cmp-a').event(uuid, transition, power)),
        'synced',
      );
      assert.deepEqual(await actionsOf(r), {
        power_state_updated: 1,
        ...(expected ? { [expected]: 1 } : {}),
      });
      assert.deepEqual(r.commands, []);
    });
});

describe('Nova 4: the stop API', () => {
  it('4b: stop with the re-check _stop_unexpected_shutdown_instance makes (only while SHUTDOWN/CRASHED)', async () => {
    const r = rig();
    const uuid = r.instance('cmp-a');
    const bridge = new Bridge('cmp-a');
    await r.handler.handleLifecycle(bridge.event(uuid, 'stopped', SHUTDOWN));
    const [command] = r.commands;
    assert.ok(command);
    assert.equal(command.action, 'stop');
    assert.equal(command.host, 'cmp-a');
    assert.equal(command.instance_uuid, uuid);
    assert.deepEqual(command.only_if_power_states, [SHUTDOWN, CRASHED]);
    assert.match(command.reason, /^4b: Instance shutdown by itself\. Calling the stop API\.$/);
    // The command dies on the bus at half the stop timeout (60 s here), before the consumer gives up.
    assert.equal(Date.parse(command.expires_at) - Date.parse(command.issued_at), 30_000);
    const row = r.store.row(uuid);
    assert.equal(row.task_state, 'powering-off');
    assert.equal(row.pending_command_id, command.command_id);
    assert.equal(row.pending_command_host, 'cmp-a');
    assert.equal(row.pending_action, 'stop');
    assert.equal(row.command_deadline_ms, Math.floor(r.clock / 1000) + 60_000);
    assert.equal(row.last_action, 'stop');
    // Two instance.updates, as Nova saves twice: the power_state, then the task_state.
    assert.deepEqual(
      r.updates.map((update) => update.power_state),
      ['shutdown', 'shutdown'],
    );
    assert.equal((await r.metrics.commandsPublished.get()).values[0]?.value, 1);
  });

  it('4c: stop without a re-check (Nova calls the API directly)', async () => {
    const r = rig();
    const uuid = r.instance('cmp-a');
    await r.handler.handleLifecycle(new Bridge('cmp-a').event(uuid, 'sync', SUSPENDED));
    assert.equal(r.commands[0]?.action, 'stop');
    assert.equal(r.commands[0]?.only_if_power_states, undefined);
  });

  it('4g and 4h: force_stop ("normally the compute API would not allow an attempt to stop a stopped instance")', async () => {
    const r = rig();
    const stopped = r.instance('cmp-a', { vm_state: 'stopped', power_state: SHUTDOWN });
    const paused = r.instance('cmp-a', { vm_state: 'paused', power_state: PAUSED });
    const bridge = new Bridge('cmp-a');
    await r.handler.handleLifecycle(bridge.event(stopped, 'started', RUNNING));
    await r.handler.handleLifecycle(bridge.event(paused, 'stopped', SHUTDOWN));
    assert.deepEqual(
      r.commands.map((command) => [command.instance_uuid, command.action, command.only_if_power_states]),
      [
        [stopped, 'force_stop', undefined],
        [paused, 'force_stop', undefined],
      ],
    );
  });

  it('compute_api.stop refuses an instance never launched (InstanceInvalidState): power written, no command', async () => {
    const r = rig();
    const uuid = r.instance('cmp-a', { launched_at: null });
    assert.equal(
      await r.handler.handleLifecycle(new Bridge('cmp-a').event(uuid, 'stopped', SHUTDOWN)),
      'synced',
    );
    const row = r.store.row(uuid);
    assert.equal(row.power_state, SHUTDOWN);
    assert.equal(row.task_state, null);
    assert.equal(row.last_action, null);
    assert.deepEqual(r.commands, []);
    assert.deepEqual(await actionsOf(r), { power_state_updated: 1, stop_not_allowed: 1 });
  });

  it('force_stop has no such checks: a stopped instance never launched is still force-stopped', async () => {
    const r = rig();
    const uuid = r.instance('cmp-a', { vm_state: 'stopped', power_state: SHUTDOWN, launched_at: null });
    await r.handler.handleLifecycle(new Bridge('cmp-a').event(uuid, 'started', RUNNING));
    assert.equal(r.commands[0]?.action, 'force_stop');
  });

  it('the instance is in the stop until it ends: its own events meet the task check', async () => {
    const r = rig();
    const uuid = r.instance('cmp-a');
    const bridge = new Bridge('cmp-a');
    await r.handler.handleLifecycle(bridge.event(uuid, 'stopped', SHUTDOWN));
    assert.equal(await r.handler.handleLifecycle(bridge.event(uuid, 'sync', SHUTDOWN)), 'skipped_task');
    assert.equal(r.commands.length, 1, 'no second command');
  });

  it("the stop ends with the bridge's result (stop_instance): vm_state stopped, task cleared", async () => {
    const r = rig();
    const uuid = r.instance('cmp-a');
    await r.handler.handleLifecycle(new Bridge('cmp-a').event(uuid, 'stopped', SHUTDOWN));
    const command = r.commands[0];
    assert.ok(command);
    assert.equal(await r.handler.handleResult(resultFor(command, 'stopped', SHUTDOWN)), 'command_result');
    const row = r.store.row(uuid);
    assert.equal(row.vm_state, 'stopped');
    assert.equal(row.task_state, null);
    assert.equal(row.pending_command_id, null);
    assert.equal(row.last_action, 'stop_completed');
  });

  it('a failed stop reverts the task (reverts_task_state): vm_state and power_state stay', async () => {
    const r = rig();
    const uuid = r.instance('cmp-a');
    await r.handler.handleLifecycle(new Bridge('cmp-a').event(uuid, 'stopped', SHUTDOWN));
    const command = r.commands[0];
    assert.ok(command);
    assert.equal(await r.handler.handleResult(resultFor(command, 'failed', RUNNING)), 'command_result');
    const row = r.store.row(uuid);
    assert.equal(row.vm_state, 'active');
    assert.equal(row.power_state, SHUTDOWN);
    assert.equal(row.task_state, null);
    assert.match(row.last_error ?? '', /^failed: /);
  });

  it('no result within the stop timeout: the task is cleared and the timeout recorded; a late result changes nothing', async () => {
    const r = rig();
    const uuid = r.instance('cmp-a');
    await r.handler.handleLifecycle(new Bridge('cmp-a').event(uuid, 'stopped', SHUTDOWN));
    const command = r.commands[0];
    assert.ok(command);
    r.clock += 59_000_000;
    assert.equal(await r.handler.expireCommands(), 0, 'not before the deadline');
    r.clock += 2_000_000;
    assert.equal(await r.handler.expireCommands(), 1);
    const row = r.store.row(uuid);
    assert.equal(row.task_state, null);
    assert.equal(row.vm_state, 'active');
    assert.equal(row.pending_command_id, null);
    assert.equal(row.last_action, 'stop_timeout');
    assert.match(row.last_error ?? '', /^timeout: no result for stop command .* within 60000 ms$/);
    assert.equal((await actionsOf(r)).stop_timeout, 1);
    assert.equal(await r.handler.expireCommands(), 0, 'cleared once');
    assert.equal(await r.handler.handleResult(resultFor(command, 'stopped', SHUTDOWN)), 'late_result');
    assert.equal(r.store.row(uuid).vm_state, 'active');
  });

  it('an expired command whose row moved on (an operator cleared it) is not the sweep’s to clear', async () => {
    const r = rig();
    const uuid = r.instance('cmp-a');
    await r.handler.handleLifecycle(new Bridge('cmp-a').event(uuid, 'stopped', SHUTDOWN));
    // The store lists it as expired, but between that read and the decision an operator took it.
    const listed = r.store.row(uuid);
    r.store.expiredCommands = () => Promise.resolve([listed]);
    r.store.rows.set(uuid, {
      ...listed,
      task_state: null,
      pending_command_id: null,
      version: listed.version + 1,
    });
    r.clock += 61_000_000;
    assert.equal(await r.handler.expireCommands(), 0);
    assert.equal(r.store.row(uuid).last_action, 'stop');
  });

  it("the sweep's outcomes say what it did: timed_out, or no_longer_pending for a row that left the command", async () => {
    const r = rig();
    const uuid = r.instance('cmp-a');
    await r.handler.handleLifecycle(new Bridge('cmp-a').event(uuid, 'stopped', SHUTDOWN));
    const listed = r.store.row(uuid);
    // Decisions only (their effects, which would notify, are not run here).
    const task = expiryTask(
      {
        logger: createLogger('silent', 'expiry-test'),
        metrics: r.metrics,
        notifier: undefined as never,
        stopTimeoutMs: 60_000,
        now: () => r.clock,
      },
      listed,
    );
    assert.equal(task.decide(listed).outcome, 'timed_out');
    assert.equal(task.decide({ ...listed, pending_command_id: null }).outcome, 'no_longer_pending');
    assert.equal(task.decide(undefined).outcome, 'no_longer_pending');
  });

  it('a command the broker would not take: counted, the row waits for the stop timeout (the next sync retries)', async () => {
    const r = rig({ refuseCommands: true });
    const uuid = r.instance('cmp-a');
    assert.equal(
      await r.handler.handleLifecycle(new Bridge('cmp-a').event(uuid, 'stopped', SHUTDOWN)),
      'synced',
    );
    assert.equal(r.store.row(uuid).task_state, 'powering-off');
    assert.equal((await actionsOf(r)).command_publish_failed, 1);
    assert.deepEqual((await r.metrics.commandsPublished.get()).values, []);
  });
});

describe("virtbus's additions to Nova's steps", () => {
  it('a redelivered event (the same position) is out of order and changes nothing', async () => {
    const r = rig();
    const uuid = r.instance('cmp-a');
    const event = new Bridge('cmp-a').event(uuid, 'paused', PAUSED);
    assert.equal(await r.handler.handleLifecycle(event), 'synced');
    const after = r.store.row(uuid);
    assert.equal(await r.handler.handleLifecycle(event), 'out_of_order');
    assert.deepEqual(r.store.row(uuid), after);
  });

  it('the position check comes before the staleness guard and the task check', async () => {
    const r = rig();
    const uuid = r.instance('cmp-a');
    const bridge = new Bridge('cmp-a');
    const old = bridge.event(uuid, 'stopped', RUNNING);
    await r.handler.handleLifecycle(bridge.event(uuid, 'sync', RUNNING));
    assert.equal(await r.handler.handleLifecycle(old), 'out_of_order');
  });

  it('observe mode: the table runs, the stop API is only recorded (would_stop, would_force_stop)', async () => {
    const r = rig({ mode: 'observe' });
    const active = r.instance('cmp-a');
    const stopped = r.instance('cmp-a', { vm_state: 'stopped', power_state: SHUTDOWN });
    const bridge = new Bridge('cmp-a');
    assert.equal(await r.handler.handleLifecycle(bridge.event(active, 'stopped', SHUTDOWN)), 'synced');
    assert.equal(await r.handler.handleLifecycle(bridge.event(stopped, 'started', RUNNING)), 'synced');
    assert.deepEqual(r.commands, []);
    assert.equal(r.store.row(active).last_action, 'would_stop');
    assert.equal(r.store.row(active).task_state, null);
    assert.equal(r.store.row(stopped).last_action, 'would_force_stop');
    assert.deepEqual(await actionsOf(r), { power_state_updated: 2, would_stop: 1, would_force_stop: 1 });
  });

  it("a live migration in evidence withholds the stop (Nova does not act on task_state 'migrating')", async () => {
    const r = rig();
    const uuid = r.instance('cmp-a');
    // The destination reports the guest arriving (STARTED MIGRATED, paused): evidence only.
    assert.equal(
      await r.handler.handleLifecycle(new Bridge('cmp-b').event(uuid, 'started', PAUSED, 1)),
      'migrating',
    );
    assert.equal(
      await r.handler.handleLifecycle(new Bridge('cmp-a').event(uuid, 'stopped', SHUTDOWN)),
      'synced',
    );
    const row = r.store.row(uuid);
    assert.equal(row.power_state, SHUTDOWN, 'the power state is still recorded');
    assert.equal(row.task_state, null);
    assert.equal(row.last_action, 'withheld_stop');
    assert.deepEqual(r.commands, []);
    assert.equal((await actionsOf(r)).migration_stop_withheld, 1);
  });

  it('a batch decides its messages in order on the row as the previous ones left it', async () => {
    const r = rig();
    const uuid = r.instance('cmp-a');
    const before = r.store.row(uuid);
    const bridge = new Bridge('cmp-a');
    const results = await r.handler.handleBatch([
      { kind: 'lifecycle', event: bridge.event(uuid, 'paused', PAUSED) },
      { kind: 'lifecycle', event: bridge.event(uuid, 'stopped', SHUTDOWN) },
      { kind: 'lifecycle', event: bridge.event(uuid, 'sync', SHUTDOWN) },
    ]);
    assert.deepEqual(
      results.map((result) => (result.ok ? result.outcome : 'failed')),
      ['synced', 'synced', 'skipped_task'],
    );
    assert.equal(r.commands.length, 1);
    assert.equal(r.store.row(uuid).version, before.version + 1, 'one write for the batch');
  });
});

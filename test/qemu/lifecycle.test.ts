/**
 * Every single-host transition a real hypervisor produces, end to end: real TCG guests under a
 * private qemu libvirtd, the real bridge, the consumer in nova mode, and assertions on the bus
 * messages, the row, the stop commands and their results, and the instance.update notifications.
 * libvirt's test driver cannot reboot, crash, suspend to RAM or shut down from inside a guest, and
 * QEMU emits its events in its own order (RESUMED before STARTED, SHUTDOWN ~2 s before STOPPED), which
 * is where Nova's delayed STOPPED and its 4b stop matter. Only the start snapshot runs here (periodic
 * snapshots are in snapshots.test.ts), so every action comes from an event.
 * Each scenario has its own guest; all guests boot at once and the scenarios run concurrently.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { COMMAND_SCHEMA } from '../../src/messages/command';
import { isoMicros, nowMicros } from '../../src/util/time';
import { waitUntil } from '../../src/sandbox';
import { startQemuRig, type QemuRig } from '../support/qemu';

/**
 * Longer than QEMU's ~2 s SHUTDOWN → STOPPED gap, and long enough that a `virsh start` or `restore`
 * issued right after a destroy or save lands inside it even with eleven TCG guests busy on two shared
 * cores (a start or a restore took up to 13 s here with the machine loaded; Nova's default is 15 s).
 */
const STOP_DELAY_MS = 20000;
const GRACEFUL_TIMEOUT_MS = 5000;
/** Long enough for a held STOPPED to have been published and acted on, had it not been cancelled. */
const SETTLE_MS = STOP_DELAY_MS + 2500;

const GUESTS = [
  'q-boot',
  'q-reboot',
  'q-hard',
  'q-off',
  'q-acpi',
  'q-panic',
  'q-wake',
  'q-save',
  'q-msave',
  'q-force',
  'q-deaf',
] as const;

/** The row and the bus after a transition Nova must not act on: active, running, no command. */
async function assertUntouched(rig: QemuRig, uuid: string, from: number): Promise<void> {
  await sleep(SETTLE_MS);
  const after = rig.transitions(uuid).slice(from);
  assert.ok(!after.includes('stopped'), `no stopped published; saw ${after.join(', ')}\n${rig.trace(uuid)}`);
  assert.deepEqual(rig.commandsFor(uuid), [], 'no stop or force_stop sent');
  const row = await rig.row(uuid);
  assert.equal(row.vm_state, 'active');
  assert.equal(row.task_state, null);
  assert.equal(row.power_state, 1);
  assert.equal(row.last_action, null);
}

/** After a guest that went off by itself: Nova's 4b stop, answered already_stopped, row stopped/4. */
async function assertStoppedByNova(rig: QemuRig, uuid: string): Promise<void> {
  const row = await rig.waitRow(
    uuid,
    'stopped, no task',
    (r) => r.vm_state === 'stopped' && r.task_state === null,
  );
  assert.equal(row.power_state, 4);
  assert.equal(row.last_action, 'stop_completed');
  assert.equal(row.last_error, null);
  const commands = rig.commandsFor(uuid);
  assert.equal(commands.length, 1, `one command; got ${JSON.stringify(commands)}`);
  assert.equal(commands[0]?.action, 'stop');
  assert.deepEqual(commands[0]?.only_if_power_states, [4, 6]);
  const results = rig.resultsFor(uuid);
  assert.equal(results.length, 1);
  assert.equal(results[0]?.outcome, 'already_stopped');
  assert.equal(results[0]?.power_state, 4);
  // The notification follows the row's commit.
  await waitUntil(
    'an instance.update saying stopped/shutdown',
    () =>
      rig
        .notificationsFor(uuid)
        .map((n) => n.payload['nova_object.data'])
        .some(
          (data) => data.state === 'stopped' && data.power_state === 'shutdown' && data.task_state === null,
        ),
    10000,
  );
}

describe('real QEMU guests on one host: bridge + nova-mode consumer', { concurrency: true }, async () => {
  const rig = await startQemuRig({
    name: 'life',
    guests: GUESTS.map((name) => ({ name })),
    stopDelayMs: STOP_DELAY_MS,
    resyncSeconds: 0,
    gracefulTimeoutMs: GRACEFUL_TIMEOUT_MS,
  });
  const uuid = (name: (typeof GUESTS)[number]): string => rig.guest(name).uuid;

  it('boot: RESUMED then STARTED on the bus, the row becomes active/running, no command', async (t) => {
    for (const name of GUESTS) {
      const id = uuid(name);
      await rig.waitRow(id, 'running', (r) => r.power_state === 1);
      const boot = rig.transitions(id).filter((transition) => transition !== 'defined');
      assert.deepEqual(boot.slice(0, 2), ['resumed', 'started'], `${name}: ${rig.trace(id)}`);
      const started = rig.messages.find((m) => m.instance_uuid === id && m.transition === 'started');
      assert.deepEqual(
        [started?.libvirt?.event, started?.libvirt?.detail, started?.power_state],
        ['STARTED', 'BOOTED', 1],
      );
      const row = await rig.row(id);
      assert.equal(row.vm_state, 'active');
      assert.equal(row.task_state, null);
      assert.ok(
        rig.notificationsFor(id).some((n) => n.payload['nova_object.data'].power_state === 'running'),
        `${name}: an instance.update says running`,
      );
    }
    t.diagnostic(`boot of q-boot:\n${rig.trace(uuid('q-boot'))}`);
    assert.deepEqual(rig.commands, [], 'no command after booting');
  });

  it('pause and resume: paused (row power_state 3, Nova only warns), then resumed (1)', async (t) => {
    const id = uuid('q-boot');
    await rig.waitRow(id, 'running', (r) => r.power_state === 1);
    await rig.host.virsh('suspend', 'q-boot');
    const paused = await rig.waitTransition(id, 'paused');
    assert.equal(paused.power_state, 3);
    await rig.waitRow(id, 'paused', (r) => r.power_state === 3);
    assert.equal((await rig.row(id)).vm_state, 'active');
    await rig.host.virsh('resume', 'q-boot');
    await rig.waitTransition(id, 'resumed', 30000, 2);
    await rig.waitRow(id, 'running again', (r) => r.power_state === 1);
    assert.deepEqual(rig.commandsFor(id), []);
    assert.equal(await rig.guest('q-boot').state(), 'running');
    t.diagnostic(rig.trace(id));
  });

  it('guest-initiated reboot and virsh reboot: rebooted on the bus, no stopped, row untouched', async (t) => {
    const guest = rig.guest('q-reboot');
    const id = guest.uuid;
    const from = rig.transitions(id).length;
    await guest.order('reboot');
    await guest.waitBooted();
    await rig.waitTransition(id, 'rebooted');
    await assertUntouched(rig, id, from);
    const fromVirsh = rig.transitions(id).length;
    const rebootsBefore = rig.transitions(id).filter((x) => x === 'rebooted').length;
    guest.markBoot();
    await rig.host.virsh('reboot', guest.name);
    await guest.waitBooted();
    await rig.waitTransition(id, 'rebooted', 30000, rebootsBefore + 1);
    await assertUntouched(rig, id, fromVirsh);
    assert.equal(await guest.state(), 'running');
    t.diagnostic(rig.trace(id));
  });

  it('hard reboot (destroy + start within the stop delay): no stopped published, no command', async (t) => {
    const guest = rig.guest('q-hard');
    const id = guest.uuid;
    const from = rig.transitions(id).length;
    await rig.host.virsh('destroy', guest.name);
    await guest.start();
    await rig.waitTransition(id, 'started', 30000, 2);
    await assertUntouched(rig, id, from);
    const after = rig.transitions(id).slice(from);
    assert.ok(after.includes('resumed') && after.includes('started'), after.join(', '));
    assert.equal(await guest.state(), 'running');
    t.diagnostic(rig.trace(id));
  });

  it('guest power-off: shutdown, stopped after the delay, Nova’s 4b stop, row stopped/4, guest off', async (t) => {
    const guest = rig.guest('q-off');
    const id = guest.uuid;
    await guest.order('poweroff');
    const stopped = await rig.waitTransition(id, 'stopped', 60000);
    assert.equal(stopped.power_state, 4);
    assert.equal(stopped.libvirt?.detail, 'SHUTDOWN');
    assert.ok(stopped.delayed_ms >= STOP_DELAY_MS - 50, `held ${stopped.delayed_ms} ms`);
    const seen = rig.transitions(id);
    assert.ok(
      seen.indexOf('shutdown') >= 0 && seen.indexOf('shutdown') < seen.indexOf('stopped'),
      seen.join(', '),
    );
    await assertStoppedByNova(rig, id);
    assert.equal(await guest.state(), 'shut off');
    t.diagnostic(rig.trace(id));
  });

  it('virsh shutdown (ACPI, the guest powers off): stopped after the delay, 4b stop, row stopped/4', async (t) => {
    const guest = rig.guest('q-acpi');
    const id = guest.uuid;
    await rig.host.virsh('shutdown', guest.name);
    const stopped = await rig.waitTransition(id, 'stopped', 60000);
    assert.equal(stopped.power_state, 4);
    await assertStoppedByNova(rig, id);
    assert.equal(await guest.state(), 'shut off');
    t.diagnostic(rig.trace(id));
  });

  it('guest panic with on_crash=destroy: crashed then stopped, 4b stop, row stopped/4, guest off', async (t) => {
    const guest = rig.guest('q-panic');
    const id = guest.uuid;
    await guest.order('panic');
    const crashed = await rig.waitTransition(id, 'crashed', 30000);
    assert.equal(crashed.libvirt?.detail, 'PANICKED');
    const stopped = await rig.waitTransition(id, 'stopped', 60000);
    assert.equal(stopped.libvirt?.detail, 'CRASHED');
    await assertStoppedByNova(rig, id);
    assert.equal(await guest.state(), 'shut off');
    t.diagnostic(rig.trace(id));
  });

  it('guest suspend to RAM then dompmwakeup before any snapshot: pmsuspended, started, no command', async (t) => {
    const guest = rig.guest('q-wake');
    const id = guest.uuid;
    const from = rig.transitions(id).length;
    await guest.order('suspend');
    const suspended = await rig.waitTransition(id, 'pmsuspended', 30000);
    assert.equal(suspended.nova_transition, null, 'Nova ignores the event');
    await guest.waitState('pmsuspended');
    await rig.host.virsh('dompmwakeup', guest.name);
    await guest.waitState('running');
    await rig.waitTransition(id, 'started', 30000, 2);
    await assertUntouched(rig, id, from);
    t.diagnostic(rig.trace(id));
  });

  it('virsh save then restore within the stop delay: no stopped published, no command, running', async (t) => {
    const guest = rig.guest('q-save');
    const id = guest.uuid;
    const from = rig.transitions(id).length;
    const image = `${rig.host.dir}/q-save.save`;
    await rig.host.virsh('save', guest.name, image);
    await rig.host.virsh('restore', image);
    await rig.waitTransition(id, 'started', 30000, 2);
    await assertUntouched(rig, id, from);
    assert.equal(await guest.state(), 'running');
    t.diagnostic(rig.trace(id));
  });

  it('virsh managedsave then start within the stop delay: no stopped published, no command', async (t) => {
    const guest = rig.guest('q-msave');
    const id = guest.uuid;
    const from = rig.transitions(id).length;
    await rig.host.virsh('managedsave', guest.name);
    await rig.host.virsh('start', guest.name);
    await rig.waitTransition(id, 'started', 30000, 2);
    await assertUntouched(rig, id, from);
    assert.equal(await guest.state(), 'running');
    t.diagnostic(rig.trace(id));
  });

  it('force_stop of a guest running while its row is stopped: ACPI shutdown, outcome stopped', async (t) => {
    const guest = rig.guest('q-force');
    const id = guest.uuid;
    await rig.waitRow(id, 'running', (r) => r.power_state === 1);
    // The row says stopped (as after a stop the guest escaped); the next event makes Nova force it off.
    await rig.host.virsh('suspend', guest.name);
    await rig.waitRow(id, 'paused', (r) => r.power_state === 3);
    const row = await rig.row(id);
    assert.ok(await rig.store.update({ ...row, vm_state: 'stopped' }));
    await rig.host.virsh('resume', guest.name);
    const done = await rig.waitRow(
      id,
      'force_stop completed',
      (r) => r.last_action === 'force_stop_completed',
      60000,
    );
    assert.equal(done.vm_state, 'stopped');
    assert.equal(done.task_state, null);
    assert.equal(done.power_state, 4);
    const commands = rig.commandsFor(id);
    assert.equal(commands.length, 1);
    assert.equal(commands[0]?.action, 'force_stop');
    const results = rig.resultsFor(id);
    assert.equal(results[0]?.outcome, 'stopped');
    // Nova's force_stop shuts down cleanly first (compute_api.force_stop: clean_shutdown=True): the
    // guest itself answered the ACPI request (SHUTDOWN/GUEST). power_off then always destroys: the
    // method is 'destroy' when the guest was still in libvirt's SHUTDOWN state, 'shutdown' when it had
    // already reached SHUTOFF by itself.
    const guestShutdown = rig.messages.find(
      (m) => m.instance_uuid === id && m.transition === 'shutdown' && m.libvirt?.detail === 'GUEST',
    );
    assert.ok(guestShutdown, `the guest shut down on the ACPI request:\n${rig.trace(id)}`);
    assert.ok(['shutdown', 'destroy'].includes(results[0]?.method ?? ''), JSON.stringify(results[0]));
    assert.equal(await guest.state(), 'shut off');
    // The STOPPED its own shutdown caused arrives after the delay and changes nothing.
    await sleep(SETTLE_MS);
    assert.equal(rig.commandsFor(id).length, 1);
    assert.equal((await rig.row(id)).vm_state, 'stopped');
    t.diagnostic(rig.trace(id));
  });

  it('stop of a guest that ignores ACPI: destroyed after the graceful timeout, outcome reported', async (t) => {
    const guest = rig.guest('q-deaf');
    const id = guest.uuid;
    await guest.order('ignore-acpi');
    const commandId = randomUUID();
    const sent = Date.now();
    await rig.sendCommand({
      schema: COMMAND_SCHEMA,
      command_id: commandId,
      action: 'stop',
      host: rig.hostName,
      instance_uuid: id,
      reason: 'test: stop a guest that ignores ACPI',
      issued_at: isoMicros(nowMicros()),
      expires_at: isoMicros(nowMicros() + 120_000_000),
    });
    await waitUntil('the command result', () => rig.results.some((r) => r.command_id === commandId), 60000);
    const result = rig.results.find((r) => r.command_id === commandId);
    assert.equal(result?.outcome, 'stopped');
    assert.equal(result?.method, 'destroy');
    assert.equal(result?.power_state, 4);
    assert.ok(Date.now() - sent >= GRACEFUL_TIMEOUT_MS, 'the graceful attempt was given its timeout');
    assert.equal(await guest.state(), 'shut off');
    const stopped = await rig.waitTransition(id, 'stopped', 60000);
    assert.equal(stopped.libvirt?.detail, 'DESTROYED');
    t.diagnostic(rig.trace(id));
  });
});

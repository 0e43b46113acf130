/**
 * Issue 9, 4d on a real guest: hard reboots (destroy, then start within the stop delay) while the
 * bridge takes a snapshot every second, with the consumer in Nova mode. Before the fix the snapshot
 * listed the guest SHUTOFF inside the window, the consumer sent stop, then force_stop for the STARTED
 * that followed, and the guest ended destroyed. Now: no `sync` says the guest is off, no `stopped`
 * is published, no command is sent, the row stays active/running and the guest runs.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startQemuHost } from '../../src/sandbox';
import { startVirtbus } from '../support/bridge-process';
import { BusRecorder } from '../support/bus';
import { testBroker } from '../support/services';
import { instance, row, tempSqliteUrl } from '../support/consumer';
import { openStore } from '../../src/store/open';
import { createLogger } from '../../src/util/log';
import type { StopCommand } from '../../src/messages/command';
import { parseIsoMicros } from '../../src/util/time';

const HOST = 'qemu-reboot';
// Nova's own delay: on a loaded 2-core machine a TCG guest's destroy → start can take several
// seconds, and a window longer than the delay is no reboot window any more (the stop is then due).
const STOP_DELAY_MS = 15000;
const EXCHANGE_ARGS = { arguments: { 'alternate-exchange': 'virtbus.unroutable' } };

describe('hard reboots of a real guest overlapping snapshots', async () => {
  const [host, broker] = await Promise.all([startQemuHost({ name: 'reboot' }), testBroker()]);
  after(() => host.dispose());
  const guest = await host.defineGuest({ name: 'hard-1', control: false });
  const dbUrl = tempSqliteUrl();
  const store = openStore(
    { url: dbUrl, poolSize: 1, sqliteSynchronous: 'full', busyTimeoutMs: 5000 },
    createLogger('silent', 'test'),
  );
  after(() => store.close());
  await store.upsert([instance({ uuid: guest.uuid, host: HOST, vm_state: 'active', power_state: 1 })]);
  const bus = await BusRecorder.listen(broker.url, 'virtbus.lifecycle', ['#'], EXCHANGE_ARGS);
  after(() => bus.close());
  const commands = await BusRecorder.listen<StopCommand>(broker.url, 'virtbus.commands', ['*.stop']);
  after(() => commands.close());

  await guest.start();
  const consumer = startVirtbus('consumer', { VIRTBUS_AMQP_URL: broker.url, VIRTBUS_DB_URL: dbUrl });
  after(() => consumer.stop('SIGTERM'));
  await consumer.waitForLog('consuming', (line) => line.msg === 'consuming');
  const bridge = startVirtbus('bridge', {
    VIRTBUS_HOST: HOST,
    VIRTBUS_LIBVIRT_URI: host.uri,
    VIRTBUS_AMQP_URL: broker.url,
    VIRTBUS_STOP_DELAY_MS: String(STOP_DELAY_MS),
    VIRTBUS_RESYNC_INTERVAL: '1',
    VIRTBUS_GRACEFUL_SHUTDOWN_TIMEOUT_MS: '1000',
  });
  after(() => bridge.stop('SIGTERM'));
  await bus.waitFor('the start snapshot', (m) => m.some((x) => x.body.transition === 'sync_end'), 60000);

  it('publishes no stopped, withholds the guest from every snapshot taken while off, sends no command', async () => {
    const mine = () => bus.messages.map((m) => m.body).filter((b) => b.instance_uuid === guest.uuid);
    const windows: Array<{ from: number; to: number }> = [];
    for (let round = 0; round < 2; round += 1) {
      const from = Date.now() * 1000;
      await host.virsh('destroy', guest.name);
      await bus.waitFor('a snapshot inside the reboot window', (m) =>
        m.some(
          (x) =>
            x.body.transition === 'sync_end' &&
            parseIsoMicros(x.body.snapshot?.taken_at ?? '') > from + 100_000,
        ),
      );
      await host.virsh('start', guest.name);
      windows.push({ from, to: Date.now() * 1000 });
      await bus.waitFor(
        'started again',
        () => mine().filter((b) => b.transition === 'started').length > round,
        30000,
      );
    }
    // Past the delay of the last destroy, and a few snapshots more for the consumer to act on.
    await sleep(Math.max(0, windows[windows.length - 1]!.from / 1000 + STOP_DELAY_MS + 2000 - Date.now()));
    for (const window of windows)
      assert.ok(window.to - window.from < STOP_DELAY_MS * 1000, 'each reboot stayed within the delay');
    const inWindow = bus.messages
      .map((m) => m.body)
      .filter((b) => {
        const taken = parseIsoMicros(b.snapshot?.taken_at ?? '');
        return b.transition === 'sync_end' && windows.some((w) => taken > w.from && taken < w.to);
      });
    assert.ok(inWindow.length >= 2, `snapshots inside the reboot windows: ${inWindow.length}`);
    for (const end of inWindow) assert.ok(end.instance_uuids?.includes(guest.uuid), 'listed: not vanished');
    assert.deepEqual(
      mine().filter((b) => b.transition === 'sync' && (b.power_state === 4 || b.power_state === 6)),
      [],
      'no sync says the guest is off (a sync may say paused: QEMU starts a guest paused)',
    );
    assert.deepEqual(
      mine().filter((b) => b.transition === 'stopped'),
      [],
    );
    assert.deepEqual(
      commands.messages.map((m) => m.body.action),
      [],
      'no stop or force_stop',
    );
    const current = await row(store, guest.uuid);
    assert.equal(current.vm_state, 'active');
    assert.equal(current.power_state, 1);
    assert.equal(current.task_state, null);
    assert.equal(await guest.state(), 'running');
  });
});

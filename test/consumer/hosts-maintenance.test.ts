/**
 * Maintenance mode per host, on a real RabbitMQ vhost and both stores: a host disabled with
 * `virtbus hosts disable` during a reboot storm gets no stop or force_stop, its rows record the
 * power states (vm_state untouched, the withheld action noted), another host is not affected, and
 * `hosts list` and the metrics show it; after `virtbus hosts enable` the next snapshot applies Nova's
 * table as usual (stops for the guests that stayed down, nothing for those running).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { PowerStateCode } from '../../src/libvirt/constants';
import { testBroker, testPostgresUrl } from '../support/services';
import {
  Bus,
  EventFactory,
  instance,
  row,
  startConsumer,
  tempSqliteUrl,
  waitUntil,
} from '../support/consumer';
import { listedHost, snapshotMessages, virtbusCli } from '../support/hosts';

const HOST = 'cmp-maint.example.org';
const OTHER = 'cmp-busy.example.org';
const GUESTS = 12;
const INTERVAL_S = 600;

for (const kind of ['sqlite', 'postgres'] as const) {
  describe(`maintenance mode per host (${kind})`, async () => {
    const broker = await testBroker();
    const dbUrl = kind === 'sqlite' ? tempSqliteUrl() : await testPostgresUrl();
    const consumer = await startConsumer({
      amqpUrl: broker.url,
      dbUrl,
      env: { VIRTBUS_CONSUMER_HOSTS_INTERVAL_MS: '200', VIRTBUS_STOP_TIMEOUT_MS: '20000' },
    });
    const bus = await Bus.open(broker.url, consumer.config);
    bus.answerCommands(() => ({ outcome: 'stopped', power_state: 4 }));
    const exchange = consumer.config.amqp.exchange;
    const events = new EventFactory();
    const guests = Array.from({ length: GUESTS }, () => randomUUID());
    const other = randomUUID();
    await consumer.store.upsert([
      ...guests.map((uuid) => instance({ uuid, host: HOST, vm_state: 'active', power_state: 1 })),
      instance({ uuid: other, host: OTHER, vm_state: 'active', power_state: 1 }),
    ]);
    /** Even guests stay down after the storm, odd ones come back. */
    const down = guests.filter((_, index) => index % 2 === 0);
    const up = guests.filter((_, index) => index % 2 === 1);
    const cli = (args: string[]) => virtbusCli([...args, '--db-url', dbUrl]);
    const publishAll = async (messages: ReturnType<EventFactory['event']>[]): Promise<void> => {
      await bus.publishLifecycle(exchange, messages);
      await Promise.all(messages.map((message) => consumer.waitProcessed(message.event_id, 20000)));
    };

    it('a host disabled during a reboot storm gets no commands; its rows record the power states', async () => {
      const disabled = await cli(['hosts', 'disable', HOST, '--reason', 'kernel update', '--until', '2h']);
      assert.equal(disabled.code, 0, disabled.stderr);
      assert.match(disabled.stdout, /in maintenance until/);
      await waitUntil(
        'the consumer to see the switch',
        () => consumer.service.hosts.maintenance.check(HOST, Date.now() * 1000) !== undefined,
        10000,
      );
      // The storm: every guest goes down, half come back, the rest stay down — events, then the
      // bridge's snapshot saying the same.
      const storm = guests.flatMap((uuid) => [
        events.event(HOST, uuid, 'stopped', 4),
        ...(up.includes(uuid) ? [events.event(HOST, uuid, 'started', 1)] : []),
      ]);
      const states = new Map<string, PowerStateCode>(guests.map((uuid) => [uuid, up.includes(uuid) ? 1 : 4]));
      await publishAll([...storm, ...snapshotMessages(events, HOST, states, INTERVAL_S)]);
      // A guest of another host that shuts down is stopped as usual meanwhile.
      await publishAll([events.event(OTHER, other, 'stopped', 4)]);
      await waitUntil('the other host’s stop', () => bus.commandsFor(other).length === 1, 10000);
      await sleep(500);
      assert.deepEqual(
        bus.commands.filter((command) => command.host === HOST),
        [],
        'no stop or force_stop for the host in maintenance',
      );
      for (const uuid of down) {
        const current = await row(consumer.store, uuid);
        assert.deepEqual(
          [current.vm_state, current.task_state, current.power_state, current.last_action],
          ['active', null, 4, 'maintenance_stop'],
        );
      }
      for (const uuid of up) {
        const current = await row(consumer.store, uuid);
        assert.deepEqual([current.vm_state, current.power_state], ['active', 1]);
      }
      const withheld = await consumer.metrics.syncActions.get();
      const count = withheld.values.find((v) => v.labels.action === 'maintenance_stop_withheld')?.value;
      assert.ok(count !== undefined && count >= down.length, `withheld stops counted: ${count}`);
      // Visible in hosts list and in the metrics.
      const listed = await listedHost(dbUrl, HOST);
      assert.ok(listed, 'the host is listed');
      const maintenance = listed.maintenance as Record<string, unknown>;
      assert.deepEqual([maintenance.active, maintenance.reason], [true, 'kernel update']);
      assert.deepEqual(listed.rows, { running: up.length, shutdown: down.length });
      assert.equal(listed.snapshot_interval_seconds, INTERVAL_S);
      assert.equal(listed.state, 'ok');
      await consumer.service.hosts.tick();
      const gauge = await consumer.metrics.hosts.maintenance.get();
      assert.equal(gauge.values.find((v) => v.labels.host === HOST)?.value, 1);
      assert.equal(gauge.values.find((v) => v.labels.host === OTHER)?.value, 0);
    });

    it('enabled again, the next snapshot applies Nova’s table as usual', async () => {
      const enabled = await cli(['hosts', 'enable', HOST]);
      assert.equal(enabled.code, 0, enabled.stderr);
      await waitUntil(
        'the consumer to see maintenance end',
        () => consumer.service.hosts.maintenance.check(HOST, Date.now() * 1000) === undefined,
        10000,
      );
      const states = new Map<string, PowerStateCode>(guests.map((uuid) => [uuid, up.includes(uuid) ? 1 : 4]));
      await publishAll(snapshotMessages(events, HOST, states, INTERVAL_S));
      await waitUntil(
        'every guest that stayed down to be stopped',
        async () => {
          for (const uuid of down) if ((await row(consumer.store, uuid)).vm_state !== 'stopped') return false;
          return true;
        },
        20000,
      );
      for (const uuid of down) {
        const sent = bus.commandsFor(uuid);
        assert.equal(sent.length, 1, `one stop for ${uuid}`);
        assert.equal(sent[0]?.action, 'stop');
        assert.deepEqual(sent[0]?.only_if_power_states, [4, 6]);
      }
      for (const uuid of up) assert.equal(bus.commandsFor(uuid).length, 0, 'nothing for a running guest');
      const listed = await listedHost(dbUrl, HOST);
      assert.equal(listed?.maintenance, null);
    });

    it('an expired switch stops withholding by itself', async () => {
      const guest = randomUUID();
      await consumer.store.upsert([
        instance({ uuid: guest, host: HOST, vm_state: 'active', power_state: 1 }),
      ]);
      const disabled = await cli(['hosts', 'disable', HOST, '--reason', 'short', '--until', '2s']);
      assert.equal(disabled.code, 0, disabled.stderr);
      await waitUntil(
        'the consumer to see the switch',
        () => consumer.service.hosts.maintenance.check(HOST, Date.now() * 1000) !== undefined,
        10000,
      );
      await publishAll([events.event(HOST, guest, 'stopped', 4)]);
      assert.equal((await row(consumer.store, guest)).last_action, 'maintenance_stop');
      await waitUntil(
        'the switch to expire',
        () => consumer.service.hosts.maintenance.check(HOST, Date.now() * 1000) === undefined,
        10000,
      );
      await publishAll(snapshotMessages(events, HOST, new Map([[guest, 4]]), INTERVAL_S));
      await waitUntil('the stop after expiry', () => bus.commandsFor(guest).length === 1, 10000);
      const listed = await listedHost(dbUrl, HOST);
      assert.equal((listed?.maintenance as Record<string, unknown>).active, false);
    });
  });
}

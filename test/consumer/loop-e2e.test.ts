/**
 * The whole loop with real processes: `virtbus bridge` on a private libvirtd (test driver) and
 * `virtbus consumer` on a SQLite file, over a real RabbitMQ vhost. The bridge publishes what libvirt
 * does, the consumer runs Nova's sync, sends stop commands, the bridge executes them against libvirt
 * and reports back, the consumer completes the row.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect } from 'amqplib';
import { startVirtbus, type ServiceProcess } from '../support/bridge-process';
import { domainXml, openDriver } from '../support/domains';
import { testBroker, testLibvirtd } from '../support/services';
import { openStore } from '../../src/store/open';
import type { InstanceStore } from '../../src/store/types';
import type { StopCommand } from '../../src/messages/command';
import { createLogger } from '../../src/util/log';
import { instance, row, tempSqliteUrl, waitUntil } from '../support/consumer';
import { after } from 'node:test';

const HOST = 'cmp-01.example.org';
const STOP_DELAY_MS = 1500;
/** virDomainState SHUTOFF */
const SHUTOFF = 5;

describe('the loop: bridge → consumer → stop command → bridge → consumer', async () => {
  const [libvirtd, broker] = await Promise.all([testLibvirtd(), testBroker()]);
  const dbUrl = tempSqliteUrl();
  const driver = await openDriver(libvirtd.uri);
  after(() => driver.close());

  // Domains: A and C running, B defined and shut off; D exists only as a row.
  const [a, b, c] = await Promise.all(
    ['loop-a', 'loop-b', 'loop-c'].map((name) => driver.defineXML(domainXml(name))),
  );
  if (!a || !b || !c) throw new Error('domains not defined');
  await driver.start(a.uuid);
  await driver.start(c.uuid);
  const ghost = randomUUID();

  const db = { url: dbUrl, poolSize: 1, sqliteSynchronous: 'full', busyTimeoutMs: 5000 };
  const store: InstanceStore = openStore(db, createLogger('silent', 'test'));
  after(() => store.close());
  await store.upsert([
    instance({ uuid: a.uuid, host: HOST, vm_state: 'active', power_state: 1 }),
    instance({ uuid: b.uuid, host: HOST, vm_state: 'stopped', power_state: 4 }),
    instance({ uuid: c.uuid, host: HOST, vm_state: 'active', power_state: 1 }),
    instance({ uuid: ghost, host: HOST, vm_state: 'active', power_state: 1 }),
  ]);

  // Watch the stop commands on the bus.
  const model = await connect(broker.url);
  after(() => model.close().catch(() => undefined));
  const watch = await model.createChannel();
  await watch.assertExchange('virtbus.commands', 'topic', { durable: true });
  const { queue } = await watch.assertQueue('', { exclusive: true });
  await watch.bindQueue(queue, 'virtbus.commands', '*.stop');
  const commands: StopCommand[] = [];
  await watch.consume(
    queue,
    (message) => {
      if (message) commands.push(JSON.parse(message.content.toString('utf8')) as StopCommand);
    },
    { noAck: true },
  );

  const consumer: ServiceProcess = startVirtbus('consumer', {
    VIRTBUS_AMQP_URL: broker.url,
    VIRTBUS_DB_URL: dbUrl,
    VIRTBUS_STOP_TIMEOUT_MS: '20000',
  });
  after(async () => {
    const exit = await consumer.stop('SIGTERM');
    assert.deepEqual(exit, { code: 0, signal: null }, `consumer exit; stderr: ${consumer.stderr()}`);
  });
  await consumer.waitForLog('consuming', (line) => line.msg === 'consuming');

  const bridge: ServiceProcess = startVirtbus('bridge', {
    VIRTBUS_HOST: HOST,
    VIRTBUS_LIBVIRT_URI: libvirtd.uri,
    VIRTBUS_AMQP_URL: broker.url,
    VIRTBUS_STOP_DELAY_MS: String(STOP_DELAY_MS),
    VIRTBUS_GRACEFUL_SHUTDOWN_TIMEOUT_MS: '1000',
  });
  after(async () => {
    const exit = await bridge.stop('SIGTERM');
    assert.deepEqual(exit, { code: 0, signal: null }, `bridge exit; stderr: ${bridge.stderr()}`);
  });

  it('applies the start snapshot: a row whose domain does not exist becomes NOSTATE (sync_end)', async () => {
    await waitUntil(
      'the ghost row to be NOSTATE',
      async () => (await row(store, ghost)).power_state === 0,
      20000,
    );
    const ghostRow = await row(store, ghost);
    assert.equal(ghostRow.vm_state, 'active', 'active + NOSTATE: Nova only warns');
    assert.equal(ghostRow.task_state, null);
    // The domains that exist were synced and left alone.
    for (const uuid of [a.uuid, c.uuid]) assert.equal((await row(store, uuid)).power_state, 1);
    assert.equal((await row(store, b.uuid)).power_state, 4);
    assert.equal(commands.length, 0, 'no stop command from the start snapshot');
  });

  it('a guest destroyed behind the system’s back while active ends stopped with power_state 4', async () => {
    await driver.destroy(a.uuid);
    await waitUntil(
      'row A stopped',
      async () => {
        const current = await row(store, a.uuid);
        return current.vm_state === 'stopped' && current.task_state === null;
      },
      20000,
    );
    const current = await row(store, a.uuid);
    assert.equal(current.power_state, 4);
    assert.equal(current.last_action, 'stop_completed');
    assert.equal(current.last_error, null);
    const sent = commands.filter((command) => command.instance_uuid === a.uuid);
    assert.equal(sent.length, 1);
    assert.equal(sent[0]?.action, 'stop');
    assert.deepEqual(sent[0]?.only_if_power_states, [4, 6]);
    assert.equal((await driver.domainState(a.uuid)).state, SHUTOFF);
  });

  it('a domain started while its row is stopped is force-stopped by the bridge and ends shut off', async () => {
    await driver.start(b.uuid);
    await waitUntil(
      'the force_stop to complete',
      async () => (await row(store, b.uuid)).last_action === 'force_stop_completed',
      20000,
    );
    const current = await row(store, b.uuid);
    assert.equal(current.vm_state, 'stopped');
    assert.equal(current.task_state, null);
    assert.equal(current.power_state, 4);
    assert.equal((await driver.domainState(b.uuid)).state, SHUTOFF, 'the domain is shut off');
    const sent = commands.filter((command) => command.instance_uuid === b.uuid);
    assert.equal(sent.length, 1);
    assert.equal(sent[0]?.action, 'force_stop');
    // The STOPPED the bridge's own shutdown caused arrives after the delay and changes nothing.
    await sleep(STOP_DELAY_MS + 1000);
    const later = await row(store, b.uuid);
    assert.equal(later.vm_state, 'stopped');
    assert.equal(later.power_state, 4);
    assert.equal(commands.filter((command) => command.instance_uuid === b.uuid).length, 1);
  });

  it('a reboot (destroy and start within the stop delay) changes nothing', async () => {
    const before = await row(store, c.uuid);
    await driver.destroy(c.uuid);
    await driver.start(c.uuid);
    await waitUntil(
      'the started event to be applied',
      async () => (await row(store, c.uuid)).event_at_us !== before.event_at_us,
      20000,
    );
    await sleep(STOP_DELAY_MS + 1000);
    const current = await row(store, c.uuid);
    assert.equal(current.vm_state, 'active');
    assert.equal(current.task_state, null);
    assert.equal(current.power_state, 1);
    assert.equal(current.last_action, null);
    assert.equal(commands.filter((command) => command.instance_uuid === c.uuid).length, 0);
    assert.equal((await driver.domainState(c.uuid)).state, 1, 'still running');
  });
});

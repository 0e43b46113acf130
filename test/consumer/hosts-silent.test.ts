/**
 * Silent-host detection with real processes: `virtbus bridge` (periodic snapshots every 2 s) on a
 * private libvirtd with a running guest, `virtbus consumer` on a SQLite file, over a real RabbitMQ
 * vhost. Killed without a word (SIGKILL: no last message, no goodbye), the bridge is reported silent
 * by `virtbus hosts list` once its last complete snapshot is more than two intervals old — and not
 * before; the consumer's per-host gauges give the alert what it needs. A bridge that comes back
 * clears it with its start snapshot.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { hostViews, type HostView } from '../../src/consumer/host-status';
import { openStore } from '../../src/store/open';
import type { HostStore } from '../../src/store/hosts-types';
import { createLogger } from '../../src/util/log';
import { nowMicros } from '../../src/util/time';
import { metricValue, startVirtbus, type ServiceProcess } from '../support/bridge-process';
import { domainXml, openDriver } from '../support/domains';
import { testBroker, testLibvirtd } from '../support/services';
import { instance, tempSqliteUrl, waitUntil } from '../support/consumer';
import { listedHost } from '../support/hosts';

const HOST = 'cmp-silent.example.org';
const INTERVAL_S = 2;
/** The bound: two periodic intervals. */
const BOUND_US = 2 * INTERVAL_S * 1e6;

describe('a bridge killed without a word is reported silent; one that comes back clears it', async () => {
  const [libvirtd, broker] = await Promise.all([testLibvirtd(), testBroker()]);
  const dbUrl = tempSqliteUrl();
  const driver = await openDriver(libvirtd.uri);
  after(() => driver.close());
  const domain = await driver.defineXML(domainXml('silent-a'));
  if (!domain) throw new Error('domain not defined');
  await driver.start(domain.uuid);

  const store = openStore(
    { url: dbUrl, poolSize: 1, sqliteSynchronous: 'full', busyTimeoutMs: 5000 },
    createLogger('silent', 'test'),
  );
  after(() => store.close());
  await store.upsert([instance({ uuid: domain.uuid, host: HOST, vm_state: 'active', power_state: 1 })]);
  const hosts = store.hosts as HostStore;
  const view = async (): Promise<HostView | undefined> =>
    hostViews(await hosts.list(), await hosts.powerCounts(), nowMicros()).find((v) => v.host === HOST);

  const consumer: ServiceProcess = startVirtbus('consumer', {
    VIRTBUS_AMQP_URL: broker.url,
    VIRTBUS_DB_URL: dbUrl,
    VIRTBUS_CONSUMER_HOSTS_INTERVAL_MS: '200',
  });
  after(async () => {
    const exit = await consumer.stop('SIGTERM');
    assert.deepEqual(exit, { code: 0, signal: null }, `consumer exit; stderr: ${consumer.stderr()}`);
  });
  await consumer.waitForLog('consuming', (line) => line.msg === 'consuming');
  const bridgeEnv = {
    VIRTBUS_HOST: HOST,
    VIRTBUS_LIBVIRT_URI: libvirtd.uri,
    VIRTBUS_AMQP_URL: broker.url,
    VIRTBUS_RESYNC_INTERVAL: String(INTERVAL_S),
  };
  let bridge: ServiceProcess = startVirtbus('bridge', bridgeEnv);
  after(() => bridge.stop('SIGTERM'));
  let firstBoot = '';

  it('a reporting bridge: its snapshots, boot_id, interval and running rows are in the hosts view', async () => {
    await waitUntil(
      'the host to be ok with a periodic snapshot',
      async () => {
        const current = await view();
        return (
          current?.state === 'ok' && current.intervalSeconds === INTERVAL_S && current.rows.running === 1
        );
      },
      20000,
    );
    const current = (await view()) as HostView;
    assert.ok(current.bootId);
    firstBoot = current.bootId;
    assert.ok(current.lastEventUs !== null && current.lastEventUs >= (current.snapshotUs as number));
    // The consumer's gauges (what the VirtbusHostSilent alert reads).
    const base = await consumer.metricsUrl();
    await waitUntil(
      'the gauges',
      async () => {
        const text = await (await fetch(`${base}/metrics`)).text();
        return metricValue(text, 'virtbus_host_instances', { host: HOST, power_state: 'running' }) === 1;
      },
      20000,
    );
    const text = await (await fetch(`${base}/metrics`)).text();
    assert.equal(metricValue(text, 'virtbus_host_snapshot_interval_seconds', { host: HOST }), INTERVAL_S);
    const snapshotAt = metricValue(text, 'virtbus_host_last_snapshot_timestamp_seconds', { host: HOST });
    assert.ok(snapshotAt !== undefined && Math.abs(Date.now() / 1000 - snapshotAt) < 3 * INTERVAL_S);
    assert.equal(metricValue(text, 'virtbus_host_maintenance', { host: HOST }), 0);
  });

  it('SIGKILLed, the bridge is reported silent once two intervals passed since its last snapshot, not before', async () => {
    const exit = await bridge.stop('SIGKILL');
    assert.equal(exit.signal, 'SIGKILL');
    const killedUs = nowMicros();
    // Let the consumer flush what it had: the last snapshot the bridge got out.
    await sleep(500);
    const last = (await view()) as HostView;
    const takenUs = last.snapshotUs as number;
    assert.ok(killedUs - takenUs <= INTERVAL_S * 1e6 + 1e6, 'the last snapshot is at most an interval old');
    let silentAtUs = 0;
    let okSeenLateUs = 0;
    await waitUntil(
      'the host to be reported silent',
      async () => {
        const current = await view();
        const now = nowMicros();
        if (current?.state === 'ok') okSeenLateUs = now;
        if (current?.state !== 'silent') return false;
        silentAtUs = now;
        return true;
      },
      BOUND_US / 1000 + 5000,
      100,
    );
    // Not before the bound …
    assert.ok(silentAtUs - takenUs > BOUND_US, 'silent only after two intervals');
    assert.ok(okSeenLateUs - takenUs <= BOUND_US, 'ok while within two intervals');
    // … and within it (plus the polling step).
    assert.ok(silentAtUs - takenUs <= BOUND_US + 1e6, `silent ${(silentAtUs - takenUs) / 1e6}s after`);
    assert.ok(silentAtUs - killedUs <= BOUND_US + 1e6, 'within the bound of the kill');
    const listed = await listedHost(dbUrl, HOST);
    assert.equal(listed?.state, 'silent');
    assert.deepEqual(listed?.rows, { running: 1 });
  });

  it('the bridge back: its start snapshot clears it (a new boot_id)', async () => {
    bridge = startVirtbus('bridge', bridgeEnv);
    await waitUntil('the host to be ok again', async () => (await view())?.state === 'ok', 20000);
    const current = (await view()) as HostView;
    assert.notEqual(current.bootId, firstBoot, 'the new bridge process');
    const listed = await listedHost(dbUrl, HOST);
    assert.equal(listed?.state, 'ok');
    assert.equal(listed?.boot_id, current.bootId);
  });
});

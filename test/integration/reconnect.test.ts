/**
 * Connection life of the bridge: a libvirtd that is down at start is waited for; the broker URL list
 * is tried round-robin; periodic snapshots; SIGTERM while the broker is away keeps every accepted
 * message in the journal and the next start publishes it; SIGTERM with a full journal and no broker
 * is bounded by bridge.shutdownTimeoutMs.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ownRabbitNode, testBroker, testLibvirtd } from '../support/services';
import { BusRecorder } from '../support/bus';
import { metricValue, scrape, startVirtbus } from '../support/bridge-process';
import { domainXml, openDriver } from '../support/domains';
import { freePort } from '../../src/sandbox';

const EXCHANGE_ARGS = { arguments: { 'alternate-exchange': 'virtbus.unroutable' } };

describe('bridge connections', () => {
  it('waits for a libvirtd that is down at start, and tries broker URLs round-robin', async () => {
    const [libvirtd, broker] = await Promise.all([testLibvirtd(), testBroker()]);
    await libvirtd.stop();
    const recorder = await BusRecorder.listen(broker.url, 'virtbus.lifecycle', ['#'], EXCHANGE_ARGS);
    const deadPort = await freePort();
    const bridge = startVirtbus('bridge', {
      VIRTBUS_HOST: 'rc1',
      VIRTBUS_LIBVIRT_URI: libvirtd.uri,
      // The first broker does not exist: the bridge must move on to the second.
      VIRTBUS_AMQP_URL: `amqp://guest:guest@127.0.0.1:${deadPort},${broker.url}`,
      VIRTBUS_LIBVIRT_RECONNECT_MAX_DELAY_MS: '1000',
    });
    try {
      await bridge.waitForLog('a failed libvirt connect', (l) => l.msg === 'cannot connect to libvirt');
      await bridge.waitForLog('a failed broker connect', (l) => l.msg === 'cannot connect to the broker');
      await bridge.waitForLog('the second broker', (l) => l.msg === 'connected to the broker');
      const base = await bridge.metricsUrl();
      assert.equal((await fetch(`${base}/healthz`)).status, 200, 'alive while libvirtd is down');
      assert.equal((await fetch(`${base}/readyz`)).status, 503, 'not ready without libvirt');
      assert.equal(metricValue(await scrape(base), 'virtbus_libvirt_up'), 0);
      await libvirtd.start();
      await recorder.waitFor('the start snapshot once libvirtd is up', (m) =>
        m.some((x) => x.body.transition === 'sync_end' && x.body.snapshot?.reason === 'start'),
      );
      assert.equal((await fetch(`${base}/readyz`)).status, 200);
      const refused = bridge.logs.find((l) => l.msg === 'cannot connect to the broker');
      assert.match(
        String(refused?.broker),
        new RegExp(`:${deadPort}`),
        'the dead broker was tried (and logged without credentials)',
      );
      assert.ok(!JSON.stringify(bridge.logs).includes('guest:guest@'), 'no credentials in the log');
    } finally {
      assert.deepEqual(await bridge.stop(), { code: 0, signal: null });
      await recorder.close();
    }
  });

  it('publishes a periodic snapshot every bridge.resyncIntervalSeconds', async () => {
    const [libvirtd, broker] = await Promise.all([testLibvirtd(), testBroker()]);
    const recorder = await BusRecorder.listen(broker.url, 'virtbus.lifecycle', ['*.sync_end'], EXCHANGE_ARGS);
    const bridge = startVirtbus('bridge', {
      VIRTBUS_HOST: 'rc2',
      VIRTBUS_LIBVIRT_URI: libvirtd.uri,
      VIRTBUS_AMQP_URL: broker.url,
      VIRTBUS_RESYNC_INTERVAL: '1',
    });
    try {
      await recorder.waitFor(
        'two periodic snapshots',
        (m) => m.filter((x) => x.body.snapshot?.reason === 'periodic').length >= 2,
        10000,
      );
      const text = await scrape(await bridge.metricsUrl());
      assert.ok((metricValue(text, 'virtbus_resyncs_total', { reason: 'periodic' }) ?? 0) >= 2);
      assert.equal(metricValue(text, 'virtbus_resyncs_total', { reason: 'start' }), 1);
    } finally {
      assert.deepEqual(await bridge.stop(), { code: 0, signal: null });
      await recorder.close();
    }
  });

  it('SIGTERM while the broker is away keeps accepted messages in the journal; the next start publishes them', async () => {
    const [libvirtd, rabbit] = await Promise.all([testLibvirtd(), ownRabbitNode({ name: 'virtbus-rc3' })]);
    const outbox = mkdtempSync(join(tmpdir(), 'virtbus-rc3-outbox-'));
    const recorderQueue = 'rc3.recorder';
    const env = {
      VIRTBUS_HOST: 'rc3',
      VIRTBUS_LIBVIRT_URI: libvirtd.uri,
      VIRTBUS_AMQP_URL: rabbit.url,
      VIRTBUS_OUTBOX_DIR: outbox,
      VIRTBUS_SHUTDOWN_TIMEOUT_MS: '1000',
      VIRTBUS_STOP_DELAY_MS: '0',
    };
    // A durable queue that outlives the broker restart collects everything.
    const { connect } = await import('amqplib');
    const setup = await connect(rabbit.url);
    const channel = await setup.createChannel();
    await channel.assertExchange('virtbus.lifecycle', 'topic', { durable: true, ...EXCHANGE_ARGS });
    await channel.assertQueue(recorderQueue, { durable: true });
    await channel.bindQueue(recorderQueue, 'virtbus.lifecycle', '#');
    await setup.close();
    const driver = await openDriver(libvirtd.uri);
    let bridge = startVirtbus('bridge', env);
    await bridge.waitForLog('the publishing channel', (l) => l.msg === 'publishing channel open');
    await rabbit.stop();
    await bridge.waitForLog(
      'the broker loss',
      (l) => typeof l.msg === 'string' && l.msg.includes('broker connection lost'),
    );
    const refs = [];
    for (let i = 0; i < 20; i += 1) refs.push(await driver.createXML(domainXml(`held-${i}`)));
    for (const ref of refs) await driver.destroy(ref.uuid);
    await sleep(500);
    const stopped = await bridge.stop('SIGTERM');
    assert.deepEqual(stopped, { code: 0, signal: null }, 'a bounded, clean stop without a broker');
    const timeoutLog = bridge.logs.find((l) => l.msg?.toString().startsWith('shutdown timeout'));
    assert.ok(
      timeoutLog && Number(timeoutLog.unconfirmed) >= 40,
      `unconfirmed kept: ${JSON.stringify(timeoutLog)}`,
    );

    await rabbit.start();
    bridge = startVirtbus('bridge', env);
    try {
      await bridge.waitForLog('the replay', (l) => l.msg === 'publishing channel open');
      const reader = await connect(rabbit.url);
      const readChannel = await reader.createChannel();
      const names = new Set<string>();
      const deadline = Date.now() + 20000;
      while (names.size < 40 && Date.now() < deadline) {
        const message = await readChannel.get(recorderQueue, { noAck: true });
        if (!message) {
          await sleep(100);
          continue;
        }
        const body = JSON.parse(message.content.toString()) as {
          domain_name: string | null;
          transition: string;
        };
        if (
          body.domain_name?.startsWith('held-') &&
          (body.transition === 'started' || body.transition === 'stopped')
        ) {
          names.add(`${body.domain_name}:${body.transition}`);
        }
      }
      await reader.close();
      assert.equal(
        names.size,
        40,
        'all 20 started + 20 stopped accepted before SIGTERM arrived after the restart',
      );
    } finally {
      assert.deepEqual(await bridge.stop(), { code: 0, signal: null });
      await driver.close();
    }
  });

  it('SIGTERM with the journal full and the broker away still exits, within bridge.shutdownTimeoutMs', async () => {
    const [libvirtd, rabbit] = await Promise.all([testLibvirtd(), ownRabbitNode({ name: 'virtbus-rc4' })]);
    const bridge = startVirtbus('bridge', {
      VIRTBUS_HOST: 'rc4',
      VIRTBUS_LIBVIRT_URI: libvirtd.uri,
      VIRTBUS_AMQP_URL: rabbit.url,
      VIRTBUS_OUTBOX_MAX_BYTES: '16384', // about twenty messages
      VIRTBUS_SHUTDOWN_TIMEOUT_MS: '1500',
      VIRTBUS_STOP_DELAY_MS: '0',
    });
    const driver = await openDriver(libvirtd.uri);
    try {
      await bridge.waitForLog('the publishing channel', (l) => l.msg === 'publishing channel open');
      await rabbit.stop();
      await bridge.waitForLog(
        'the broker loss',
        (l) => typeof l.msg === 'string' && l.msg.includes('broker connection lost'),
      );
      for (let i = 0; i < 120; i += 1) await driver.createXML(domainXml(`full-${i}`));
      await sleep(1000);
      const held = metricValue(await scrape(await bridge.metricsUrl()), 'virtbus_outbox_depth') ?? 0;
      assert.ok(
        held > 0 && held < 120,
        `the journal is full: it holds ${held} of the 120 events, intake waits`,
      );
      const started = Date.now();
      const stopped = await bridge.stop('SIGTERM');
      const tookMs = Date.now() - started;
      assert.deepEqual(stopped, { code: 0, signal: null }, 'a clean exit');
      assert.ok(tookMs < 1500 + 5000, `stopped in ${tookMs} ms (timeout 1500 ms, plus libvirt's close)`);
      assert.ok(
        bridge.logs.some((l) => l.msg === 'shutdown timeout in a phase'),
        'the phase that could not finish is named in the log',
      );
    } finally {
      await driver.close();
    }
  });
});

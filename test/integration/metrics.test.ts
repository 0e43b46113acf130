/**
 * The bridge's /metrics, /healthz and /readyz against real services: counters move by label as events
 * flow, the histogram counts confirms, the native queue gauges come from the addon, and a tiny native
 * queue overflows under a burst — drops counted, an `overflow` snapshot published, nothing crashes.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { testBroker, testLibvirtd } from '../support/services';
import { BusRecorder } from '../support/bus';
import { metricValue, scrape, startVirtbus } from '../support/bridge-process';
import { createDomains, domainXml, openDriver } from '../support/domains';

const EXCHANGE_ARGS = { arguments: { 'alternate-exchange': 'virtbus.unroutable' } };

describe('bridge metrics and health', () => {
  it('counters, histogram, gauges and health endpoints follow the events', async () => {
    const [libvirtd, broker] = await Promise.all([testLibvirtd(), testBroker()]);
    const recorder = await BusRecorder.listen(broker.url, 'virtbus.lifecycle', ['#'], EXCHANGE_ARGS);
    const bridge = startVirtbus('bridge', {
      VIRTBUS_HOST: 'm1',
      VIRTBUS_LIBVIRT_URI: libvirtd.uri,
      VIRTBUS_AMQP_URL: broker.url,
      VIRTBUS_STOP_DELAY_MS: '60000',
      VIRTBUS_NATIVE_QUEUE_CAPACITY: '1024',
    });
    const driver = await openDriver(libvirtd.uri);
    try {
      const base = await bridge.metricsUrl();
      assert.equal((await fetch(`${base}/healthz`)).status, 200);
      await recorder.waitFor('the start snapshot', (m) => m.some((x) => x.body.transition === 'sync_end'));
      const ready = await fetch(`${base}/readyz`);
      assert.equal(ready.status, 200, await ready.text());
      const before = await scrape(base);
      assert.equal(metricValue(before, 'virtbus_native_queue_capacity'), 1024);
      assert.equal(metricValue(before, 'virtbus_libvirt_up'), 1);
      assert.equal(metricValue(before, 'virtbus_amqp_up'), 1);
      assert.equal(metricValue(before, 'virtbus_resyncs_total', { reason: 'start' }), 1);
      assert.equal(metricValue(before, 'virtbus_events_published_total', { transition: 'sync' }), 1);
      assert.equal(metricValue(before, 'virtbus_events_published_total', { transition: 'sync_end' }), 1);
      const firstText = before.indexOf('virtbus_native_queue_depth');
      assert.ok(
        firstText >= 0 && firstText < before.indexOf('virtbus_events_received_total'),
        'queue depth comes first',
      );

      const ref = await driver.createXML(domainXml('metric-1'));
      await driver.suspend(ref.uuid);
      await driver.resume(ref.uuid);
      await driver.destroy(ref.uuid); // held for 60 s: pending
      await recorder.waitFor(
        'three events',
        (m) => m.filter((x) => x.body.domain_name === 'metric-1').length === 3,
      );
      const after = await scrape(base);
      assert.equal(metricValue(after, 'virtbus_events_received_total', { event: 'STARTED' }), 1);
      assert.equal(metricValue(after, 'virtbus_events_received_total', { event: 'SUSPENDED' }), 1);
      assert.equal(metricValue(after, 'virtbus_events_received_total', { event: 'STOPPED' }), 1);
      assert.equal(metricValue(after, 'virtbus_events_published_total', { transition: 'paused' }), 1);
      assert.equal(
        metricValue(after, 'virtbus_events_published_total', { transition: 'stopped' }),
        undefined,
      );
      assert.equal(metricValue(after, 'virtbus_delayed_stops_pending'), 1);
      assert.equal(metricValue(after, 'virtbus_event_to_confirm_seconds_count'), 5);
      assert.equal(metricValue(after, 'virtbus_unconfirmed_publishes'), 0);
      assert.equal(metricValue(after, 'virtbus_outbox_depth'), 0);
      assert.ok((metricValue(after, 'virtbus_native_queue_high_water') ?? 0) >= 1);
      assert.ok(!/[0-9a-f]{8}-[0-9a-f]{4}-/.test(after), 'no UUID appears in any label');
      assert.ok(!after.includes('metric-1'), 'no domain name appears in any label');

      await libvirtd.kill();
      const deadline = Date.now() + 10000;
      let down = '';
      while (Date.now() < deadline) {
        down = await scrape(base);
        if (metricValue(down, 'virtbus_libvirt_up') === 0) break;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.equal(metricValue(down, 'virtbus_libvirt_up'), 0);
      const notReady = await fetch(`${base}/readyz`);
      assert.equal(notReady.status, 503);
      assert.match(await notReady.text(), /libvirt/);
      await libvirtd.start();
    } finally {
      await driver.close().catch(() => undefined);
      assert.deepEqual(await bridge.stop(), { code: 0, signal: null });
      await recorder.close();
    }
  });

  it('a tiny native queue overflows under a burst: drops counted, an overflow snapshot follows', async () => {
    const [libvirtd, broker] = await Promise.all([testLibvirtd(), testBroker()]);
    const recorder = await BusRecorder.listen(broker.url, 'virtbus.lifecycle', ['#'], EXCHANGE_ARGS);
    const driver = await openDriver(libvirtd.uri);
    const domains = await createDomains(driver, 'burst', 20);
    const bridge = startVirtbus('bridge', {
      VIRTBUS_HOST: 'm2',
      VIRTBUS_LIBVIRT_URI: libvirtd.uri,
      VIRTBUS_AMQP_URL: broker.url,
      VIRTBUS_NATIVE_QUEUE_CAPACITY: '2',
    });
    try {
      await recorder.waitFor('the start snapshot', (m) => m.some((x) => x.body.transition === 'sync_end'));
      await bridge.waitForLog('the publishing channel', (l) => l.msg === 'publishing channel open');
      const base = await bridge.metricsUrl();
      let dropped = 0;
      for (let round = 0; round < 20 && dropped === 0; round += 1) {
        await Promise.all(
          [0, 1, 2, 3].map(async (worker) => {
            for (const domain of domains.filter((_, i) => i % 4 === worker)) {
              await driver.suspend(domain.uuid);
              await driver.resume(domain.uuid);
            }
          }),
        );
        dropped = metricValue(await scrape(base), 'virtbus_native_queue_dropped_total') ?? 0;
      }
      assert.ok(dropped > 0, 'the burst overflowed the 2-slot queue');
      await recorder.waitFor('an overflow snapshot', (m) =>
        m.some((x) => x.body.transition === 'sync_end' && x.body.snapshot?.reason === 'overflow'),
      );
      const text = await scrape(base);
      assert.equal(metricValue(text, 'virtbus_native_queue_high_water'), 2);
      assert.equal(metricValue(text, 'virtbus_native_queue_capacity'), 2);
      assert.ok((metricValue(text, 'virtbus_resyncs_total', { reason: 'overflow' }) ?? 0) >= 1);
      assert.ok(
        bridge.logs.some((l) => l.msg === 'native event queue overflowed; a resync snapshot follows'),
      );
      // The snapshot tells the truth the dropped events would have: it was taken during the burst,
      // so every burst domain reads running or paused, and every domain is in it.
      const last = [...recorder.messages]
        .reverse()
        .find((m) => m.body.snapshot?.reason === 'overflow' && m.body.transition === 'sync_end');
      const snapshotId = last!.body.snapshot!.id;
      const syncs = recorder.filter(
        (m) => m.body.snapshot?.id === snapshotId && m.body.transition === 'sync',
      );
      assert.equal(syncs.length, 21, '20 burst domains + the default test domain');
      assert.ok(syncs.every((m) => m.body.power_state === 1 || m.body.power_state === 3));
      assert.equal((await fetch(`${base}/healthz`)).status, 200, 'still alive');
    } finally {
      await driver.close();
      assert.deepEqual(await bridge.stop(), { code: 0, signal: null });
      await recorder.close();
    }
  });
});

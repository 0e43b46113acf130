/**
 * 10,000 lifecycle transitions driven as fast as the test driver allows (50 domains, 4 client
 * workers) arrive complete and in per-domain order. Prints the rate and the native queue's
 * high-water mark; asserts completeness and order, not timing.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { testBroker, testLibvirtd } from '../support/services';
import { BusRecorder } from '../support/bus';
import { metricValue, scrape, startVirtbus } from '../support/bridge-process';
import { createDomains, openDriver } from '../support/domains';

const DOMAINS = 50;
const CYCLES = 100; // suspend + resume per cycle: 2 events
const WORKERS = 4;

describe('bridge throughput', () => {
  it('10,000 transitions arrive complete and in per-domain order', async () => {
    const [libvirtd, broker] = await Promise.all([testLibvirtd(), testBroker()]);
    const recorder = await BusRecorder.listen(broker.url, 'virtbus.lifecycle', ['#.paused', '#.resumed'], {
      arguments: { 'alternate-exchange': 'virtbus.unroutable' },
    });
    const driver = await openDriver(libvirtd.uri);
    const domains = await createDomains(driver, 'load', DOMAINS);
    const bridge = startVirtbus('bridge', {
      VIRTBUS_HOST: 'load-host',
      VIRTBUS_LIBVIRT_URI: libvirtd.uri,
      VIRTBUS_AMQP_URL: broker.url,
      VIRTBUS_LOG_LEVEL: 'info',
    });
    try {
      await bridge.waitForLog('the publishing channel', (l) => l.msg === 'publishing channel open');
      await bridge.waitForLog('the start snapshot', (l) => l.msg === 'snapshot published');
      const expected = DOMAINS * CYCLES * 2;
      const started = Date.now();
      // Each worker owns a slice of the domains and cycles through them: suspend all, resume all.
      await Promise.all(
        Array.from({ length: WORKERS }, async (_, worker) => {
          const mine = domains.filter((_, index) => index % WORKERS === worker);
          for (let cycle = 0; cycle < CYCLES; cycle += 1) {
            for (const domain of mine) await driver.suspend(domain.uuid);
            for (const domain of mine) await driver.resume(domain.uuid);
          }
        }),
      );
      const driven = Date.now();
      await recorder.waitFor(`${expected} messages`, (m) => m.length >= expected, 120000);
      const arrived = Date.now();
      const text = await scrape(await bridge.metricsUrl());
      const highWater = metricValue(text, 'virtbus_native_queue_high_water');
      const dropped = metricValue(text, 'virtbus_native_queue_dropped_total');
      console.log(
        `throughput: ${expected} events driven in ${driven - started} ms ` +
          `(${Math.round(expected / ((driven - started) / 1000))}/s by the test driver), all on the bus after ` +
          `${arrived - started} ms (${Math.round(expected / ((arrived - started) / 1000))}/s end to end); ` +
          `native queue high-water ${highWater}, dropped ${dropped}`,
      );
      assert.equal(recorder.messages.length, expected, 'no duplicates, nothing lost');
      assert.equal(dropped, 0);
      const byDomain = new Map<string, string[]>();
      for (const message of recorder.messages) {
        const list = byDomain.get(message.body.instance_uuid ?? '') ?? [];
        list.push(message.body.transition);
        byDomain.set(message.body.instance_uuid ?? '', list);
      }
      assert.equal(byDomain.size, DOMAINS);
      const alternating = Array.from({ length: CYCLES * 2 }, (_, i) => (i % 2 === 0 ? 'paused' : 'resumed'));
      for (const [uuid, transitions] of byDomain)
        assert.deepEqual(transitions, alternating, `order for ${uuid}`);
      const seqs = recorder.messages.map((m) => m.body.seq);
      for (let i = 1; i < seqs.length; i += 1)
        assert.ok(seqs[i]! > seqs[i - 1]!, 'seq increases on the wire');
      assert.equal(
        metricValue(text, 'virtbus_events_published_total', { transition: 'paused' }),
        DOMAINS * CYCLES,
      );
    } finally {
      assert.deepEqual(await bridge.stop(), { code: 0, signal: null });
      await driver.close();
      await recorder.close();
    }
  });
});

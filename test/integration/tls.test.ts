/**
 * TLS end to end: the bridge reaches RabbitMQ over amqps:// (broker certificate verified against the
 * configured CA; refused without it) and libvirtd over TLS (test+tls://, the same transport as
 * qemu+tls://, with a client certificate from pkipath).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { connect } from 'amqplib';
import { setTimeout as sleep } from 'node:timers/promises';
import { ownRabbitNode, onTeardown } from '../support/services';
import { startLibvirtd } from '../../src/sandbox';
import { startVirtbus } from '../support/bridge-process';
import { domainXml, openDriver } from '../support/domains';

describe('TLS', () => {
  it('bridge ↔ RabbitMQ over amqps:// and ↔ libvirtd over TLS', async () => {
    const [broker, libvirtd] = await Promise.all([
      ownRabbitNode({ tls: true }),
      startLibvirtd({ tls: true }),
    ]);
    onTeardown(() => libvirtd.dispose());
    const tlsUrl = broker.tlsUrl!;
    const certificates = broker.certificates!;
    assert.match(tlsUrl, /^amqps:\/\/guest:guest@localhost:\d+$/);
    assert.match(libvirtd.tlsUri!, /^test\+tls:\/\/localhost:\d+\/default\?pkipath=/);

    // A listener over TLS too, trusting the same CA.
    const model = await connect(tlsUrl, { ca: [readFileSync(certificates.caFile)], servername: 'localhost' });
    const channel = await model.createChannel();
    await channel.assertExchange('virtbus.lifecycle', 'topic', {
      durable: true,
      arguments: { 'alternate-exchange': 'virtbus.unroutable' },
    });
    const { queue } = await channel.assertQueue('', { exclusive: true });
    await channel.bindQueue(queue, 'virtbus.lifecycle', '#');
    const keys: string[] = [];
    await channel.consume(queue, (m) => m && keys.push(m.fields.routingKey), { noAck: true });

    const bridge = startVirtbus('bridge', {
      VIRTBUS_HOST: 'tls-host',
      VIRTBUS_LIBVIRT_URI: libvirtd.tlsUri,
      VIRTBUS_AMQP_URL: tlsUrl,
      VIRTBUS_AMQP_TLS_CA_FILE: certificates.caFile,
      VIRTBUS_STOP_DELAY_MS: '0',
    });
    // Without the CA the broker's certificate cannot be verified: the bridge keeps retrying, never connects.
    const untrusting = startVirtbus('bridge', {
      VIRTBUS_HOST: 'tls-untrusting',
      VIRTBUS_LIBVIRT_URI: libvirtd.uri,
      VIRTBUS_AMQP_URL: tlsUrl,
      VIRTBUS_STOP_DELAY_MS: '0',
    });
    try {
      await bridge.waitForLog('the broker over TLS', (l) => l.msg === 'connected to the broker');
      await bridge.waitForLog('libvirt over TLS', (l) => l.msg === 'connected to libvirt');
      const driver = await openDriver(libvirtd.uri);
      await driver.createXML(domainXml('tls-1'));
      await driver.close();
      const deadline = Date.now() + 15000;
      while (!keys.includes('tls-host.started') && Date.now() < deadline) await sleep(50);
      assert.ok(keys.includes('tls-host.sync'), `snapshot over TLS: ${keys.join(',')}`);
      assert.ok(keys.includes('tls-host.started'), `event over TLS: ${keys.join(',')}`);

      const refused = await untrusting.waitForLog(
        'a refused TLS connection',
        (l) => l.msg === 'cannot connect to the broker',
      );
      const error = JSON.stringify(refused.err ?? {});
      assert.match(error, /certificate|self[- ]signed|unable to verify/i, error);
      assert.ok(!untrusting.logs.some((l) => l.msg === 'connected to the broker'));
      const ready = await fetch(`${await untrusting.metricsUrl()}/readyz`);
      assert.equal(ready.status, 503);
      assert.match(await ready.text(), /amqp/);
      assert.ok(!JSON.stringify(untrusting.logs).includes('guest:guest'), 'credentials never reach the log');
    } finally {
      assert.deepEqual(await bridge.stop(), { code: 0, signal: null });
      assert.deepEqual(await untrusting.stop(), { code: 0, signal: null });
      await model.close();
    }
  });
});

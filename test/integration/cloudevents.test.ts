/**
 * CloudEvents from a real `virtbus bridge` (on a private libvirtd) through a real RabbitMQ vhost,
 * read by the `cloudevents` SDK as an external tool would (HTTP.toEvent over the AMQP headers and
 * body), and by a real `virtbus consumer`, which applies them like any other format: binary mode
 * first, then the same host's bridge restarted in structured mode.
 */
import { instance, row, tempSqliteStore } from '../support/consumer';
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { HTTP, type CloudEventV1 } from 'cloudevents';
import { startVirtbus, type ServiceProcess } from '../support/bridge-process';
import { BusRecorder, type Received } from '../support/bus';
import { openDriver, startedDomain } from '../support/domains';
import { testBroker, testLibvirtd } from '../support/services';
import { waitUntil } from '../../src/sandbox';
import type { LifecycleMessage } from '../../src/messages/lifecycle';

const HOST = 'cmp-07.example.org';
const EXCHANGE_ARGS = { arguments: { 'alternate-exchange': 'virtbus.unroutable' } };

/** An AMQP 0-9-1 message as the SDK's HTTP reader takes it: the headers, content_type, the body. */
function toEvent(message: Received<unknown>): CloudEventV1<unknown> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(message.properties.headers ?? {})) headers[name] = String(value);
  headers['content-type'] = String(message.properties.contentType);
  const event = HTTP.toEvent({ headers, body: message.raw });
  assert.ok(!Array.isArray(event));
  return event;
}

describe('CloudEvents from a real bridge through a real broker', async () => {
  const [libvirtd, broker] = await Promise.all([testLibvirtd(), testBroker()]);
  const driver = await openDriver(libvirtd.uri);
  after(() => driver.close());
  const { url: dbUrl, store } = tempSqliteStore();
  const domain = await startedDomain(driver, 'ce-1');
  await store.upsert([instance({ uuid: domain.uuid, host: HOST })]);

  const bus = await BusRecorder.listen<unknown>(broker.url, 'virtbus.lifecycle', ['#'], EXCHANGE_ARGS);
  after(() => bus.close());
  const consumer: ServiceProcess = startVirtbus('consumer', {
    VIRTBUS_AMQP_URL: broker.url,
    VIRTBUS_DB_URL: dbUrl,
  });
  after(async () => {
    const exit = await consumer.stop('SIGTERM');
    assert.deepEqual(exit, { code: 0, signal: null }, `consumer exit; stderr: ${consumer.stderr()}`);
  });
  await consumer.waitForLog('consuming', (line) => line.msg === 'consuming');

  const startBridge = (format: string): ServiceProcess => {
    const bridge = startVirtbus('bridge', {
      VIRTBUS_HOST: HOST,
      VIRTBUS_LIBVIRT_URI: libvirtd.uri,
      VIRTBUS_AMQP_URL: broker.url,
      VIRTBUS_AMQP_FORMAT: format,
      VIRTBUS_GRACEFUL_SHUTDOWN_TIMEOUT_MS: '1000',
    });
    return bridge;
  };
  const stopBridge = async (bridge: ServiceProcess): Promise<void> => {
    const exit = await bridge.stop('SIGTERM');
    assert.deepEqual(exit, { code: 0, signal: null }, `bridge exit; stderr: ${bridge.stderr()}`);
  };
  /** Waits for the event of this transition on the domain, read by the SDK. */
  const eventOf = async (
    transition: string,
    after: number,
  ): Promise<[Received<unknown>, CloudEventV1<unknown>]> => {
    const type = `virtbus.lifecycle.${transition}`;
    const matches = (m: Received<unknown>): boolean => {
      const event = toEvent(m);
      return event.type === type && (transition === 'sync_end' || event.subject === domain.uuid);
    };
    await bus.waitFor(type, (messages) => messages.slice(after).some(matches));
    const message = bus.messages.slice(after).find(matches) as Received<unknown>;
    return [message, toEvent(message)];
  };

  it('binary mode: ce- headers the SDK reads, the lifecycle message as the data; the consumer applies it', async () => {
    const bridge = startBridge('cloudevents');
    try {
      const [endMessage, end] = await eventOf('sync_end', 0);
      assert.equal(endMessage.properties.contentType, 'application/json');
      assert.equal(end.subject, undefined, 'sync_end names no instance');
      const mark = bus.messages.length;
      await driver.suspend(domain.uuid);
      const [message, event] = await eventOf('paused', mark);
      const data = event.data as LifecycleMessage;
      assert.equal(data.schema, 'virtbus.lifecycle/1', 'the data is the virtbus object');
      assert.deepEqual(data, JSON.parse(message.raw));
      assert.equal(event.specversion, '1.0');
      assert.equal(event.id, data.event_id);
      assert.equal(event.id, message.properties.messageId);
      assert.equal(event.source, `urn:virtbus:host:${HOST}`);
      assert.equal(event.subject, domain.uuid);
      assert.equal(
        event.time && new Date(event.time).toISOString().slice(0, 23),
        data.occurred_at.slice(0, 23),
      );
      assert.equal(event.sequence, String(data.seq).padStart(16, '0'));
      assert.equal(event.bootid, data.boot_id);
      assert.equal(event.datacontenttype, 'application/json');
      // Trace context rides along whatever the format (no span export here: not sampled).
      assert.equal(
        message.properties.headers?.traceparent,
        `00-${data.event_id.replace(/-/g, '')}-${data.event_id.replace(/-/g, '').slice(16)}-00`,
      );
      await waitUntil(
        'the consumer to apply the paused event',
        async () => (await row(store, domain.uuid)).power_state === 3,
        20000,
      );
    } finally {
      await stopBridge(bridge);
    }
  });

  it('structured mode: application/cloudevents+json the SDK reads; the consumer applies it', async () => {
    const bridge = startBridge('cloudevents-structured');
    try {
      const mark = bus.messages.length;
      await eventOf('sync_end', mark);
      await driver.resume(domain.uuid);
      const [message, event] = await eventOf('resumed', mark);
      assert.equal(message.properties.contentType, 'application/cloudevents+json');
      assert.equal(
        Object.keys(message.properties.headers ?? {}).filter((name) => name.startsWith('ce-')).length,
        0,
        'no ce- headers in structured mode',
      );
      const body = message.body as Record<string, unknown>;
      assert.equal(body.specversion, '1.0');
      const data = event.data as LifecycleMessage;
      assert.deepEqual(data, body.data);
      assert.equal(event.id, data.event_id);
      assert.equal(event.type, 'virtbus.lifecycle.resumed');
      assert.equal(event.subject, domain.uuid);
      assert.equal(event.sequence, String(data.seq).padStart(16, '0'));
      assert.match(String(message.properties.headers?.traceparent), /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
      await waitUntil(
        'the consumer to apply the resumed event',
        async () => (await row(store, domain.uuid)).power_state === 1,
        20000,
      );
    } finally {
      await stopBridge(bridge);
    }
    assert.equal(
      consumer.logs.filter((line) => line.msg === 'message dead-lettered').length,
      0,
      'the consumer took every CloudEvent',
    );
  });
});

/**
 * Trace context across real processes: `virtbus bridge` (private libvirtd) and `virtbus consumer`
 * (SQLite) over a real RabbitMQ vhost, both exporting spans over OTLP/HTTP to a receiver this test
 * runs. One guest destroyed behind the system's back yields one connected trace: the bridge's
 * event → dispatch → publish, the consumer's process → commit → notify under the bridge's publish
 * span, and the stop command and instance.update notifications it caused carry the consumer's span
 * as their traceparent.
 */
import { instance, row, tempSqliteStore } from '../support/consumer';
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { startVirtbus, type ServiceProcess } from '../support/bridge-process';
import { BusRecorder, type Received } from '../support/bus';
import { openDriver, startedDomain } from '../support/domains';
import { OtlpReceiver, type ReceivedSpan } from '../support/otlp-receiver';
import { testBroker, testLibvirtd } from '../support/services';
import { waitUntil } from '../../src/sandbox';
import type { LifecycleMessage } from '../../src/messages/lifecycle';
import type { StopCommand } from '../../src/messages/command';

const HOST = 'cmp-09.example.org';
const SEGMENT = 'cmp-09_example_org';
const STOP_DELAY_MS = 500;
const EXCHANGE_ARGS = { arguments: { 'alternate-exchange': 'virtbus.unroutable' } };
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$/;
const PRODUCER = 4;
const CONSUMER = 5;

function traceparentOf(message: Received<unknown>): RegExpExecArray {
  const header = String(message.properties.headers?.traceparent);
  const match = TRACEPARENT.exec(header);
  assert.ok(match, `a W3C traceparent header: ${header}`);
  return match;
}

describe('trace context from bridge to consumer, exported over OTLP/HTTP', async () => {
  const [libvirtd, broker, receiver] = await Promise.all([
    testLibvirtd(),
    testBroker(),
    OtlpReceiver.start(),
  ]);
  after(() => receiver.close());
  const driver = await openDriver(libvirtd.uri);
  after(() => driver.close());
  const { url: dbUrl, store } = tempSqliteStore();
  const domain = await startedDomain(driver, 'traced-1');
  await store.upsert([instance({ uuid: domain.uuid, host: HOST })]);

  const lifecycle = await BusRecorder.listen(broker.url, 'virtbus.lifecycle', ['#'], EXCHANGE_ARGS);
  const commands = await BusRecorder.listen<StopCommand>(broker.url, 'virtbus.commands', ['*.stop']);
  // The consumer uses the notification exchange as it finds it (oslo's default: not durable).
  const notifications = await BusRecorder.listen<Record<string, unknown>>(broker.url, 'nova', ['#'], {
    durable: false,
  });
  after(() => Promise.all([lifecycle.close(), commands.close(), notifications.close()]));

  const otel = {
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
    OTEL_BSP_SCHEDULE_DELAY: '100',
  };
  const consumer: ServiceProcess = startVirtbus('consumer', {
    VIRTBUS_AMQP_URL: broker.url,
    VIRTBUS_DB_URL: dbUrl,
    VIRTBUS_STOP_TIMEOUT_MS: '20000',
    ...otel,
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
    ...otel,
  });
  after(async () => {
    const exit = await bridge.stop('SIGTERM');
    assert.deepEqual(exit, { code: 0, signal: null }, `bridge exit; stderr: ${bridge.stderr()}`);
  });
  await lifecycle.waitFor('the start snapshot', (m) => m.some((x) => x.body.transition === 'sync_end'));

  it('both processes say they export spans', () => {
    for (const service of [bridge, consumer])
      assert.ok(service.logs.some((line) => line.msg === 'exporting trace spans over OTLP/HTTP'));
  });

  it('one destroyed guest: one connected trace across both processes, carried by command and notifications', async () => {
    await driver.destroy(domain.uuid);
    await lifecycle.waitFor('the stopped event', (m) =>
      m.some((x) => x.body.transition === 'stopped' && x.body.instance_uuid === domain.uuid),
    );
    const stopped = lifecycle.messages.find(
      (x) => x.body.transition === 'stopped' && x.body.instance_uuid === domain.uuid,
    ) as Received<LifecycleMessage>;
    const hex = stopped.body.event_id.replace(/-/g, '');
    // The bridge's header: trace-id = the event_id, parent = its publish span, sampled.
    const [, traceId, bridgeParent, flags] = traceparentOf(stopped);
    assert.equal(traceId, hex);
    assert.equal(bridgeParent, hex.slice(16));
    assert.equal(flags, '01', 'sampled: the bridge records this trace');

    await commands.waitFor('the stop command', (m) => m.some((x) => x.body.instance_uuid === domain.uuid));
    const command = commands.messages.find(
      (x) => x.body.instance_uuid === domain.uuid,
    ) as Received<StopCommand>;
    const [, commandTrace, consumerSpan, commandFlags] = traceparentOf(command);
    assert.equal(commandTrace, hex, 'the command continues the event trace');
    assert.notEqual(consumerSpan, bridgeParent, "the command's parent is the consumer's span");
    assert.equal(commandFlags, '01');

    const ours = (m: Received<Record<string, unknown>>): boolean =>
      String(m.body['oslo.message']).includes(domain.uuid);
    await notifications.waitFor('the instance.update notifications', (m) => m.filter(ours).length >= 2);
    for (const notification of notifications.messages.filter(ours).slice(0, 2)) {
      const [, notificationTrace, notificationParent] = traceparentOf(notification);
      assert.equal(notificationTrace, hex);
      assert.equal(notificationParent, consumerSpan);
    }
    await waitUntil(
      'the stop to complete',
      async () =>
        (await row(store, domain.uuid)).task_state === null &&
        (await row(store, domain.uuid)).vm_state === 'stopped',
      20000,
    );

    const spans = await receiver.waitForTrace(hex, (found) =>
      [
        'lifecycle stopped',
        'dispatch',
        'publish virtbus.lifecycle',
        `process ${SEGMENT}.stopped`,
        'commit',
        'notify',
      ].every((name) => found.some((span) => span.name === name)),
    );
    const named = (name: string): ReceivedSpan => {
      const matching = spans.filter((span) => span.name === name);
      assert.equal(matching.length, 1, `one span ${name}`);
      return matching[0] as ReceivedSpan;
    };
    const event = named('lifecycle stopped');
    const dispatch = named('dispatch');
    const publish = named('publish virtbus.lifecycle');
    const processSpan = named(`process ${SEGMENT}.stopped`);
    const commit = named('commit');
    const notify = named('notify');
    for (const span of [event, dispatch, publish]) assert.equal(span.service, 'virtbus-bridge', span.name);
    for (const span of [processSpan, commit, notify])
      assert.equal(span.service, 'virtbus-consumer', span.name);

    // One tree: a single root (the bridge's event), every other span's parent in the trace.
    const ids = new Set(spans.map((span) => span.spanId));
    assert.deepEqual(
      spans.filter((span) => span.parentSpanId === '').map((span) => span.name),
      ['lifecycle stopped'],
    );
    for (const span of spans)
      if (span.parentSpanId) assert.ok(ids.has(span.parentSpanId), `${span.name}'s parent is in the trace`);
    assert.equal(event.spanId, hex.slice(0, 16));
    assert.equal(dispatch.parentSpanId, event.spanId);
    assert.equal(publish.spanId, bridgeParent, 'the header names the publish span');
    assert.equal(publish.parentSpanId, event.spanId);
    assert.equal(publish.kind, PRODUCER);
    assert.equal(processSpan.parentSpanId, publish.spanId, "the consumer's span continues the bridge's");
    assert.equal(processSpan.kind, CONSUMER);
    assert.equal(processSpan.spanId, consumerSpan, 'the command and notifications name the process span');
    assert.equal(commit.parentSpanId, processSpan.spanId);
    assert.equal(notify.parentSpanId, processSpan.spanId);
    assert.equal(processSpan.attributes['virtbus.outcome'], 'synced');
    assert.equal(publish.attributes['messaging.message.id'], stopped.body.event_id);

    // The times tell the story in order: received → published → confirmed; consumed → committed → notified.
    const le = (a: bigint, b: bigint, what: string): void => assert.ok(a <= b, `${what}: ${a} <= ${b}`);
    le(event.startNs, dispatch.startNs, 'the event starts when received');
    le(dispatch.endNs, publish.startNs, 'published after dispatch');
    le(publish.endNs, event.endNs, 'the event ends at the confirm');
    assert.ok(
      dispatch.endNs - dispatch.startNs >= BigInt(STOP_DELAY_MS) * 1_000_000n,
      "dispatch holds Nova's delayed STOPPED",
    );
    le(publish.startNs, processSpan.startNs, 'consumed after published');
    le(commit.endNs, notify.startNs, 'notified after the commit');
    le(notify.endNs, processSpan.endNs, 'acknowledged after the notifications were confirmed');
  });
});

/**
 * oslo's default notification queue (consumer.notifications.declareQueue): with no listener bound, the
 * consumer's instance.update notifications are kept in `versioned_notifications.info` (declared when
 * missing, bound with its routing key) instead of being confirmed and dropped; an existing queue is
 * used as it is; with declareQueue=false nothing is declared. Each describe gets its own vhost and
 * binds no listener of its own (the harness's Bus would bind one).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { connect } from 'amqplib';
import { lifecycleRoutingKey, type LifecycleMessage } from '../../src/messages/lifecycle';
import { decodeNotification } from '../../src/notify/instance-update';
import { testBroker, type TestBroker } from '../support/services';
import {
  EventFactory,
  instance,
  startConsumer,
  tempSqliteUrl,
  waitUntil,
  type RunningConsumer,
} from '../support/consumer';

const HOST = 'cmp-05.example.org';
const QUEUE = 'versioned_notifications.info';

interface Listed {
  name: string;
  durable: boolean;
  auto_delete: boolean;
  /** rabbitmqctl's JSON: a list of [name, type, value]. */
  arguments: Array<[string, string, unknown]>;
  messages: number;
}

async function listQueues(broker: TestBroker): Promise<Listed[]> {
  return JSON.parse(
    await broker.ctl(
      'list_queues',
      '-p',
      broker.vhost,
      'name',
      'durable',
      'auto_delete',
      'arguments',
      'messages',
      '--formatter',
      'json',
    ),
  ) as Listed[];
}

async function notificationBindings(broker: TestBroker): Promise<Array<Record<string, string>>> {
  const bindings = JSON.parse(
    await broker.ctl(
      'list_bindings',
      '-p',
      broker.vhost,
      'source_name',
      'destination_name',
      'destination_kind',
      'routing_key',
      '--formatter',
      'json',
    ),
  ) as Array<Record<string, string>>;
  return bindings.filter((b) => b.source_name === 'nova');
}

/** Publishes lifecycle messages as the bridge would (without binding anything) and waits for them. */
async function publishAndWait(
  broker: TestBroker,
  consumer: RunningConsumer,
  messages: readonly LifecycleMessage[],
): Promise<void> {
  const model = await connect(broker.url);
  try {
    const channel = await model.createConfirmChannel();
    for (const message of messages)
      channel.publish(
        consumer.config.amqp.exchange,
        lifecycleRoutingKey(message.host, message.transition),
        Buffer.from(JSON.stringify(message)),
        { persistent: true, contentType: 'application/json', messageId: message.event_id },
      );
    await channel.waitForConfirms();
  } finally {
    await model.close();
  }
  await Promise.all(messages.map((m) => consumer.waitProcessed(m.event_id)));
}

/** Reads (and acknowledges) everything in a queue. */
async function readQueue(broker: TestBroker, queue: string): Promise<Buffer[]> {
  const model = await connect(broker.url);
  try {
    const channel = await model.createChannel();
    const bodies: Buffer[] = [];
    for (;;) {
      const message = await channel.get(queue, { noAck: true });
      if (!message) return bodies;
      bodies.push(message.content);
    }
  } finally {
    await model.close();
  }
}

describe("oslo's default notification queue", async () => {
  const broker = await testBroker();
  const consumer = await startConsumer({ amqpUrl: broker.url, dbUrl: tempSqliteUrl() });
  const events = new EventFactory();

  it('is declared on connect like oslo declares it: classic, non-durable by default, bound with its routing key', async () => {
    const queue = (await listQueues(broker)).find((q) => q.name === QUEUE);
    assert.ok(queue, `${QUEUE} exists before any notification`);
    assert.equal(queue.durable, consumer.config.consumer.notifications.durable);
    assert.equal(queue.auto_delete, false);
    assert.deepEqual(queue.arguments, [], 'no arguments: cap it with a policy');
    assert.deepEqual(await notificationBindings(broker), [
      { source_name: 'nova', destination_name: QUEUE, destination_kind: 'queue', routing_key: QUEUE },
    ]);
  });

  it('keeps an instance.update emitted with no listener bound, readable from the queue', async () => {
    const uuid = randomUUID();
    await consumer.store.upsert([instance({ uuid, host: HOST, vm_state: 'active', power_state: 1 })]);
    await publishAndWait(broker, consumer, [events.event(HOST, uuid, 'paused', 3)]);
    const bodies = await readQueue(broker, QUEUE);
    assert.equal(bodies.length, 1, 'the notification was kept, not dropped');
    const note = decodeNotification(bodies[0] as Buffer);
    assert.equal(note.event_type, 'instance.update');
    assert.equal(note.priority, 'INFO');
    const data = note.payload['nova_object.data'];
    assert.equal(data.uuid, uuid);
    assert.equal(data.power_state, 'paused');
  });

  it('is re-declared and re-bound on reconnect when it was deleted', async () => {
    const model = await connect(broker.url);
    try {
      const channel = await model.createChannel();
      await channel.deleteQueue(QUEUE);
    } finally {
      await model.close();
    }
    // Deleting it does not disturb the consumer; its next connection declares it again.
    await broker.ctl('close_all_connections', '-p', broker.vhost, 'test: reconnect');
    await waitUntil(
      `${QUEUE} declared again`,
      async () => (await listQueues(broker)).some((q) => q.name === QUEUE),
      15000,
      100,
    );
    await consumer.service.whenReady(15000);
    const uuid = randomUUID();
    await consumer.store.upsert([instance({ uuid, host: HOST, vm_state: 'active', power_state: 1 })]);
    await publishAndWait(broker, consumer, [events.event(HOST, uuid, 'paused', 3)]);
    const bodies = await readQueue(broker, QUEUE);
    assert.deepEqual(
      bodies.map((b) => decodeNotification(b).payload['nova_object.data'].uuid),
      [uuid],
    );
  });
});

describe('an existing notification queue', async () => {
  const broker = await testBroker();
  // Declared by someone else (Nova's publisher, an operator) with other properties: durable, capped.
  const model = await connect(broker.url);
  try {
    const channel = await model.createChannel();
    await channel.assertQueue(QUEUE, { durable: true, arguments: { 'x-max-length': 5 } });
  } finally {
    await model.close();
  }
  const consumer = await startConsumer({ amqpUrl: broker.url, dbUrl: tempSqliteUrl() });
  const events = new EventFactory();

  it('is used as it is (no PRECONDITION_FAILED) and bound', async () => {
    const queue = (await listQueues(broker)).find((q) => q.name === QUEUE);
    assert.equal(queue?.durable, true, 'still durable');
    assert.deepEqual(
      queue?.arguments.map(([name, , value]) => [name, value]),
      [['x-max-length', 5]],
    );
    const uuid = randomUUID();
    await consumer.store.upsert([instance({ uuid, host: HOST, vm_state: 'active', power_state: 1 })]);
    await publishAndWait(broker, consumer, [events.event(HOST, uuid, 'paused', 3)]);
    const bodies = await readQueue(broker, QUEUE);
    assert.equal(bodies.length, 1);
    assert.equal(decodeNotification(bodies[0] as Buffer).payload['nova_object.data'].uuid, uuid);
  });
});

describe('consumer.notifications.declareQueue=false', async () => {
  const broker = await testBroker();
  const consumer = await startConsumer({
    amqpUrl: broker.url,
    dbUrl: tempSqliteUrl(),
    env: { VIRTBUS_CONSUMER_NOTIFICATIONS_DECLARE_QUEUE: 'false' },
  });
  const events = new EventFactory();

  it('declares no queue and binds nothing to the exchange: with no listener, notifications are dropped', async () => {
    assert.equal(consumer.config.consumer.notifications.declareQueue, false);
    const uuid = randomUUID();
    await consumer.store.upsert([instance({ uuid, host: HOST, vm_state: 'active', power_state: 1 })]);
    await publishAndWait(broker, consumer, [events.event(HOST, uuid, 'paused', 3)]);
    const names = (await listQueues(broker)).map((q) => q.name);
    assert.ok(!names.includes(QUEUE), `no ${QUEUE}: ${names.join(', ')}`);
    assert.ok(
      names.every((name) => !name.startsWith('versioned_notifications')),
      'no notification queue at all',
    );
    assert.deepEqual(await notificationBindings(broker), [], 'nothing bound to nova');
  });
});

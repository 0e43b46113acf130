/**
 * Verified senders in strict mode (the default), against real per-host broker users: a broker user
 * per host whose name is its host segment (add_user, set_permissions, set_topic_permissions on the
 * test vhost), and the consumer as its own user. One host's credentials must not be able to speak
 * for another host: a body naming another host, a routing key naming another host, a message
 * without user_id, a message from the wrong user — each is dead-lettered with its reason, the row
 * does not change and no stop command goes out; the genuine host's identical message is applied.
 * Also: the broker itself refuses a forged user_id and (with topic permissions) another host's
 * routing key, which is what makes user_id and the routing key worth checking; the consumer's stop
 * commands carry its own user_id; a stop command no queue takes is a publish failure.
 */
import { stopResult } from '../support/commands';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect, type ConfirmChannel, type ConsumeMessage, type GetMessage, type Options } from 'amqplib';
import { commandResultRoutingKey, type CommandResult, type StopCommand } from '../../src/messages/command';
import { lifecycleRoutingKey, type LifecycleMessage } from '../../src/messages/lifecycle';
import { REASON_HEADER } from '../../src/consumer/service';
import { onTeardown, testBroker, type TestBroker } from '../support/services';
import {
  Bus,
  consumerConfig,
  EventFactory,
  instance,
  row,
  startConsumer,
  tempSqliteUrl,
  waitUntil,
} from '../support/consumer';

const SUFFIX = randomBytes(3).toString('hex');
/** Host names whose segments are themselves (users are node-wide: unique per run). */
const HOST_A = `sa-${SUFFIX}`;
const HOST_B = `sb-${SUFFIX}`;
const ROGUE = `rogue-${SUFFIX}`;
const CONSUMER_USER = `virtbus-consumer-${SUFFIX}`;
const PASSWORD = 'test-password';

function urlAs(broker: TestBroker, user: string): string {
  const url = new URL(broker.url);
  url.username = encodeURIComponent(user);
  url.password = PASSWORD;
  return url.toString();
}

/** A broker user on the test vhost; bridges get topic permissions limited to their own segment. */
async function addUser(broker: TestBroker, user: string, ownSegmentOnly: boolean): Promise<void> {
  await broker.ctl('add_user', user, PASSWORD);
  onTeardown(() => broker.ctl('delete_user', user));
  await broker.ctl('set_permissions', '-p', broker.vhost, user, '.*', '.*', '.*');
  if (ownSegmentOnly)
    for (const exchange of ['virtbus.lifecycle', 'virtbus.commands'])
      await broker.ctl('set_topic_permissions', '-p', broker.vhost, user, exchange, '^{username}\\.', '.*');
}

/** A publisher connected as one broker user. */
class Sender {
  private constructor(
    readonly channel: ConfirmChannel,
    readonly close: () => Promise<void>,
  ) {}

  static async open(url: string): Promise<Sender> {
    const model = await connect(url);
    model.on('error', () => undefined);
    const channel = await model.createConfirmChannel();
    channel.on('error', () => undefined);
    const sender = new Sender(channel, () => model.close().catch(() => undefined));
    onTeardown(sender.close);
    return sender;
  }

  async publish(
    exchange: string,
    routingKey: string,
    body: unknown,
    options: Options.Publish,
  ): Promise<void> {
    this.channel.publish(exchange, routingKey, Buffer.from(JSON.stringify(body)), {
      persistent: true,
      contentType: 'application/json',
      ...options,
    });
    await this.channel.waitForConfirms();
  }
}

/** Resolves with the error that closes the channel ('still open' when none comes). */
async function refused(publish: () => Promise<void>, sender: Sender): Promise<string> {
  const closed = new Promise<string>((resolve) =>
    sender.channel
      .once('close', () => resolve('closed'))
      .once('error', (error: Error) => resolve(error.message)),
  );
  await publish().catch(() => undefined);
  return Promise.race([closed, sleep(5000).then(() => 'still open')]);
}

describe('verified senders (strict mode, per-host broker users)', async () => {
  const broker = await testBroker();
  await addUser(broker, HOST_A, true);
  await addUser(broker, HOST_B, true);
  await addUser(broker, ROGUE, false);
  await addUser(broker, CONSUMER_USER, false);
  const consumer = await startConsumer({
    amqpUrl: urlAs(broker, CONSUMER_USER),
    dbUrl: tempSqliteUrl(),
    env: { VIRTBUS_CONSUMER_SENDERS: 'strict', VIRTBUS_STOP_TIMEOUT_MS: '60000' },
  });
  assert.equal(consumer.config.consumer.senders.mode, 'strict');
  const { exchange, commandExchange } = consumer.config.amqp;
  const deadLetterQueue = consumer.config.consumer.deadLetterQueue;
  // The test's own observer (as guest): commands, notifications and the dead-letter queue.
  const bus = await Bus.open(broker.url, consumer.config);
  bus.answerCommands(() => 'ignore');
  const commandProperties = new Map<string, ConsumeMessage['properties']>();
  {
    const model = await connect(broker.url);
    onTeardown(() => model.close().catch(() => undefined));
    const channel = await model.createChannel();
    const { queue } = await channel.assertQueue('', { exclusive: true });
    await channel.bindQueue(queue, commandExchange, '*.stop');
    await channel.consume(
      queue,
      (message) => {
        if (message) commandProperties.set(String(message.properties.messageId), message.properties);
      },
      { noAck: true },
    );
  }
  const a = await Sender.open(urlAs(broker, HOST_A));
  const b = await Sender.open(urlAs(broker, HOST_B));
  const rogue = await Sender.open(urlAs(broker, ROGUE));
  const events = new EventFactory();

  /** A running, active guest on B: a STOPPED event for it makes the consumer send a stop (4b). */
  async function runningOnB(): Promise<string> {
    const uuid = randomUUID();
    await consumer.store.upsert([instance({ uuid, host: HOST_B, vm_state: 'active', power_state: 1 })]);
    return uuid;
  }

  function lifecycleOptions(message: LifecycleMessage, userId?: string): Options.Publish {
    return { messageId: message.event_id, ...(userId ? { userId } : {}) };
  }

  async function deadLettered(messageId: string): Promise<GetMessage> {
    await waitUntil(
      'the dead-letter',
      async () => (await bus.queueCounts(deadLetterQueue)).messageCount >= 1,
      10000,
    );
    const dead = await bus.drain(deadLetterQueue);
    assert.equal(dead.length, 1, 'exactly one dead-letter');
    const [message] = dead;
    assert.ok(message);
    assert.equal(message.properties.messageId, messageId);
    return message;
  }

  /** A spoofed STOPPED for a running guest on B: dead-lettered, row unchanged, no stop command. */
  async function assertRejected(
    publish: (message: LifecycleMessage) => Promise<void>,
    reason: RegExp,
    label: 'routing_key_mismatch' | 'no_user_id' | 'user_mismatch',
  ): Promise<void> {
    const uuid = await runningOnB();
    const before = await row(consumer.store, uuid);
    const counted = (await consumer.metrics.senderRejections.get()).values.find(
      (v) => v.labels.reason === label,
    )?.value;
    const message = events.event(HOST_B, uuid, 'stopped', 4);
    await publish(message);
    const info = await consumer.waitProcessed(message.event_id);
    assert.equal(info.outcome, 'dead_lettered');
    assert.match(info.reason ?? '', reason);
    const dead = await deadLettered(message.event_id);
    assert.match(String(dead.properties.headers?.[REASON_HEADER]), reason);
    assert.deepEqual(JSON.parse(dead.content.toString('utf8')), message, 'the body is kept');
    const after = await row(consumer.store, uuid);
    assert.deepEqual(after, before, 'the row is unchanged');
    await sleep(200);
    assert.equal(bus.commandsFor(uuid).length, 0, 'no stop command');
    const now = (await consumer.metrics.senderRejections.get()).values.find((v) => v.labels.reason === label);
    assert.equal(now?.value, (counted ?? 0) + 1, `virtbus_consumer_sender_rejections_total{reason=${label}}`);
  }

  it('host A, under its own routing key, naming host B in the body: dead-lettered', async () => {
    await assertRejected(
      (message) =>
        a.publish(
          exchange,
          lifecycleRoutingKey(HOST_A, 'stopped'),
          message,
          lifecycleOptions(message, HOST_A),
        ),
      /^sender not verified: body host .* does not match the routing key's host segment/,
      'routing_key_mismatch',
    );
  });

  it('a routing key that names another host than the body: dead-lettered', async () => {
    // (A user without topic restrictions: the routing key names A, the body B, user_id B's would be
    // refused by the broker, so the user is the rogue's own.)
    await assertRejected(
      (message) =>
        rogue.publish(
          exchange,
          lifecycleRoutingKey(HOST_A, 'stopped'),
          message,
          lifecycleOptions(message, ROGUE),
        ),
      /does not match the routing key's host segment/,
      'routing_key_mismatch',
    );
  });

  it('no user_id: dead-lettered as unverified', async () => {
    await assertRejected(
      (message) =>
        rogue.publish(exchange, lifecycleRoutingKey(HOST_B, 'stopped'), message, lifecycleOptions(message)),
      /^sender not verified: no user_id property/,
      'no_user_id',
    );
  });

  it("the wrong user under B's routing key with B in the body: dead-lettered", async () => {
    await assertRejected(
      (message) =>
        rogue.publish(
          exchange,
          lifecycleRoutingKey(HOST_B, 'stopped'),
          message,
          lifecycleOptions(message, ROGUE),
        ),
      new RegExp(
        `^sender not verified: published by broker user "${ROGUE}", but host "${HOST_B}" publishes as "${HOST_B}"`,
      ),
      'user_mismatch',
    );
  });

  it('the broker refuses a forged user_id and (topic permissions) another host’s routing key', async () => {
    const forger = await Sender.open(urlAs(broker, HOST_A));
    const message = events.event(HOST_B, randomUUID(), 'stopped', 4);
    const forged = await refused(
      () =>
        forger.publish(
          exchange,
          lifecycleRoutingKey(HOST_A, 'stopped'),
          message,
          lifecycleOptions(message, HOST_B),
        ),
      forger,
    );
    assert.match(
      forged,
      /PRECONDITION_FAILED.*user_id/,
      'a user_id other than the connection user closes the channel',
    );
    const trespasser = await Sender.open(urlAs(broker, HOST_A));
    const trespass = await refused(
      () =>
        trespasser.publish(
          exchange,
          lifecycleRoutingKey(HOST_B, 'stopped'),
          message,
          lifecycleOptions(message, HOST_A),
        ),
      trespasser,
    );
    assert.notEqual(
      trespass,
      'still open',
      "writing B's routing key as A is refused by the topic permissions",
    );
    await sleep(300);
    assert.equal((await bus.queueCounts(deadLetterQueue)).messageCount, 0, 'nothing reached the consumer');
  });

  it('the genuine host, as its own user: applied, and the stop command carries the consumer’s user_id', async () => {
    const uuid = await runningOnB();
    const message = events.event(HOST_B, uuid, 'stopped', 4);
    await b.publish(
      exchange,
      lifecycleRoutingKey(HOST_B, 'stopped'),
      message,
      lifecycleOptions(message, HOST_B),
    );
    assert.equal((await consumer.waitProcessed(message.event_id)).outcome, 'synced');
    await waitUntil('the stop', () => bus.commandsFor(uuid).length === 1, 5000);
    const command = bus.commandsFor(uuid)[0] as StopCommand;
    await waitUntil('its properties', () => commandProperties.has(command.command_id), 5000);
    assert.equal(commandProperties.get(command.command_id)?.userId, CONSUMER_USER);
    assert.equal((await row(consumer.store, uuid)).task_state, 'powering-off');
  });

  it("results: another host's (or an unverified) result for B's command is dead-lettered; B's own is applied", async () => {
    const uuid = await runningOnB();
    const stopped = events.event(HOST_B, uuid, 'stopped', 4);
    await b.publish(
      exchange,
      lifecycleRoutingKey(HOST_B, 'stopped'),
      stopped,
      lifecycleOptions(stopped, HOST_B),
    );
    await waitUntil('the stop', () => bus.commandsFor(uuid).length === 1, 5000);
    const command = bus.commandsFor(uuid)[0] as StopCommand;
    const result = (id: string): CommandResult => stopResult({ ...command, command_id: id, host: HOST_B });
    // A, under its own key, claiming to be B; then the rogue under B's key without user_id.
    const spoofed = { ...result(command.command_id) };
    await a.publish(commandExchange, commandResultRoutingKey(HOST_A), spoofed, {
      messageId: 'spoofed-result',
      userId: HOST_A,
    });
    const first = await consumer.waitProcessed('spoofed-result');
    assert.equal(first.outcome, 'dead_lettered');
    assert.match(first.reason ?? '', /does not match the routing key's host segment/);
    await rogue.publish(commandExchange, commandResultRoutingKey(HOST_B), spoofed, {
      messageId: 'anonymous-result',
    });
    const second = await consumer.waitProcessed('anonymous-result');
    assert.equal(second.outcome, 'dead_lettered');
    assert.match(second.reason ?? '', /no user_id/);
    await bus.drain(deadLetterQueue);
    const pending = await row(consumer.store, uuid);
    assert.deepEqual([pending.vm_state, pending.task_state], ['active', 'powering-off'], 'still waiting');
    await b.publish(commandExchange, commandResultRoutingKey(HOST_B), result(command.command_id), {
      messageId: 'genuine-result',
      userId: HOST_B,
    });
    assert.equal((await consumer.waitProcessed('genuine-result')).outcome, 'command_result');
    const done = await row(consumer.store, uuid);
    assert.deepEqual([done.vm_state, done.task_state, done.power_state], ['stopped', null, 4]);
  });
});

describe('a stop command no queue takes', async () => {
  const broker = await testBroker();
  // Commands go to an exchange nothing binds *.stop on: the broker returns them (mandatory).
  const consumer = await startConsumer({
    amqpUrl: broker.url,
    dbUrl: tempSqliteUrl(),
    env: { VIRTBUS_COMMAND_EXCHANGE: 'virtbus.commands.nobody', VIRTBUS_STOP_TIMEOUT_MS: '60000' },
  });
  const bus = await Bus.open(broker.url, consumerConfig({ VIRTBUS_AMQP_URL: broker.url }));
  const events = new EventFactory();

  it('is a publish failure: counted, the row stays powering-off for the stop timeout to clear', async () => {
    const host = 'cmp-lonely';
    const uuid = randomUUID();
    await consumer.store.upsert([instance({ uuid, host, vm_state: 'active', power_state: 1 })]);
    const message = events.event(host, uuid, 'stopped', 4);
    await bus.publishLifecycle(consumer.config.amqp.exchange, [message]);
    assert.equal((await consumer.waitProcessed(message.event_id)).outcome, 'synced');
    const failed = async (): Promise<number> =>
      (await consumer.metrics.syncActions.get()).values.find(
        (v) => v.labels.action === 'command_publish_failed',
      )?.value ?? 0;
    await waitUntil('the publish failure', async () => (await failed()) === 1, 5000);
    assert.equal((await consumer.metrics.commandsReturned.get()).values[0]?.value, 1);
    const published = (await consumer.metrics.commandsPublished.get()).values.reduce(
      (s, v) => s + v.value,
      0,
    );
    assert.equal(published, 0, 'not counted as published');
    assert.equal((await row(consumer.store, uuid)).task_state, 'powering-off');
  });
});

/**
 * `virtbus dead-letters list|replay|purge` on a real broker loaded with the generated definitions
 * (per-host users, the consumer's own user; test/security/broker-fixture.ts) and a consumer in
 * strict sender mode:
 * - a consumer with a wrong sender template dead-letters host A's genuine event; after the fix (a
 *   consumer with the right template) `replay --reason` hands it back and it is applied, once: a
 *   second copy (a replay interrupted between its confirm and its ack) changes nothing;
 * - what host A forges stays refused through replay: a body naming host B under A's routing key is
 *   dead-lettered again with its original sender recorded, a message claiming to be a replay
 *   (REPLAY_HEADER, "original" user B) on the lifecycle exchange is dead-lettered as forged, A
 *   cannot publish to the consumer's queue through the default exchange at all, and a dead letter
 *   planted in the dead-letter exchange by anyone but the consumer is never replayed;
 * - `purge` asks, does nothing on "n", and with --yes empties the queue.
 */
import { virtbusCli, type CliRun } from '../support/cli';
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { connect, type ChannelModel, type ConfirmChannel } from 'amqplib';
import { ORIGINAL_USER_HEADER, REPLAY_HEADER } from '../../src/consumer/dead-letters-origin';
import { describeDeadLetter, replayMessage, type DeadLetterEntry } from '../../src/consumer/dead-letters';
import { lifecycleRoutingKey, type LifecycleMessage } from '../../src/messages/lifecycle';
import {
  attempt,
  CONSUMER,
  HOST_A,
  HOST_B,
  publishConfirmed,
  startSecureBroker,
  USER_A,
  USER_B,
  VHOST,
} from '../security/broker-fixture';
import { EventFactory, instance, row, startConsumer, tempSqliteUrl, waitUntil } from '../support/consumer';

describe('dead-letters list, replay and purge against the sender checks', async () => {
  const broker = await startSecureBroker();
  const consumerUrl = broker.url(CONSUMER);
  const dbUrl = tempSqliteUrl();
  const config = broker.config;
  const events = new EventFactory();
  const uuidA = '7d1e0000-0000-4000-8000-00000000000a';
  const victimB = '7d1e0000-0000-4000-8000-00000000000b';

  const virtbus = (args: readonly string[], input = ''): Promise<CliRun> =>
    virtbusCli(['dead-letters', ...args], { VIRTBUS_AMQP_URL: consumerUrl }, { input, cleanEnv: true });

  const list = async (): Promise<DeadLetterEntry[]> => {
    const run = await virtbus(['list', '--json']);
    assert.equal(run.code, 0, run.stderr);
    return run.stdout
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => JSON.parse(line) as DeadLetterEntry);
  };

  const hostA: ChannelModel = await connect(broker.url(USER_A));
  const channelA: ConfirmChannel = await hostA.createConfirmChannel();
  const admin = await connect(broker.url(CONSUMER)); // the consumer's identity, for the test's own reads
  const adminChannel = await admin.createConfirmChannel();

  /** Host A publishes on the lifecycle exchange as itself (the broker-verified user_id). */
  const publishAsA = async (
    message: LifecycleMessage,
    routingKey: string,
    headers: Record<string, unknown> = {},
  ): Promise<void> =>
    publishConfirmed(channelA, config.amqp.exchange, routingKey, JSON.stringify(message), {
      userId: USER_A,
      messageId: message.event_id,
      contentType: 'application/json',
      headers,
    });

  const queueDepth = async (queue: string): Promise<number> =>
    (await adminChannel.checkQueue(queue)).messageCount;

  // Wrong template: host A's genuine messages are refused (user cmp-a… is not bridge-cmp-a…).
  let consumer = await startConsumer({
    amqpUrl: consumerUrl,
    dbUrl,
    env: {
      VIRTBUS_CONSUMER_SENDERS: 'strict',
      VIRTBUS_CONSUMER_SENDER_USER_TEMPLATE: 'bridge-{segment}',
      VIRTBUS_CONSUMER_MODE: 'observe',
    },
  });
  await consumer.store.upsert([
    instance({ uuid: uuidA, host: HOST_A, power_state: 1 }),
    instance({ uuid: victimB, host: HOST_B, power_state: 1 }),
  ]);

  const genuine = events.event(HOST_A, uuidA, 'paused', 3);
  const forgedBody = events.event(HOST_B, victimB, 'stopped', 4);
  const forgedReplay = events.event(HOST_B, victimB, 'stopped', 4);

  it('dead-letters what the senders check refuses, recording the original sender', async () => {
    await publishAsA(genuine, lifecycleRoutingKey(HOST_A, 'paused'));
    await publishAsA(forgedBody, lifecycleRoutingKey(HOST_A, 'stopped'));
    await publishAsA(forgedReplay, lifecycleRoutingKey(HOST_A, 'stopped'), {
      [REPLAY_HEADER]: '2026-12-07T08:00:00.000000Z',
      'x-virtbus-original-routing-key': lifecycleRoutingKey(HOST_B, 'stopped'),
      [ORIGINAL_USER_HEADER]: USER_B,
    });
    for (const message of [genuine, forgedBody, forgedReplay]) await consumer.waitProcessed(message.event_id);
    // Something other than the consumer plants a dead letter with a made-up origin (user B).
    const planted = events.event(HOST_B, victimB, 'stopped', 4);
    // (guest, given rights on the vhost here: the generated definitions let no host publish there.)
    await broker.node.ctl('set_permissions', '-p', VHOST, 'guest', '.*', '.*', '.*');
    const guest = await connect(broker.url('guest', 'guest'));
    const planterChannel = await guest.createConfirmChannel();
    await publishConfirmed(
      planterChannel,
      config.consumer.deadLetterExchange,
      lifecycleRoutingKey(HOST_B, 'stopped'),
      JSON.stringify(planted),
      {
        messageId: planted.event_id,
        headers: {
          'x-virtbus-reason': 'processing failed: planted',
          'x-virtbus-queue': config.consumer.queue,
          'x-virtbus-original-routing-key': lifecycleRoutingKey(HOST_B, 'stopped'),
          [ORIGINAL_USER_HEADER]: USER_B,
        },
      },
    );
    await guest.close();

    const entries = await list();
    const byId = new Map(entries.map((entry) => [entry.messageId, entry]));
    const genuineEntry = byId.get(genuine.event_id);
    assert.ok(genuineEntry, JSON.stringify(entries));
    assert.match(genuineEntry.reason, /^sender not verified: published by broker user/);
    assert.equal(genuineEntry.routingKey, lifecycleRoutingKey(HOST_A, 'paused'));
    assert.equal(genuineEntry.originalUser, USER_A);
    assert.equal(genuineEntry.source, 'consumer');
    assert.equal(genuineEntry.queue, config.consumer.queue);
    assert.equal(genuineEntry.unreplayable, null);
    assert.match(genuineEntry.deadLetteredAt ?? '', /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/);
    assert.ok(JSON.stringify(genuine).startsWith(genuineEntry.excerpt.replace(/…$/, '')), 'a body excerpt');
    assert.match(
      byId.get(forgedBody.event_id)?.reason ?? '',
      /does not match the routing key's host segment/,
    );
    assert.match(byId.get(forgedReplay.event_id)?.reason ?? '', /forged replay/);
    assert.equal(
      byId.get(forgedReplay.event_id)?.originalUser,
      USER_A,
      'the real sender, not the claimed one',
    );
    const plantedEntry = byId.get(planted.event_id);
    assert.ok(plantedEntry);
    assert.equal(plantedEntry.originalUser, null, 'a made-up origin is not believed');
    assert.match(plantedEntry.unreplayable ?? '', /not written by the consumer's broker user/);
    const text = await virtbus(['list', '--reason', 'forged replay']);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /forged replay/);
    assert.doesNotMatch(text.stdout, /published by broker user/);
    assert.match(text.stderr, /^1 dead letter\(s\) in virtbus\.dead-letter/m);
    assert.equal((await row(consumer.store, uuidA)).power_state, 1, 'nothing applied yet');
  });

  it('host A cannot publish to the consumer queue through the default exchange', async () => {
    const refusal = await attempt(broker.url(USER_A), (channel) =>
      publishConfirmed(channel, '', config.consumer.queue, JSON.stringify(forgedBody), {
        userId: USER_A,
        headers: {
          [REPLAY_HEADER]: 'now',
          'x-virtbus-original-routing-key': lifecycleRoutingKey(HOST_B, 'stopped'),
        },
      }),
    );
    assert.equal(refusal?.code, 403, JSON.stringify(refusal));
  });

  // The fixed consumer runs for the subtests below (started in the parent test, whose end stops it).
  it('after the fix: a consumer with the right sender template', async (t) => {
    await consumer.stop();
    consumer = await startConsumer({
      amqpUrl: consumerUrl,
      dbUrl,
      env: { VIRTBUS_CONSUMER_SENDERS: 'strict', VIRTBUS_CONSUMER_MODE: 'observe' },
    });
    await t.test('replay --reason hands back the genuine message, which is applied once', replayGenuine);
    await t.test(
      'replaying the forgeries dead-letters them again, with the real sender kept; the planted one stays',
      replayForgeries,
    );
    await t.test('purge asks first; "n" keeps everything, --yes empties the queue', purge);
  });

  async function replayGenuine(): Promise<void> {
    const before = await queueDepth(config.consumer.deadLetterQueue);
    const run = await virtbus(['replay', '--reason', 'published by broker user']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^replayed 1 dead letter\(s\)/);
    const info = await consumer.waitProcessed(genuine.event_id);
    assert.equal(info.outcome, 'synced');
    const applied = await row(consumer.store, uuidA);
    assert.equal(applied.power_state, 3);
    assert.equal(await queueDepth(config.consumer.deadLetterQueue), before - 1, 'only the selected one left');

    // A second copy (as a replay interrupted after its confirm, before its ack, would leave):
    const copy = Buffer.from(JSON.stringify(genuine));
    const entry: DeadLetterEntry = {
      ...describeDeadLetter(
        {
          content: copy,
          fields: { deliveryTag: 0, redelivered: false, exchange: '', routingKey: 'x' },
          properties: {
            headers: {
              'x-virtbus-reason': 'again',
              'x-virtbus-queue': config.consumer.queue,
              'x-virtbus-original-routing-key': lifecycleRoutingKey(HOST_A, 'paused'),
              [ORIGINAL_USER_HEADER]: USER_A,
            },
            userId: CONSUMER,
            messageId: genuine.event_id,
          },
        } as never,
        { deadLetterQueue: '', consumerQueues: [config.consumer.queue], selfUser: CONSUMER },
      ),
    };
    const second = replayMessage(
      { content: copy, properties: { messageId: genuine.event_id } } as never,
      entry,
      CONSUMER,
    );
    const processedBefore = consumer.processed.length;
    await publishConfirmed(adminChannel, '', config.consumer.queue, second.content, second.options);
    await waitUntil('the copy processed', () => consumer.processed.length > processedBefore, 10_000);
    assert.equal(consumer.processed.at(-1)?.outcome, 'out_of_order', 'not newer than the row: dropped');
    assert.equal((await row(consumer.store, uuidA)).version, applied.version, 'the row did not change');
  }

  async function replayForgeries(): Promise<void> {
    const run = await virtbus(['replay']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^replayed 2 dead letter\(s\), skipped 1/, run.stdout + run.stderr);
    await consumer.waitProcessed(forgedBody.event_id);
    await consumer.waitProcessed(forgedReplay.event_id);
    const victim = await row(consumer.store, victimB);
    assert.equal(victim.power_state, 1, "host B's guest untouched");
    assert.equal(victim.last_action, null);
    const entries = await list();
    const again = entries.find((entry) => entry.messageId === forgedBody.event_id);
    assert.match(again?.reason ?? '', /does not match the routing key's host segment/);
    assert.equal(again?.originalUser, USER_A);
    assert.equal(
      again?.routingKey,
      lifecycleRoutingKey(HOST_A, 'stopped'),
      'the original routing key, not the queue',
    );
    const replayedForgery = entries.find((entry) => entry.messageId === forgedReplay.event_id);
    assert.match(replayedForgery?.reason ?? '', /does not match the routing key's host segment/);
    assert.equal(replayedForgery?.originalUser, USER_A);
    assert.ok(!entries.some((entry) => entry.messageId === genuine.event_id));
    assert.match(run.stderr, /^skipped .*not written by the consumer's broker user/m);
    assert.ok(
      entries.some((entry) => entry.reason === 'processing failed: planted'),
      'the planted one stays',
    );
  }

  async function purge(): Promise<void> {
    const depth = await queueDepth(config.consumer.deadLetterQueue);
    assert.ok(depth >= 2);
    const declined = await virtbus(['purge'], 'n\n');
    assert.equal(declined.code, 1);
    assert.match(
      declined.stderr,
      new RegExp(`Purge all ${depth} message\\(s\\) from virtbus\\.dead-letter\\?`),
    );
    assert.match(declined.stderr, /not purged/);
    assert.equal(await queueDepth(config.consumer.deadLetterQueue), depth);
    const purged = await virtbus(['purge', '--yes']);
    assert.equal(purged.code, 0, purged.stderr);
    assert.equal(purged.stdout, `purged ${depth} dead letter(s) from virtbus.dead-letter\n`);
    assert.equal(await queueDepth(config.consumer.deadLetterQueue), 0);
    await hostA.close();
    await admin.close();
  }
});

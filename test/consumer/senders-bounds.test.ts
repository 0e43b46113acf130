/**
 * Bounded input: a body over consumer.maxMessageBytes (default 1 MiB) is dead-lettered before it is
 * decoded, with its reason and only its first KiB (the dead-letter queue must stay bounded too), and
 * a deeply nested body within the bound is dead-lettered as unreadable; the consumer keeps applying
 * the valid traffic around them.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { lifecycleRoutingKey } from '../../src/messages/lifecycle';
import { DEAD_LETTER_PREFIX_BYTES, REASON_HEADER } from '../../src/consumer/service';
import { testBroker } from '../support/services';
import {
  Bus,
  EventFactory,
  instance,
  row,
  startConsumer,
  tempSqliteUrl,
  waitUntil,
} from '../support/consumer';

const HOST = 'cmp-bounds';

describe('bounded consumer input', async () => {
  const broker = await testBroker();
  const consumer = await startConsumer({ amqpUrl: broker.url, dbUrl: tempSqliteUrl() });
  assert.equal(consumer.config.consumer.maxMessageBytes, 1024 * 1024);
  const bus = await Bus.open(broker.url, consumer.config);
  const events = new EventFactory();
  const { exchange } = consumer.config.amqp;
  const deadLetterQueue = consumer.config.consumer.deadLetterQueue;

  it('an oversized body is dead-lettered unread, as a 1 KiB prefix; a deeply nested one as unreadable', async () => {
    const uuid = randomUUID();
    await consumer.store.upsert([instance({ uuid, host: HOST, vm_state: 'active', power_state: 1 })]);
    // A valid message padded past the bound (the padding is an unknown field: only the size is wrong).
    const padded = { ...events.event(HOST, uuid, 'paused', 3), padding: 'x'.repeat(2 * 1024 * 1024) };
    const oversized = Buffer.from(JSON.stringify(padded));
    await bus.publishRaw(exchange, lifecycleRoutingKey(HOST, 'paused'), oversized, 'oversized');
    const nested = Buffer.from(`${'['.repeat(400_000)}${']'.repeat(400_000)}`);
    await bus.publishRaw(exchange, lifecycleRoutingKey(HOST, 'paused'), nested, 'nested');
    const valid = events.event(HOST, uuid, 'paused', 3);
    await bus.publishLifecycle(exchange, [valid]);

    const big = await consumer.waitProcessed('oversized');
    assert.equal(big.outcome, 'dead_lettered');
    assert.match(big.reason ?? '', /^body too large: \d+ bytes, over consumer.maxMessageBytes \(1048576\)/);
    const deep = await consumer.waitProcessed('nested');
    assert.equal(deep.outcome, 'dead_lettered');
    assert.equal((await consumer.waitProcessed(valid.event_id)).outcome, 'synced');
    assert.equal((await row(consumer.store, uuid)).power_state, 3, 'the valid event is applied');

    await waitUntil(
      'both dead-letters',
      async () => (await bus.queueCounts(deadLetterQueue)).messageCount >= 2,
      10000,
    );
    const dead = new Map(
      (await bus.drain(deadLetterQueue)).map((m) => [m.properties.messageId as string, m]),
    );
    const bigDead = dead.get('oversized');
    assert.ok(bigDead);
    assert.equal(bigDead.content.length, DEAD_LETTER_PREFIX_BYTES, 'only a prefix is kept');
    assert.deepEqual(bigDead.content, oversized.subarray(0, DEAD_LETTER_PREFIX_BYTES));
    assert.equal(bigDead.properties.headers?.['x-virtbus-original-bytes'], oversized.length);
    assert.match(String(bigDead.properties.headers?.[REASON_HEADER]), /^body too large/);
    const deepDead = dead.get('nested');
    assert.ok(deepDead);
    assert.equal(deepDead.content.length, nested.length, 'a body within the bound is kept whole');
    assert.match(
      String(deepDead.properties.headers?.[REASON_HEADER]),
      /not a JSON object|not JSON|unreadable/,
    );
    assert.equal((await consumer.metrics.oversized.get()).values[0]?.value, 1);
  });
});

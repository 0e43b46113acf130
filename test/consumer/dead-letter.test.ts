/**
 * Bad input never crashes or stalls the consumer: a batch of malformed lifecycle messages (not
 * JSON, not UTF-8, wrong or unknown schema, missing and ill-typed fields, absurd values, broken
 * oslo envelopes) and a seeded fuzz of mutated messages, interleaved with valid traffic, all land in
 * the dead-letter queue with their reason (header x-virtbus-reason) and their body unchanged, while
 * the valid traffic is applied. Malformed command results go the same way. A message that keeps
 * coming back (a crashing consumer) is dead-lettered by the broker at the quorum delivery limit.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, describe, it } from 'node:test';
import type { GetMessage } from 'amqplib';
import { connect } from 'amqplib';
import { lifecycleRoutingKey, osloEnvelope, type LifecycleMessage } from '../../src/messages/lifecycle';
import { REASON_HEADER } from '../../src/consumer/service';
import { openStore } from '../../src/store/open';
import type { Decide } from '../../src/store/types';
import { createLogger } from '../../src/util/log';
import { nowMicros } from '../../src/util/time';
import { testBroker } from '../support/services';
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
import { random } from '../support/random';

const HOST = 'cmp-dl';
const KEY = lifecycleRoutingKey(HOST, 'stopped');

type Body = string | Buffer | Record<string, unknown> | unknown[] | number | null;

/** A malformed message and the reason it must be dead-lettered with. */
interface Bad {
  readonly name: string;
  readonly body: Body;
  readonly reason: RegExp;
}

function encode(body: Body): Buffer {
  if (Buffer.isBuffer(body)) return body;
  return Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
}

function without(message: LifecycleMessage, key: string): Record<string, unknown> {
  const copy: Record<string, unknown> = { ...message };
  delete copy[key];
  return copy;
}

function badMessages(valid: () => LifecycleMessage): Bad[] {
  const base = (): Record<string, unknown> => ({ ...valid() });
  const farFuture = new Date(Date.now() + 3600_000).toISOString().replace('Z', '000Z');
  const bad: Bad[] = [
    { name: 'plain text', body: 'hello', reason: /^body is not JSON/ },
    { name: 'truncated JSON', body: '{"schema": "virtbus.lifecycle/1", ', reason: /^body is not JSON/ },
    { name: 'empty body', body: '', reason: /^body is not JSON/ },
    { name: 'invalid UTF-8', body: Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), reason: /^body is not UTF-8/ },
    { name: 'a number', body: 42, reason: /is not a JSON object/ },
    { name: 'an array', body: [1, 2, 3], reason: /is not a JSON object/ },
    { name: 'null', body: null, reason: /is not a JSON object/ },
    {
      name: 'unknown schema version',
      body: { ...base(), schema: 'virtbus.lifecycle/2' },
      reason: /^unknown schema "virtbus.lifecycle\/2"/,
    },
    { name: 'foreign schema', body: { ...base(), schema: 42 }, reason: /^unknown schema 42/ },
    { name: 'no schema', body: without(valid(), 'schema'), reason: /^missing field schema/ },
    {
      name: 'broken oslo envelope',
      body: { 'oslo.version': '2.0', 'oslo.message': '{nope' },
      reason: /^oslo.message is not JSON/,
    },
    {
      name: 'ill-typed seq',
      body: { ...base(), seq: '12' },
      reason: /^field seq: expected a non-negative integer/,
    },
    { name: 'negative seq', body: { ...base(), seq: -5 }, reason: /^field seq/ },
    { name: 'fractional seq', body: { ...base(), seq: 1.5 }, reason: /^field seq/ },
    { name: 'huge seq', body: { ...base(), seq: 2 ** 60 }, reason: /^field seq/ },
    { name: 'ill-typed power_state', body: { ...base(), power_state: '4' }, reason: /^field power_state/ },
    {
      name: 'absurd power_state',
      body: { ...base(), power_state: 42 },
      reason: /^field power_state: 42 is not a Nova power_state/,
    },
    { name: 'negative power_state', body: { ...base(), power_state: -1 }, reason: /^field power_state/ },
    { name: 'ill-typed host', body: { ...base(), host: 42 }, reason: /^field host: expected a string/ },
    { name: 'empty host', body: { ...base(), host: '' }, reason: /^field host: empty/ },
    {
      name: 'enormous host',
      body: { ...base(), host: 'x'.repeat(10000) },
      reason: /^field host: longer than/,
    },
    {
      name: 'not a UUID',
      body: { ...base(), instance_uuid: 'not-a-uuid' },
      reason: /^field instance_uuid: not a UUID/,
    },
    {
      name: 'unknown transition',
      body: { ...base(), transition: 'exploded' },
      reason: /^field transition: unknown transition "exploded"/,
    },
    {
      name: 'occurred_at a number',
      body: { ...base(), occurred_at: 12345 },
      reason: /^field occurred_at: expected a string/,
    },
    {
      name: 'occurred_at not a time',
      body: { ...base(), occurred_at: 'yesterday' },
      reason: /^field occurred_at: not an ISO-8601/,
    },
    {
      name: 'occurred_at on February 30',
      body: { ...base(), occurred_at: '2026-02-30T10:00:00Z' },
      reason: /^field occurred_at: not an ISO-8601/,
    },
    {
      name: 'occurred_at at 24:00',
      body: { ...base(), occurred_at: '2026-02-27T24:00:00Z' },
      reason: /^field occurred_at: not an ISO-8601/,
    },
    {
      name: 'occurred_at with an expanded year',
      body: { ...base(), occurred_at: '+002026-02-27T10:00:00Z' },
      reason: /^field occurred_at: not an ISO-8601/,
    },
    {
      name: 'occurred_at with a local offset',
      body: { ...base(), occurred_at: '2026-02-27T10:00:00+01:00' },
      reason: /^field occurred_at: not an ISO-8601/,
    },
    {
      name: 'occurred_at in 1970',
      body: { ...base(), occurred_at: '1970-01-01T00:00:00Z' },
      reason: /^field occurred_at: .* is before 2000/,
    },
    {
      name: 'occurred_at in 9999',
      body: { ...base(), occurred_at: '9999-12-31T23:59:59.000000Z' },
      reason: /lies in the future/,
    },
    {
      name: 'occurred_at an hour ahead',
      body: { ...base(), occurred_at: farFuture },
      reason: /lies in the future/,
    },
    {
      name: 'boot_id an array',
      body: { ...base(), boot_id: [] },
      reason: /^field boot_id: expected a string/,
    },
    {
      name: 'event_id an object',
      body: { ...base(), event_id: {} },
      reason: /^field event_id: expected a string/,
    },
    {
      name: 'sync_end with an instance',
      body: { ...base(), transition: 'sync_end', instance_uuids: [] },
      reason: /must be null in sync_end/,
    },
    {
      name: 'sync_end without snapshot',
      body: { ...base(), transition: 'sync_end', instance_uuid: null, power_state: null, instance_uuids: [] },
      reason: /^sync_end without snapshot/,
    },
    {
      name: 'sync_end with a bad list',
      body: {
        ...base(),
        transition: 'sync_end',
        instance_uuid: null,
        power_state: null,
        snapshot: { id: 's', reason: 'start', count: 1, taken_at: '2026-01-01T00:00:00.000000Z' },
        instance_uuids: ['nope'],
      },
      reason: /^field instance_uuids\[0\]: not a UUID/,
    },
  ];
  for (const key of [
    'event_id',
    'host',
    'transition',
    'instance_uuid',
    'power_state',
    'occurred_at',
    'seq',
    'boot_id',
  ])
    bad.push({
      name: `missing ${key}`,
      body: without(valid(), key),
      reason: new RegExp(`^missing field ${key}`),
    });
  return bad;
}

const JUNK: readonly unknown[] = [
  null,
  true,
  -1,
  0,
  1e308,
  'x',
  '',
  [],
  {},
  [null],
  { a: 1 },
  '\u0000',
  'é'.repeat(300),
];

describe('malformed messages go to the dead-letter queue with a reason', async () => {
  const broker = await testBroker();
  const consumer = await startConsumer({ amqpUrl: broker.url, dbUrl: tempSqliteUrl() });
  const bus = await Bus.open(broker.url, consumer.config);
  const { deadLetterQueue } = consumer.config.consumer;
  const exchange = consumer.config.amqp.exchange;
  const events = new EventFactory();
  const uuids = Array.from({ length: 40 }, () => randomUUID());
  await consumer.store.upsert(
    uuids.map((uuid) => instance({ uuid, host: HOST, vm_state: 'active', power_state: 1 })),
  );
  const validFor = (uuid: string): LifecycleMessage => events.event(HOST, uuid, 'paused', 3);
  let dead: GetMessage[] = [];

  it('dead-letters every malformed message, with its reason, while valid traffic flows', async () => {
    const bad = badMessages(() => validFor(randomUUID()));
    // Valid traffic interleaved: each instance paused then resumed, one message in the oslo envelope.
    const valid: LifecycleMessage[] = [];
    for (const uuid of uuids)
      valid.push(events.event(HOST, uuid, 'paused', 3), events.event(HOST, uuid, 'resumed', 1));
    const ids = new Map<string, Bad>();
    let v = 0;
    for (const item of bad) {
      const id = randomUUID();
      ids.set(id, item);
      await bus.publishRaw(exchange, KEY, encode(item.body), id);
      const good = valid.slice(v, v + 2);
      v += 2;
      if (good.length > 0) await bus.publishLifecycle(exchange, good);
    }
    await bus.publishLifecycle(exchange, valid.slice(v, -1));
    const last = valid[valid.length - 1] as LifecycleMessage;
    await bus.publishRaw(
      exchange,
      lifecycleRoutingKey(HOST, last.transition),
      Buffer.from(JSON.stringify(osloEnvelope(last, nowMicros()))),
      last.event_id,
    );

    await waitUntil(
      'every valid event applied',
      async () => {
        const rows = await Promise.all(uuids.map((uuid) => row(consumer.store, uuid)));
        return rows.every(
          (r) =>
            r.power_state === 1 &&
            r.event_seq !== null &&
            r.event_seq >=
              (valid.find((m) => m.instance_uuid === r.uuid && m.transition === 'resumed')?.seq ?? Infinity),
        );
      },
      20000,
    );
    await waitUntil(
      'every malformed message dead-lettered',
      async () => (await bus.queueCounts(deadLetterQueue)).messageCount >= bad.length,
      20000,
    );
    dead = await bus.drain(deadLetterQueue);
    assert.equal(dead.length, bad.length, 'exactly the malformed messages are in the DLQ');
    for (const message of dead) {
      const item = ids.get(message.properties.messageId as string);
      assert.ok(item, 'a malformed message we sent');
      const headers = message.properties.headers ?? {};
      assert.match(String(headers[REASON_HEADER]), item.reason, item.name);
      assert.equal(headers['x-virtbus-original-routing-key'], KEY);
      assert.equal(headers['x-virtbus-original-exchange'], exchange);
      assert.equal(headers['x-virtbus-queue'], consumer.config.consumer.queue);
      assert.ok(message.content.equals(encode(item.body)), `${item.name}: body unchanged`);
    }
    assert.ok(consumer.service.ready, 'still consuming');
    const text = await consumer.metrics.registry.metrics();
    assert.match(
      text,
      new RegExp(`virtbus_consumer_messages_total\\{outcome="dead_lettered"\\} ${bad.length}\\b`),
    );
  });

  it('a seeded fuzz of mutated messages: each is applied or dead-lettered, never lost or stuck', async () => {
    const next = random(1234);
    const sent: string[] = [];
    const fuzzUuid = randomUUID();
    await consumer.store.upsert([
      instance({ uuid: fuzzUuid, host: HOST, vm_state: 'active', power_state: 1 }),
    ]);
    for (let i = 0; i < 300; i += 1) {
      const message: Record<string, unknown> = { ...events.event(HOST, fuzzUuid, 'paused', 3) };
      const keys = Object.keys(message);
      const mutations = 1 + Math.floor(next() * 3);
      for (let m = 0; m < mutations; m += 1) {
        const key = keys[Math.floor(next() * keys.length)] as string;
        if (next() < 0.2) delete message[key];
        else message[key] = JUNK[Math.floor(next() * JUNK.length)];
      }
      const id = randomUUID();
      sent.push(id);
      await bus.publishRaw(exchange, KEY, Buffer.from(JSON.stringify(message)), id);
    }
    await waitUntil(
      'every fuzzed message handled',
      () => sent.every((id) => consumer.processed.some((p) => p.messageId === id)),
      20000,
    );
    const outcomes = new Map<string, number>();
    for (const id of sent) {
      const outcome = consumer.processed.find((p) => p.messageId === id)?.outcome ?? 'lost';
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    }
    const deadCount = outcomes.get('dead_lettered') ?? 0;
    const fuzzDead = await bus.drain(deadLetterQueue);
    assert.equal(fuzzDead.length, deadCount, 'every dead-lettered one is in the DLQ');
    assert.ok(fuzzDead.every((message) => typeof message.properties.headers?.[REASON_HEADER] === 'string'));
    assert.ok(
      deadCount > 50 && deadCount < 300,
      `some mutations are fatal, some harmless (${deadCount} of 300)`,
    );
    console.log(`fuzz: ${JSON.stringify(Object.fromEntries(outcomes))}`);
    assert.ok(consumer.service.ready, 'still consuming');
  });

  it('dead-letters malformed stop-command results', async () => {
    const key = `${HOST}.stop_result`;
    const ids = [randomUUID(), randomUUID(), randomUUID()];
    await bus.publishRaw(
      consumer.config.amqp.commandExchange,
      key,
      Buffer.from('not json'),
      ids[0] as string,
    );
    await bus.publishRaw(
      consumer.config.amqp.commandExchange,
      key,
      Buffer.from(JSON.stringify({ schema: 'virtbus.command-result/9' })),
      ids[1] as string,
    );
    await bus.publishRaw(
      consumer.config.amqp.commandExchange,
      key,
      Buffer.from(
        JSON.stringify({
          schema: 'virtbus.command-result/1',
          command_id: 'c',
          action: 'stop',
          host: HOST,
          instance_uuid: randomUUID(),
          outcome: 'vaporised',
        }),
      ),
      ids[2] as string,
    );
    const result = (power: unknown): Buffer =>
      Buffer.from(
        JSON.stringify({
          schema: 'virtbus.command-result/1',
          command_id: 'c',
          action: 'stop',
          host: HOST,
          instance_uuid: randomUUID(),
          outcome: 'stopped',
          method: 'shutdown',
          power_state: power,
          error: null,
          finished_at: new Date().toISOString(),
        }),
      );
    ids.push(randomUUID(), randomUUID(), randomUUID());
    await bus.publishRaw(consumer.config.amqp.commandExchange, key, result(99), ids[3] as string);
    await bus.publishRaw(consumer.config.amqp.commandExchange, key, result('4'), ids[4] as string);
    await bus.publishRaw(consumer.config.amqp.commandExchange, key, result(undefined), ids[5] as string);
    await Promise.all(ids.map((id) => consumer.waitProcessed(id)));
    const results = await bus.drain(deadLetterQueue);
    const reasons = new Map(
      results.map((m) => [m.properties.messageId as string, String(m.properties.headers?.[REASON_HEADER])]),
    );
    assert.match(reasons.get(ids[0] as string) ?? '', /^body is not JSON/);
    assert.match(reasons.get(ids[1] as string) ?? '', /^unknown schema "virtbus.command-result\/9"/);
    assert.match(reasons.get(ids[2] as string) ?? '', /^field outcome: unknown outcome "vaporised"/);
    assert.match(reasons.get(ids[3] as string) ?? '', /^field power_state: 99 is not a Nova power_state/);
    assert.match(reasons.get(ids[4] as string) ?? '', /^field power_state: "4" is not a Nova power_state/);
    assert.match(reasons.get(ids[5] as string) ?? '', /^missing field power_state/);
    assert.ok(
      results.every(
        (m) => m.properties.headers?.['x-virtbus-queue'] === consumer.config.consumer.resultQueue,
      ),
    );
  });

  it('a message that keeps coming back is dead-lettered by the broker at the delivery limit', async () => {
    await consumer.stop();
    const poison = validFor(uuids[0] as string);
    await bus.publishLifecycle(exchange, [poison]);
    // Play a consumer that crashes on it: reject with requeue, again and again.
    const model = await connect(broker.url);
    try {
      const channel = await model.createChannel();
      let deliveries = 0;
      await channel.consume(consumer.config.consumer.queue, (message) => {
        if (!message) return;
        deliveries += 1;
        channel.nack(message, false, true);
      });
      await waitUntil(
        'the broker to dead-letter it',
        async () => (await bus.queueCounts(deadLetterQueue)).messageCount === 1,
        20000,
      );
      const [message] = await bus.drain(deadLetterQueue);
      assert.equal(message?.properties.messageId, poison.event_id);
      const death = (
        message?.properties.headers?.['x-death'] as Array<Record<string, unknown>> | undefined
      )?.[0];
      assert.equal(death?.reason, 'delivery_limit');
      assert.ok(
        deliveries >= consumer.config.consumer.deliveryLimit,
        `${deliveries} deliveries before the limit`,
      );
    } finally {
      await model.close();
    }
  });
});

describe('a store error on a healthy database while handling sync_end', async () => {
  const BAD = 'cmp-dl-bad';
  const broker = await testBroker();
  const dbUrl = tempSqliteUrl();
  const real = openStore(consumerConfig({ VIRTBUS_DB_URL: dbUrl }).db, createLogger('silent', 'test'));
  // The host's listing fails with an error that says nothing about availability (ping answers).
  const store = new Proxy(real, {
    get(target, key) {
      if (key === 'list')
        return (filter?: { readonly host?: string }) =>
          filter?.host === BAD ? Promise.reject(new Error('test: listing failed')) : target.list(filter);
      const value = Reflect.get(target, key, target) as unknown;
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
  const consumer = await startConsumer({ amqpUrl: broker.url, dbUrl, store });
  after(() => real.close());
  const bus = await Bus.open(broker.url, consumer.config);
  const { deadLetterQueue } = consumer.config.consumer;
  const events = new EventFactory();

  it('dead-letters only that sync_end; the messages around it are applied and acknowledged', async () => {
    const [first, last] = [randomUUID(), randomUUID()];
    await consumer.store.upsert([
      instance({ uuid: first, host: HOST, vm_state: 'active', power_state: 1 }),
      instance({ uuid: last, host: HOST, vm_state: 'active', power_state: 1 }),
    ]);
    const end = events.syncEnd(BAD, [], nowMicros());
    const messages = [events.event(HOST, first, 'paused', 3), end, events.event(HOST, last, 'paused', 3)];
    await bus.publishLifecycle(consumer.config.amqp.exchange, messages);
    const infos = await Promise.all(messages.map((m) => consumer.waitProcessed(m.event_id, 10000)));
    assert.deepEqual(
      infos.map((info) => info.outcome),
      ['synced', 'dead_lettered', 'synced'],
    );
    assert.equal((await row(consumer.store, first)).power_state, 3);
    assert.equal((await row(consumer.store, last)).power_state, 3);
    await waitUntil(
      'the dead letter',
      async () => (await bus.queueCounts(deadLetterQueue)).messageCount === 1,
      5000,
    );
    const [dead] = await bus.drain(deadLetterQueue);
    assert.equal(dead?.properties.messageId, end.event_id);
    assert.match(
      String(dead?.properties.headers?.[REASON_HEADER]),
      /^processing failed: test: listing failed/,
    );
    await waitUntil(
      'nothing left in the queue or in flight',
      async () => (await bus.queueCounts(consumer.config.consumer.queue)).messageCount === 0,
      5000,
    );
    assert.match(await consumer.metrics.registry.metrics(), /^virtbus_db_up 1$/m);
  });
});

describe('a row that keeps losing its compare-and-swap', async () => {
  const broker = await testBroker();
  const dbUrl = tempSqliteUrl();
  const real = openStore(consumerConfig({ VIRTBUS_DB_URL: dbUrl }).db, createLogger('silent', 'test'));
  const contested = randomUUID();
  /** Rounds in which another writer wins the race for `contested` (more than the old limit of 100). */
  let losses = 150;
  const store = new Proxy(real, {
    get(target, key) {
      if (key === 'apply')
        return async (uuids: readonly string[], decide: Decide): Promise<ReadonlySet<string>> => {
          if (losses === 0 || !uuids.includes(contested)) return target.apply(uuids, decide);
          losses -= 1;
          // Decided on the rows as read, but the write loses: nothing is written.
          await target.apply(uuids, (rows) => (decide(rows), []));
          return new Set([contested]);
        };
      const value = Reflect.get(target, key, target) as unknown;
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
  const consumer = await startConsumer({ amqpUrl: broker.url, dbUrl, store });
  after(() => real.close());
  const bus = await Bus.open(broker.url, consumer.config);
  const events = new EventFactory();

  it('is retried with a backoff until its write wins, not dead-lettered', async () => {
    await consumer.store.upsert([
      instance({ uuid: contested, host: HOST, vm_state: 'active', power_state: 1 }),
    ]);
    const paused = events.event(HOST, contested, 'paused', 3);
    await bus.publishLifecycle(consumer.config.amqp.exchange, [paused]);
    assert.equal((await consumer.waitProcessed(paused.event_id, 20000)).outcome, 'synced');
    assert.equal(losses, 0);
    assert.equal((await row(consumer.store, contested)).power_state, 3);
    assert.match(await consumer.metrics.registry.metrics(), /^virtbus_consumer_cas_retries_total 150$/m);
  });
});

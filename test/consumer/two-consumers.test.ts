/**
 * Scale-out: two `virtbus consumer` processes share one queue and one PostgreSQL database and work
 * through 20,000 lifecycle events for 2,000 instances (a tenth of them end with a STOPPED, whose
 * stop command a fake bridge answers). Every row must end in the state of its newest event, and
 * both consumers must have taken part. Prints the throughput.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { startVirtbus, scrape } from '../support/bridge-process';
import { testBroker, testPostgresUrl } from '../support/services';
import { openStore } from '../../src/store/open';
import type { LifecycleMessage } from '../../src/messages/lifecycle';
import type { PowerStateCode } from '../../src/libvirt/constants';
import type { Transition } from '../../src/libvirt/translate';
import { createLogger } from '../../src/util/log';
import { Bus, consumerConfig, EventFactory, instance, waitUntil } from '../support/consumer';
import { after } from 'node:test';

const HOSTS = ['cmp-a1', 'cmp-a2', 'cmp-a3', 'cmp-a4'];
const INSTANCES = 2000;
const EVENTS_PER_INSTANCE = 10;
const STEPS: ReadonlyArray<[Transition, PowerStateCode]> = [
  ['paused', 3],
  ['resumed', 1],
  ['started', 1],
];

function sumMetric(text: string, name: string): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (match?.[1] === name) sum += Number(match[3]);
  }
  return sum;
}

describe('two consumers on one PostgreSQL database', async () => {
  const broker = await testBroker();
  const dbUrl = await testPostgresUrl();
  const env = { VIRTBUS_AMQP_URL: broker.url, VIRTBUS_DB_URL: dbUrl, VIRTBUS_LOG_LEVEL: 'info' };
  const config = consumerConfig(env);
  const store = openStore(config.db, createLogger('silent', 'test'));
  after(() => store.close());
  await store.migrate();

  const events = new EventFactory();
  const uuids = Array.from({ length: INSTANCES }, () => randomUUID());
  const hostOf = (index: number): string => HOSTS[index % HOSTS.length] as string;
  await store.upsert(
    uuids.map((uuid, index) => instance({ uuid, host: hostOf(index), vm_state: 'active', power_state: 1 })),
  );
  const messages: LifecycleMessage[] = [];
  const expected = new Map<string, { vm_state: string; power_state: number; seq: number | null }>();
  for (let step = 0; step < EVENTS_PER_INSTANCE; step += 1) {
    uuids.forEach((uuid, index) => {
      const last = step === EVENTS_PER_INSTANCE - 1;
      const [transition, power] =
        last && index % 10 === 0
          ? (['stopped', 4] as const)
          : (STEPS[(index + step * 7) % STEPS.length] as [Transition, PowerStateCode]);
      const message = events.event(hostOf(index), uuid, transition, power);
      messages.push(message);
      if (last)
        expected.set(uuid, {
          vm_state: transition === 'stopped' ? 'stopped' : 'active',
          power_state: power,
          // A stop result's position (the bridge's finished_at) has no seq.
          seq: transition === 'stopped' ? null : message.seq,
        });
    });
  }
  /** The fake bridge's finished_at for every stop result: after every event. */
  const finishedUs = events.tick(1_000_000);

  const consumers = [startVirtbus('consumer', env), startVirtbus('consumer', env)];
  after(async () => {
    for (const consumer of consumers) {
      const exit = await consumer.stop('SIGTERM');
      assert.deepEqual(exit, { code: 0, signal: null }, `consumer exit; stderr: ${consumer.stderr()}`);
    }
  });
  const urls = await Promise.all(consumers.map((consumer) => consumer.metricsUrl()));
  await waitUntil(
    'both consumers ready',
    async () =>
      (await Promise.all(urls.map((url) => fetch(`${url}/readyz`).then((r) => r.status)))).every(
        (s) => s === 200,
      ),
    30000,
  );
  const bus = await Bus.open(broker.url, config);
  bus.answerCommands(() => ({ outcome: 'stopped', power_state: 4, finishedUs }));

  it(`process ${INSTANCES * EVENTS_PER_INSTANCE} events with the right final states`, async () => {
    const started = Date.now();
    await bus.publishLifecycle(config.amqp.exchange, messages);
    const published = Date.now();
    await waitUntil(
      'every row final',
      async () => {
        const rows = await store.list();
        return rows.every((row) => {
          const want = expected.get(row.uuid);
          return row.task_state === null && row.vm_state === want?.vm_state && row.event_seq === want.seq;
        });
      },
      120000,
      250,
    );
    const done = Date.now();
    const seconds = (done - started) / 1000;
    for (const row of await store.list()) {
      const want = expected.get(row.uuid);
      assert.equal(row.vm_state, want?.vm_state, row.uuid);
      assert.equal(row.power_state, want?.power_state, row.uuid);
      assert.equal(row.task_state, null);
      assert.equal(row.event_seq, want?.seq);
    }
    const stops = [...expected.values()].filter((want) => want.vm_state === 'stopped').length;
    assert.equal(bus.commands.length, stops, 'exactly one stop command per stopping instance');
    assert.equal(new Set(bus.commands.map((command) => command.instance_uuid)).size, stops);
    const handled = await Promise.all(
      urls.map(async (url) => sumMetric(await scrape(url), 'virtbus_consumer_messages_total')),
    );
    assert.ok(
      handled.every((count) => count > 0),
      `both consumers took part: ${handled.join(' + ')}`,
    );
    assert.equal(
      handled.reduce((a, b) => a + b, 0),
      messages.length + stops,
      'every lifecycle message and command result handled exactly once',
    );
    console.log(
      `two consumers: ${messages.length} events (+${stops} stop results) in ${seconds.toFixed(2)} s = ` +
        `${Math.round(messages.length / seconds)} events/s end to end (publishing took ${((published - started) / 1000).toFixed(2)} s); ` +
        `split ${handled.join(' / ')}`,
    );
  });
});

/**
 * Redelivery and reordering cannot move a row backwards: the same lifecycle traffic delivered in
 * order, shuffled, shuffled with every message twice, and in order with the broker connection cut
 * mid-stream (so committed-but-unacknowledged messages are redelivered by RabbitMQ) leaves the same
 * final rows. The stop commands some instances end with are answered by a fake bridge.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import type { PowerStateCode } from '../../src/libvirt/constants';
import type { Transition } from '../../src/libvirt/translate';
import type { LifecycleMessage } from '../../src/messages/lifecycle';
import type { InstanceRow } from '../../src/store/types';
import { testBroker } from '../support/services';
import { Bus, EventFactory, instance, startConsumer, tempSqliteUrl, waitUntil } from '../support/consumer';
import { random } from '../support/random';

const HOST = 'cmp-07';
const INSTANCES = 150;
const EVENTS_PER_INSTANCE = 8;

function shuffle<T>(items: readonly T[], next: () => number): T[] {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i -= 1) {
    const j = Math.floor(next() * (i + 1));
    [copy[i], copy[j]] = [copy[j] as T, copy[i] as T];
  }
  return copy;
}

const STEPS: ReadonlyArray<[Transition, PowerStateCode]> = [
  ['paused', 3],
  ['resumed', 1],
  ['started', 1],
];

interface Traffic {
  readonly uuids: string[];
  readonly messages: LifecycleMessage[];
  readonly expected: Map<string, { vm_state: string; power_state: number }>;
}

/** Per instance a random walk through pause/resume/start; a third of them end with a STOPPED. */
function traffic(): Traffic {
  const next = random(42);
  const events = new EventFactory();
  const uuids = Array.from({ length: INSTANCES }, () => randomUUID());
  const messages: LifecycleMessage[] = [];
  const expected = new Map<string, { vm_state: string; power_state: number }>();
  for (let step = 0; step < EVENTS_PER_INSTANCE; step += 1) {
    uuids.forEach((uuid, index) => {
      const last = step === EVENTS_PER_INSTANCE - 1;
      const [transition, power] =
        last && index % 3 === 0
          ? (['stopped', 4] as const)
          : (STEPS[Math.floor(next() * STEPS.length)] ?? STEPS[0]!);
      messages.push(events.event(HOST, uuid, transition, power));
      if (last)
        expected.set(
          uuid,
          transition === 'stopped'
            ? { vm_state: 'stopped', power_state: 4 }
            : { vm_state: 'active', power_state: power },
        );
    });
  }
  return { uuids, messages, expected };
}

type Final = Pick<
  InstanceRow,
  'vm_state' | 'task_state' | 'power_state' | 'event_at_us' | 'event_boot_id' | 'event_seq' | 'last_action'
>;

describe('redelivery and out-of-order delivery', async () => {
  const broker = await testBroker();
  const { uuids, messages, expected } = traffic();
  const finishedUs = Math.max(...messages.map((m) => Date.parse(m.occurred_at) * 1000)) + 1_000_000;
  const runs = new Map<string, Map<string, Final>>();

  /** Runs one delivery pattern against a fresh queue and database; returns the final rows. */
  async function deliver(
    name: string,
    publish: (bus: Bus, exchange: string, cut: () => void) => Promise<void>,
  ): Promise<Map<string, Final>> {
    const consumer = await startConsumer({
      amqpUrl: broker.url,
      dbUrl: tempSqliteUrl(),
      env: {
        VIRTBUS_CONSUMER_QUEUE: `ordering.${name}`,
        VIRTBUS_CONSUMER_RESULT_QUEUE: `ordering.${name}.results`,
      },
    });
    const bus = await Bus.open(broker.url, consumer.config);
    // The same finished_at in every run (after every event), so the final rows compare equal.
    bus.answerCommands(() => ({ outcome: 'already_stopped', power_state: 4, finishedUs }));
    await consumer.store.upsert(
      uuids.map((uuid) => instance({ uuid, host: HOST, vm_state: 'active', power_state: 1 })),
    );
    await publish(bus, consumer.config.amqp.exchange, () => consumer.amqp.reset('test: cut the connection'));
    await waitUntil(
      `${name}: every row final`,
      async () => {
        const rows = await consumer.store.list({ host: HOST });
        return rows.every((row) => {
          const want = expected.get(row.uuid);
          return (
            row.task_state === null && row.vm_state === want?.vm_state && row.power_state === want.power_state
          );
        });
      },
      30000,
      100,
    );
    await waitUntil(
      'the queue to drain',
      async () => (await bus.queueCounts(`ordering.${name}`)).messageCount === 0,
      10000,
    );
    const finals = new Map<string, Final>();
    for (const row of await consumer.store.list({ host: HOST })) {
      const { vm_state, task_state, power_state, event_at_us, event_boot_id, event_seq, last_action } = row;
      finals.set(row.uuid, {
        vm_state,
        task_state,
        power_state,
        event_at_us,
        event_boot_id,
        event_seq,
        last_action,
      });
    }
    const outcomes: Record<string, number> = {};
    for (const info of consumer.processed) outcomes[info.outcome] = (outcomes[info.outcome] ?? 0) + 1;
    console.log(`ordering/${name}: ${messages.length} events, outcomes ${JSON.stringify(outcomes)}`);
    await consumer.stop();
    await bus.close();
    runs.set(name, finals);
    return finals;
  }

  it('in order: every instance ends in the state of its newest event', async () => {
    const finals = await deliver('in-order', (bus, exchange) => bus.publishLifecycle(exchange, messages));
    for (const uuid of uuids) {
      const final = finals.get(uuid);
      const last = [...messages].reverse().find((m) => m.instance_uuid === uuid);
      if (expected.get(uuid)?.vm_state === 'stopped') {
        // The stop result is the newest position: the bridge's finished_at, without a seq.
        assert.deepEqual(
          [final?.event_at_us, final?.event_seq],
          [finishedUs, null],
          'the stop result recorded',
        );
        assert.equal(final?.last_action, 'stop_completed');
      } else {
        assert.equal(final?.event_seq, last?.seq, 'the newest event is the one recorded');
        assert.equal(final?.last_action, null);
      }
    }
  });

  it('shuffled: the same final rows', async () => {
    const finals = await deliver('shuffled', (bus, exchange) =>
      bus.publishLifecycle(exchange, shuffle(messages, random(7))),
    );
    assert.deepEqual(finals, runs.get('in-order'));
  });

  it('shuffled with every message delivered twice: the same final rows', async () => {
    const twice = shuffle([...messages, ...messages], random(11));
    const finals = await deliver('duplicated', (bus, exchange) => bus.publishLifecycle(exchange, twice));
    assert.deepEqual(finals, runs.get('in-order'));
  });

  it('broker redelivery after a connection cut mid-stream: the same final rows', async () => {
    const finals = await deliver('redelivered', async (bus, exchange, cut) => {
      const half = Math.floor(messages.length / 2);
      await bus.publishLifecycle(exchange, messages.slice(0, half));
      cut();
      await bus.publishLifecycle(exchange, messages.slice(half));
      await new Promise((resolve) => setTimeout(resolve, 50));
      cut();
    });
    assert.deepEqual(finals, runs.get('in-order'));
  });
});

describe('a bridge whose wall clock steps back (NTP)', async () => {
  const broker = await testBroker();
  const consumer = await startConsumer({ amqpUrl: broker.url, dbUrl: tempSqliteUrl() });
  const bus = await Bus.open(broker.url, consumer.config);
  bus.answerCommands(() => 'ignore');
  const exchange = consumer.config.amqp.exchange;

  it('keeps its later events applied: within one process seq orders, not occurred_at', async () => {
    const uuid = randomUUID();
    await consumer.store.upsert([instance({ uuid, host: HOST })]);
    const events = new EventFactory();
    const stepUs = events.tick();
    const paused = events.event(HOST, uuid, 'paused', 3, { occurredUs: stepUs });
    // The clock stepped back five minutes between the two events; seq still rises.
    const resumed = events.event(HOST, uuid, 'resumed', 1, { occurredUs: stepUs - 300_000_000 });
    await bus.publishLifecycle(exchange, [paused, resumed]);
    assert.equal((await consumer.waitProcessed(paused.event_id)).outcome, 'synced');
    assert.equal((await consumer.waitProcessed(resumed.event_id)).outcome, 'synced');
    const row = await consumer.store.get(uuid);
    assert.equal(row?.power_state, 1);
    assert.equal(row?.event_seq, resumed.seq);
    // A restarted bridge (another boot_id) is ordered by its wall clock: older is out of order.
    const restarted = new EventFactory();
    const stale = restarted.event(HOST, uuid, 'paused', 3, { occurredUs: stepUs - 600_000_000 });
    await bus.publishLifecycle(exchange, [stale]);
    assert.equal((await consumer.waitProcessed(stale.event_id)).outcome, 'out_of_order');
    await waitUntil('nothing commanded', () => bus.commandsFor(uuid).length === 0, 1000);
  });
});

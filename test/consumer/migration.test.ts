/**
 * Live-migration following through the real bus, on both stores: the test's bus client plays two
 * bridges (cmp-a, the source, and cmp-b, the destination, each its own process with a boot_id and
 * seq) and publishes the sequences QEMU 7.2 / libvirt 9.0 emit, in delivery orders the two hosts'
 * queues can produce. The row follows the guest once both hosts agree, with one instance.update
 * and no command; one host's word never moves it; a late result from the source after the move
 * is not applied, and a result from another host than the commanded one is dead-lettered.
 */
import { stopResult } from '../support/commands';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { LifecycleEvent } from '../../src/libvirt/constants';
import { libvirtCodes, type Transition } from '../../src/libvirt/translate';
import type { PowerStateCode } from '../../src/libvirt/constants';
import { buildLifecycleMessage, type LifecycleMessage } from '../../src/messages/lifecycle';
import { commandResultRoutingKey } from '../../src/messages/command';
import { REASON_HEADER } from '../../src/consumer/service';
import { isoMicros, nowMicros } from '../../src/util/time';
import { testBroker, testPostgresUrl } from '../support/services';
import {
  Bus,
  instance,
  row,
  startConsumer,
  syncEndMessage,
  tempSqliteUrl,
  waitUntil,
} from '../support/consumer';

const A = 'cmp-a.example.org';
const B = 'cmp-b.example.org';

/** libvirt detail codes (libvirt-domain.h). */
const STARTED_MIGRATED = 1;
const SUSPENDED_MIGRATED = 1;
const RESUMED_MIGRATED = 1;
const STOPPED_MIGRATED = 3;

const EVENT_TYPE: Partial<Record<Transition, number>> = {
  started: LifecycleEvent.STARTED,
  paused: LifecycleEvent.SUSPENDED,
  migration_completed: LifecycleEvent.SUSPENDED,
  resumed: LifecycleEvent.RESUMED,
  stopped: LifecycleEvent.STOPPED,
};

/** One bridge process: real lifecycle messages with libvirt codes, its own boot_id and seq. */
class FakeBridge {
  readonly bootId = randomUUID();
  #seq = 0;
  #lastUs = 0;
  constructor(readonly host: string) {}

  /** The bridge's clock: now (after the rows were written), strictly rising. */
  #occurred(): number {
    this.#lastUs = Math.max(this.#lastUs + 1, nowMicros());
    return this.#lastUs;
  }

  event(uuid: string, transition: Transition, power: PowerStateCode, detail = 0): LifecycleMessage {
    this.#seq += 1;
    const occurred = this.#occurred();
    const type = EVENT_TYPE[transition];
    return buildLifecycleMessage({
      host: this.host,
      instanceUuid: uuid,
      domainName: `instance-${uuid.slice(0, 8)}`,
      transition,
      libvirt:
        transition === 'sync'
          ? { event: 'STATE', detail: 'RUNNING', event_code: -1, detail_code: 1 }
          : type === undefined
            ? null
            : libvirtCodes(0, type, detail),
      powerState: power,
      occurredMicros: occurred,
      publishedMicros: occurred + 100,
      delayedMs: 0,
      seq: this.#seq,
      bootId: this.bootId,
      ...(transition === 'sync'
        ? {
            snapshot: {
              id: randomUUID(),
              reason: 'periodic' as const,
              count: 1,
              taken_at: isoMicros(occurred),
            },
          }
        : {}),
    });
  }

  syncEnd(uuids: readonly string[]): LifecycleMessage {
    this.#seq += 1;
    const occurredUs = this.#occurred();
    return syncEndMessage({
      host: this.host,
      seq: this.#seq,
      bootId: this.bootId,
      occurredUs,
      takenUs: occurredUs - 10,
      uuids,
    });
  }
}

for (const backend of ['sqlite', 'postgres'] as const) {
  describe(`live migration following on ${backend}`, async () => {
    const broker = await testBroker();
    const dbUrl = backend === 'sqlite' ? tempSqliteUrl() : await testPostgresUrl();
    const consumer = await startConsumer({
      amqpUrl: broker.url,
      dbUrl,
      env: { VIRTBUS_STOP_TIMEOUT_MS: '20000' },
    });
    const bus = await Bus.open(broker.url, consumer.config);
    bus.answerCommands(() => 'ignore');
    const exchange = consumer.config.amqp.exchange;

    async function deliver(messages: readonly LifecycleMessage[]): Promise<string[]> {
      const outcomes: string[] = [];
      for (const message of messages) {
        await bus.publishLifecycle(exchange, [message]);
        outcomes.push((await consumer.waitProcessed(message.event_id)).outcome);
      }
      return outcomes;
    }

    for (const order of ['destination first', 'source first', 'interleaved'] as const)
      it(`a pre-copy migration A → B, ${order}: the row follows, one update, no command`, async () => {
        const uuid = randomUUID();
        await consumer.store.upsert([instance({ uuid, host: A })]);
        const a = new FakeBridge(A);
        const b = new FakeBridge(B);
        const source = [
          a.event(uuid, 'paused', 3, SUSPENDED_MIGRATED),
          // A snapshot while the STOPPED is held lists the persistent domain shut off (Nova's 4b).
          a.event(uuid, 'sync', 4),
          a.event(uuid, 'stopped', 4, STOPPED_MIGRATED),
        ];
        const destination = [
          b.event(uuid, 'started', 3, STARTED_MIGRATED),
          b.event(uuid, 'resumed', 1, RESUMED_MIGRATED),
        ];
        const sequence =
          order === 'destination first'
            ? [...destination, ...source]
            : order === 'source first'
              ? [...source, ...destination]
              : [source[0], destination[0], source[1], destination[1], source[2]];
        await deliver(sequence as LifecycleMessage[]);
        // The source's late words after the move are skipped by the host check.
        assert.deepEqual(await deliver([a.event(uuid, 'sync', 4), a.syncEnd([uuid])]), [
          'skipped_host',
          'sync_end',
        ]);
        await sleep(300);
        const moved = await row(consumer.store, uuid);
        assert.deepEqual(
          [moved.host, moved.vm_state, moved.task_state, moved.power_state],
          [B, 'active', null, 1],
        );
        assert.equal(moved.migration, null);
        assert.deepEqual(bus.commandsFor(uuid), [], 'no stop or force_stop to either host');
        const updates = bus.notificationsFor(uuid).map((n) => n.payload['nova_object.data']);
        assert.equal(updates.length, 1, 'one instance.update');
        assert.equal(updates[0]?.host, B);
        assert.equal(updates[0]?.power_state, 'running');
      });

    it("host B's started/resumed migrated for A's guest never moves it", async () => {
      const uuid = randomUUID();
      await consumer.store.upsert([instance({ uuid, host: A })]);
      const a = new FakeBridge(A);
      const evil = new FakeBridge(B);
      const outcomes = await deliver([
        evil.event(uuid, 'started', 1, STARTED_MIGRATED),
        evil.event(uuid, 'resumed', 1, RESUMED_MIGRATED),
        a.event(uuid, 'sync', 1),
        a.syncEnd([uuid]),
      ]);
      assert.deepEqual(outcomes, ['migrating', 'migrating', 'synced', 'sync_end']);
      const kept = await row(consumer.store, uuid);
      assert.deepEqual([kept.host, kept.power_state], [A, 1]);
      assert.deepEqual(bus.notificationsFor(uuid), []);
    });

    it('a migration while both bridges were down converges through their snapshots', async () => {
      const uuid = randomUUID();
      const stays = randomUUID();
      await consumer.store.upsert([instance({ uuid, host: A }), instance({ uuid: stays, host: A })]);
      const a = new FakeBridge(A);
      const b = new FakeBridge(B);
      assert.deepEqual(await deliver([a.syncEnd([stays]), b.event(uuid, 'sync', 1), b.syncEnd([uuid])]), [
        'sync_end',
        'migrated',
        'sync_end',
      ]);
      assert.equal((await row(consumer.store, uuid)).host, B);
      assert.equal((await row(consumer.store, uuid)).power_state, 1);
      assert.equal((await row(consumer.store, stays)).host, A);
      assert.deepEqual(bus.commandsFor(uuid), []);
    });

    it("a stop out to the source is superseded by the move; the source's late result is not applied", async () => {
      const uuid = randomUUID();
      await consumer.store.upsert([instance({ uuid, host: A })]);
      const a = new FakeBridge(A);
      const b = new FakeBridge(B);
      await deliver([a.event(uuid, 'stopped', 4)]);
      await waitUntil('the stop to A', () => bus.commandsFor(uuid).length === 1, 5000);
      const command = bus.commandsFor(uuid)[0];
      assert.ok(command);
      assert.equal(command.host, A);
      assert.equal((await row(consumer.store, uuid)).pending_command_host, A);
      assert.deepEqual(
        await deliver([
          a.event(uuid, 'migration_completed', 3, SUSPENDED_MIGRATED),
          b.event(uuid, 'resumed', 1, RESUMED_MIGRATED),
        ]),
        ['migrating', 'migrated'],
      );
      await bus.sendResult(command, 'already_stopped', 4);
      await waitUntil(
        'the result',
        () => consumer.processed.some((p) => p.messageId === command.command_id),
        5000,
      );
      assert.equal(
        consumer.processed.find((p) => p.messageId === command.command_id)?.outcome,
        'late_result',
      );
      const moved = await row(consumer.store, uuid);
      assert.deepEqual(
        [moved.host, moved.vm_state, moved.task_state, moved.power_state],
        [B, 'active', null, 1],
      );
    });

    it('a result from another host than the commanded one is dead-lettered and changes nothing', async () => {
      const uuid = randomUUID();
      await consumer.store.upsert([instance({ uuid, host: A })]);
      const a = new FakeBridge(A);
      await deliver([a.event(uuid, 'stopped', 4)]);
      await waitUntil('the stop to A', () => bus.commandsFor(uuid).length === 1, 5000);
      const command = bus.commandsFor(uuid)[0];
      assert.ok(command);
      const before = await row(consumer.store, uuid);
      const forged = stopResult({ ...command, host: B });
      const messageId = randomUUID();
      await bus.publishRaw(
        consumer.config.amqp.commandExchange,
        commandResultRoutingKey(B),
        Buffer.from(JSON.stringify(forged)),
        messageId,
      );
      assert.equal((await consumer.waitProcessed(messageId)).outcome, 'dead_lettered');
      const dead = await bus.drain(consumer.config.consumer.deadLetterQueue);
      const mine = dead.find((m) => m.properties.messageId === messageId);
      assert.ok(mine, 'on the dead-letter queue');
      assert.match(
        String(mine.properties.headers?.[REASON_HEADER]),
        /result host cmp-b\.example\.org is not the host/,
      );
      const after = await row(consumer.store, uuid);
      assert.deepEqual(
        [after.vm_state, after.task_state, after.pending_command_id, after.version],
        [before.vm_state, 'powering-off', command.command_id, before.version],
      );
    });
  });
}

/**
 * Stop-command results against the lifecycle events around them, on both stores: a successful
 * result is a position in the row's event order (the bridge's finished_at), so a lifecycle event
 * sampled before the stop but processed after its result (results and events come on different
 * queues) cannot move the row back; and a result applies only while the row is still powering-off
 * (an operator's `virtbus instances set task_state=…` takes the row out of the stop).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { StopCommand } from '../../src/messages/command';
import { applyAssignments } from '../../src/store/input';
import { isoMicros, nowMicros } from '../../src/util/time';
import { testBroker, testPostgresUrl } from '../support/services';
import {
  Bus,
  EventFactory,
  instance,
  row,
  startConsumer,
  tempSqliteUrl,
  waitUntil,
} from '../support/consumer';

const HOST = 'cmp-09.example.org';

for (const backend of ['sqlite', 'postgres'] as const) {
  describe(`stop results on ${backend}`, async () => {
    const broker = await testBroker();
    const dbUrl = backend === 'sqlite' ? tempSqliteUrl() : await testPostgresUrl();
    const consumer = await startConsumer({
      amqpUrl: broker.url,
      dbUrl,
      env: { VIRTBUS_STOP_TIMEOUT_MS: '20000' },
    });
    const bus = await Bus.open(broker.url, consumer.config);
    const events = new EventFactory();
    bus.answerCommands(() => 'ignore');

    it('a RESUMED sampled before the force_stop finished, processed after its result, is out of order', async () => {
      const uuid = randomUUID();
      await consumer.store.upsert([instance({ uuid, host: HOST, vm_state: 'stopped', power_state: 4 })]);
      const startedAt = events.tick();
      const resumedAt = events.tick();
      const finishedAt = events.tick();
      // 4g: stopped + RUNNING → force_stop.
      const started = events.event(HOST, uuid, 'started', 1, { occurredUs: startedAt });
      await bus.publishLifecycle(consumer.config.amqp.exchange, [started]);
      assert.equal((await consumer.waitProcessed(started.event_id)).outcome, 'synced');
      await waitUntil('the force_stop', () => bus.commandsFor(uuid).length === 1, 5000);
      const command = bus.commandsFor(uuid)[0];
      assert.ok(command);
      assert.equal(command.action, 'force_stop');
      await bus.sendResult(command, 'stopped', 4, null, finishedAt);
      await waitUntil('the result', async () => (await row(consumer.store, uuid)).task_state === null, 5000);
      const stopped = await row(consumer.store, uuid);
      assert.deepEqual([stopped.vm_state, stopped.power_state], ['stopped', 4]);
      // Sampled (live RUNNING) before the destroy, delivered after the result.
      const resumed = events.event(HOST, uuid, 'resumed', 1, { occurredUs: resumedAt });
      await bus.publishLifecycle(consumer.config.amqp.exchange, [resumed]);
      const outcome = (await consumer.waitProcessed(resumed.event_id)).outcome;
      await sleep(200);
      assert.equal(bus.commandsFor(uuid).length, 1, 'no second force_stop');
      const after = await row(consumer.store, uuid);
      assert.deepEqual([after.vm_state, after.task_state, after.power_state], ['stopped', null, 4]);
      assert.equal(outcome, 'out_of_order');
      assert.equal(after.version, stopped.version, 'unchanged');
      assert.equal(after.event_at_us, finishedAt, "the result's finished_at is the row's position");
      // An event newer than the result is applied as usual.
      const again = events.event(HOST, uuid, 'started', 1);
      await bus.publishLifecycle(consumer.config.amqp.exchange, [again]);
      assert.equal((await consumer.waitProcessed(again.event_id)).outcome, 'synced');
      await waitUntil('the second force_stop', () => bus.commandsFor(uuid).length === 2, 5000);
    });

    /** An active row with a pending stop (4b): the command, once published. */
    async function pendingStop(uuid: string): Promise<StopCommand> {
      await consumer.store.upsert([instance({ uuid, host: HOST, vm_state: 'active', power_state: 1 })]);
      const stopped = events.event(HOST, uuid, 'stopped', 4);
      await bus.publishLifecycle(consumer.config.amqp.exchange, [stopped]);
      await waitUntil('the stop', () => bus.commandsFor(uuid).length === 1, 5000);
      const command = bus.commandsFor(uuid)[0];
      assert.ok(command);
      assert.equal((await row(consumer.store, uuid)).task_state, 'powering-off');
      return command;
    }

    it('instances set task_state=… forgets the pending stop: its result is late and changes nothing', async () => {
      const uuid = randomUUID();
      const command = await pendingStop(uuid);
      // What `virtbus instances set UUID task_state=rebooting` writes.
      const current = await row(consumer.store, uuid);
      const set = {
        ...applyAssignments(current, ['task_state=rebooting']),
        updated_at: isoMicros(nowMicros()),
      };
      assert.equal(set.pending_command_id, null, 'the pending command is forgotten');
      assert.ok(await consumer.store.update(set));
      await bus.sendResult(command, 'stopped', 4);
      assert.equal((await consumer.waitProcessed(command.command_id)).outcome, 'late_result');
      const after = await row(consumer.store, uuid);
      assert.deepEqual([after.vm_state, after.task_state], ['active', 'rebooting']);
    });

    it('a result while task_state is no longer powering-off is late, even with the command still pending', async () => {
      const uuid = randomUUID();
      const command = await pendingStop(uuid);
      const current = await row(consumer.store, uuid);
      // Another writer moved the task on but left pending_command_id.
      assert.ok(await consumer.store.update({ ...current, task_state: 'rebooting' }));
      await bus.sendResult(command, 'stopped', 4);
      assert.equal((await consumer.waitProcessed(command.command_id)).outcome, 'late_result');
      const after = await row(consumer.store, uuid);
      assert.deepEqual([after.vm_state, after.task_state], ['active', 'rebooting']);
    });
  });
}

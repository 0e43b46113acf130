/**
 * The stop loop's other outcomes and the consumer's other modes, with a fake bridge answering the
 * stop commands: observe mode (record what Nova would do, change only power_state), failed /
 * refused / expired results, the stop timeout and a late result, sync_end's vanished rows, the
 * notification wire format, notifications switched off, and metrics without identifiers.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { isoMicros, nowMicros } from '../../src/util/time';
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

const HOST = 'cmp-03.example.org';
const UUID_IN_TEXT = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/i;

describe('observe mode', async () => {
  const broker = await testBroker();
  const consumer = await startConsumer({
    amqpUrl: broker.url,
    dbUrl: tempSqliteUrl(),
    env: { VIRTBUS_CONSUMER_MODE: 'observe' },
  });
  const bus = await Bus.open(broker.url, consumer.config);
  const events = new EventFactory();

  it('records what Nova would do and changes only power_state', async () => {
    const [active, stopped] = [randomUUID(), randomUUID()];
    await consumer.store.upsert([
      instance({ uuid: active, host: HOST, vm_state: 'active', power_state: 1 }),
      instance({ uuid: stopped, host: HOST, vm_state: 'stopped', power_state: 4 }),
    ]);
    const messages = [events.event(HOST, active, 'stopped', 4), events.event(HOST, stopped, 'started', 1)];
    await bus.publishLifecycle(consumer.config.amqp.exchange, messages);
    await Promise.all(messages.map((m) => consumer.waitProcessed(m.event_id)));
    const a = await row(consumer.store, active);
    assert.deepEqual(
      [a.vm_state, a.task_state, a.power_state, a.last_action],
      ['active', null, 4, 'would_stop'],
    );
    const s = await row(consumer.store, stopped);
    assert.deepEqual(
      [s.vm_state, s.task_state, s.power_state, s.last_action],
      ['stopped', null, 1, 'would_force_stop'],
    );
    await waitUntil('the power_state notifications', () => bus.notifications.length === 2, 5000);
    await sleep(300);
    assert.equal(bus.commands.length, 0, 'no stop command in observe mode');
    assert.equal(bus.notifications.length, 2, 'one power_state notification each, no task_state change');
    const text = await consumer.metrics.registry.metrics();
    assert.match(text, /virtbus_sync_actions_total\{action="would_stop"\} 1/);
    assert.match(text, /virtbus_sync_actions_total\{action="would_force_stop"\} 1/);
    assert.doesNotMatch(text, /action="stop"/);
  });
});

describe('stop results, timeout and sync_end (nova mode)', async () => {
  const broker = await testBroker();
  const consumer = await startConsumer({
    amqpUrl: broker.url,
    dbUrl: tempSqliteUrl(),
    env: { VIRTBUS_STOP_TIMEOUT_MS: '1500' },
  });
  const bus = await Bus.open(broker.url, consumer.config);
  const events = new EventFactory();

  it('failed, refused and expired results clear the task and record why; vm_state stays', async () => {
    const outcomes = ['failed', 'refused', 'expired'] as const;
    const uuids: string[] = outcomes.map(() => randomUUID());
    bus.answerCommands((command) => {
      const index = uuids.indexOf(command.instance_uuid);
      const outcome = outcomes[index];
      return outcome ? { outcome, power_state: 4, error: `${outcome} because of the test` } : 'ignore';
    });
    await consumer.store.upsert(
      uuids.map((uuid) => instance({ uuid, host: HOST, vm_state: 'active', power_state: 1 })),
    );
    await bus.publishLifecycle(
      consumer.config.amqp.exchange,
      uuids.map((uuid) => events.event(HOST, uuid, 'stopped', 4)),
    );
    await waitUntil(
      'every result applied',
      async () =>
        (await Promise.all(uuids.map((uuid) => row(consumer.store, uuid)))).every(
          (r) => r.last_action?.startsWith('stop_') ?? false,
        ),
      10000,
    );
    for (const [index, uuid] of uuids.entries()) {
      const current = await row(consumer.store, uuid);
      const outcome = outcomes[index] as string;
      assert.equal(current.vm_state, 'active');
      assert.equal(current.task_state, null);
      assert.equal(current.power_state, 4);
      assert.equal(current.pending_command_id, null);
      assert.equal(current.last_action, `stop_${outcome}`);
      assert.equal(current.last_error, `${outcome}: ${outcome} because of the test`);
      await waitUntil('three notifications', () => bus.notificationsFor(uuid).length === 3, 5000);
      const notes = bus.notificationsFor(uuid);
      const last = notes[2]?.payload['nova_object.data'].state_update as {
        'nova_object.data': Record<string, unknown>;
      };
      assert.deepEqual(last['nova_object.data'], {
        old_state: 'active',
        state: 'active',
        old_task_state: 'powering-off',
        new_task_state: null,
      });
    }
  });

  it('no result within consumer.stopTimeoutMs: the task is cleared and the timeout recorded; a late result is ignored', async () => {
    const uuid = randomUUID();
    bus.answerCommands(() => 'ignore');
    await consumer.store.upsert([instance({ uuid, host: HOST, vm_state: 'active', power_state: 1 })]);
    const started = Date.now();
    await bus.publishLifecycle(consumer.config.amqp.exchange, [events.event(HOST, uuid, 'stopped', 4)]);
    await waitUntil('the command', () => bus.commandsFor(uuid).length === 1, 5000);
    const command = bus.commandsFor(uuid)[0];
    assert.ok(command);
    assert.ok(Date.parse(command.expires_at) > Date.parse(command.issued_at), 'the command expires');
    assert.equal((await row(consumer.store, uuid)).task_state, 'powering-off');
    await waitUntil('the timeout', async () => (await row(consumer.store, uuid)).task_state === null, 10000);
    assert.ok(Date.now() - started >= 1400, 'not before the timeout');
    const current = await row(consumer.store, uuid);
    assert.equal(current.vm_state, 'active');
    assert.equal(current.last_action, 'stop_timeout');
    assert.match(current.last_error ?? '', /^timeout: no result for stop command .* within 1500 ms/);
    await bus.sendResult(command, 'stopped', 4);
    await waitUntil(
      'the late result',
      () => consumer.processed.some((p) => p.outcome === 'late_result'),
      5000,
    );
    const after = await row(consumer.store, uuid);
    assert.equal(after.vm_state, 'active', 'a late result changes nothing');
    assert.equal(after.version, current.version);
  });

  it('sync_end: rows of the host missing from the snapshot and unchanged since it was taken become NOSTATE', async () => {
    const HOST = 'cmp-05.example.org';
    const ids = {
      listed: randomUUID(),
      vanished: randomUUID(),
      vanishedStopped: randomUUID(),
      otherHost: randomUUID(),
      busy: randomUUID(),
      deleted: randomUUID(),
      changedSince: randomUUID(),
    };
    await consumer.store.upsert([
      instance({ uuid: ids.listed, host: HOST, vm_state: 'active', power_state: 1 }),
      instance({ uuid: ids.vanished, host: HOST, vm_state: 'active', power_state: 1 }),
      instance({ uuid: ids.vanishedStopped, host: HOST, vm_state: 'stopped', power_state: 4 }),
      instance({ uuid: ids.otherHost, host: 'cmp-04', vm_state: 'active', power_state: 1 }),
      instance({ uuid: ids.busy, host: HOST, vm_state: 'active', task_state: 'rebooting', power_state: 1 }),
      instance({ uuid: ids.deleted, host: HOST, vm_state: 'deleted', power_state: 1 }),
    ]);
    await sleep(5);
    const takenUs = nowMicros();
    await sleep(5);
    await consumer.store.upsert([
      instance({ uuid: ids.changedSince, host: HOST, vm_state: 'active', power_state: 1 }),
    ]);
    const end = events.syncEnd(HOST, [ids.listed], takenUs);
    await bus.publishLifecycle(consumer.config.amqp.exchange, [end]);
    assert.equal((await consumer.waitProcessed(end.event_id)).outcome, 'sync_end');
    const power = async (uuid: string): Promise<number> => (await row(consumer.store, uuid)).power_state;
    assert.equal(await power(ids.vanished), 0, 'vanished: NOSTATE');
    assert.equal((await row(consumer.store, ids.vanished)).vm_state, 'active', 'active + NOSTATE: warn only');
    assert.equal(await power(ids.vanishedStopped), 0);
    assert.equal((await row(consumer.store, ids.vanishedStopped)).vm_state, 'stopped');
    assert.equal(await power(ids.listed), 1, 'listed: untouched');
    assert.equal(await power(ids.otherHost), 1, 'another host: untouched');
    assert.equal(await power(ids.busy), 1, 'task in progress: untouched');
    assert.equal(await power(ids.deleted), 1, 'deleted rows are not in the periodic sync');
    assert.equal(await power(ids.changedSince), 1, 'changed since the snapshot: untouched');
    await sleep(200);
    const all: string[] = Object.values(ids);
    assert.equal(bus.commands.filter((c) => all.includes(c.instance_uuid)).length, 0);
    const text = await consumer.metrics.registry.metrics();
    assert.match(text, /virtbus_sync_actions_total\{action="vanished"\} 2/);
  });

  it("sync_end without snapshot.taken_at (the contract's {id, reason, count}): occurred_at is the snapshot time", async () => {
    const HOST = 'cmp-06.example.org';
    const [listed, vanished, changedSince] = [randomUUID(), randomUUID(), randomUUID()];
    await consumer.store.upsert([
      instance({ uuid: listed, host: HOST, vm_state: 'active', power_state: 1 }),
      instance({ uuid: vanished, host: HOST, vm_state: 'active', power_state: 1 }),
    ]);
    await sleep(5);
    const occurredUs = nowMicros();
    await sleep(5);
    await consumer.store.upsert([
      instance({ uuid: changedSince, host: HOST, vm_state: 'active', power_state: 1 }),
    ]);
    const built = events.syncEnd(HOST, [listed], occurredUs);
    const { id, reason, count } = built.snapshot as NonNullable<typeof built.snapshot>;
    const end = { ...built, occurred_at: isoMicros(occurredUs), snapshot: { id, reason, count } };
    await bus.publishRaw(
      consumer.config.amqp.exchange,
      `${HOST.replace(/\./g, '_')}.sync_end`,
      Buffer.from(JSON.stringify(end)),
      end.event_id,
    );
    assert.equal(
      (await consumer.waitProcessed(end.event_id)).outcome,
      'sync_end',
      'applied, not dead-lettered',
    );
    assert.equal((await row(consumer.store, vanished)).power_state, 0, 'vanished: NOSTATE');
    assert.equal((await row(consumer.store, listed)).power_state, 1, 'listed: untouched');
    assert.equal(
      (await row(consumer.store, changedSince)).power_state,
      1,
      'changed since occurred_at: untouched',
    );
  });

  it('exposes the contract metrics, with no UUID or name in any label (the host gauges excepted)', async () => {
    const all = await consumer.metrics.registry.metrics();
    // The one deliberate exception (docs/operations.md#metrics): the hosts view's virtbus_host_*
    // gauges carry the host, in their `host` label and nowhere else; every other line is scanned.
    const hostLines = all.split('\n').filter((line) => line.startsWith('virtbus_host_'));
    for (const line of hostLines)
      assert.doesNotMatch(line.replace(/host="[^"]*"/, 'host=""'), new RegExp(HOST.replace(/\./g, '\\.')));
    const text = all
      .split('\n')
      .filter((line) => !line.startsWith('virtbus_host_'))
      .join('\n');
    for (const name of [
      'virtbus_consumer_queue_depth',
      'virtbus_consumer_messages_total',
      'virtbus_sync_actions_total',
      'virtbus_event_to_sync_seconds_bucket',
      'virtbus_db_up',
      'virtbus_amqp_up',
    ])
      assert.match(text, new RegExp(`^${name}`, 'm'), name);
    assert.match(text, /^virtbus_db_up 1$/m);
    assert.match(text, /^virtbus_amqp_up 1$/m);
    assert.doesNotMatch(text, UUID_IN_TEXT);
    assert.doesNotMatch(text, new RegExp(HOST.replace(/\./g, '\\.')));
  });
});

describe('notifications', async () => {
  const broker = await testBroker();
  const consumer = await startConsumer({ amqpUrl: broker.url, dbUrl: tempSqliteUrl() });
  const bus = await Bus.open(broker.url, consumer.config);
  const events = new EventFactory();

  it('are versioned instance.update in the oslo v2 envelope on nova / versioned_notifications.info', async () => {
    const uuid = randomUUID();
    await consumer.store.upsert([
      instance({
        uuid,
        host: HOST,
        vm_state: 'active',
        power_state: 1,
        launched_at: '2026-08-20T10:00:30.000000Z',
        attrs: { display_name: 'some-server', user_id: 'u1', tenant_id: 't1', flavor: { name: 'm1' } },
      }),
    ]);
    await bus.publishLifecycle(consumer.config.amqp.exchange, [events.event(HOST, uuid, 'paused', 3)]);
    await waitUntil('the notification', () => bus.rawNotifications.length === 1, 5000);
    const raw = bus.rawNotifications[0];
    assert.ok(raw);
    assert.equal(raw.exchange, 'nova');
    assert.equal(raw.routingKey, 'versioned_notifications.info');
    assert.equal(raw.contentType, 'application/json');
    const envelope = JSON.parse(raw.body) as Record<string, unknown>;
    assert.deepEqual(Object.keys(envelope).sort(), ['oslo.message', 'oslo.version']);
    assert.equal(envelope['oslo.version'], '2.0');
    assert.equal(typeof envelope['oslo.message'], 'string', 'oslo.message is a JSON string');
    const inner = JSON.parse(envelope['oslo.message'] as string) as Record<string, unknown>;
    assert.match(
      inner.message_id as string,
      /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
    );
    assert.match(inner._unique_id as string, /^[0-9a-f]{32}$/);
    assert.match(inner.timestamp as string, /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{6})?$/);
    assert.equal(inner.publisher_id, `nova-compute:${HOST}`);
    assert.equal(inner.event_type, 'instance.update');
    assert.equal(inner.priority, 'INFO');
    assert.equal(inner._context_is_admin, true);
    assert.equal(inner._context_read_deleted, 'yes');
    const payload = inner.payload as Record<string, unknown>;
    assert.equal(payload['nova_object.name'], 'InstanceUpdatePayload');
    assert.equal(payload['nova_object.namespace'], 'nova');
    assert.equal(payload['nova_object.version'], '2.1');
    assert.ok(!('nova_object.changes' in payload));
    const data = payload['nova_object.data'] as Record<string, unknown>;
    assert.equal(data.uuid, uuid);
    assert.equal(data.host, HOST);
    assert.equal(data.state, 'active');
    assert.equal(data.power_state, 'paused', 'power_state as its string');
    assert.equal(data.task_state, null);
    assert.equal(data.display_name, 'some-server');
    assert.equal(data.tenant_id, 't1');
    // Nova declares flavor a non-nullable FlavorPayload: the imported dict becomes one (flavor.ts).
    const flavor = data.flavor as Record<string, unknown>;
    assert.equal(flavor['nova_object.name'], 'FlavorPayload');
    assert.equal(flavor['nova_object.version'], '1.4');
    assert.equal((flavor['nova_object.data'] as Record<string, unknown>).name, 'm1');
    assert.equal(data.launched_at, '2026-08-20T10:00:30Z');
    assert.match(data.updated_at as string, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/);
    assert.equal(data.request_id, null);
    assert.equal(data.block_devices, null);
    for (const key of [
      'user_id',
      'reservation_id',
      'display_description',
      'host_name',
      'node',
      'os_type',
      'architecture',
      'availability_zone',
      'image_uuid',
      'key_name',
      'kernel_id',
      'ramdisk_id',
      'created_at',
      'terminated_at',
      'deleted_at',
      'progress',
      'ip_addresses',
      'metadata',
      'locked',
      'auto_disk_config',
      'action_initiator_user',
      'action_initiator_project',
      'locked_reason',
      'shares',
      'audit_period',
      'old_display_name',
      'tags',
    ])
      assert.ok(key in data, `payload has ${key}`);
    const update = data.state_update as Record<string, unknown>;
    assert.equal(update['nova_object.name'], 'InstanceStateUpdatePayload');
    assert.equal(update['nova_object.version'], '1.0');
    assert.deepEqual(update['nova_object.data'], {
      old_state: 'active',
      state: 'active',
      old_task_state: null,
      new_task_state: null,
    });
    const audit = (data.audit_period as Record<string, Record<string, string>>)['nova_object.data'];
    assert.match(audit?.audit_period_beginning ?? '', /^\d{4}-\d{2}-01T00:00:00Z$/);
  });

  it('can be switched off', async () => {
    const quiet = await startConsumer({
      amqpUrl: broker.url,
      dbUrl: tempSqliteUrl(),
      env: {
        VIRTBUS_NOTIFICATIONS: 'false',
        VIRTBUS_CONSUMER_QUEUE: 'quiet',
        VIRTBUS_CONSUMER_RESULT_QUEUE: 'quiet.results',
        VIRTBUS_CONSUMER_BINDINGS: 'quiet-host.*',
      },
    });
    const uuid = randomUUID();
    await quiet.store.upsert([instance({ uuid, host: 'quiet-host', vm_state: 'active', power_state: 1 })]);
    const before = bus.rawNotifications.length;
    const message = events.event('quiet-host', uuid, 'paused', 3);
    await bus.publishLifecycle(consumer.config.amqp.exchange, [message]);
    await quiet.waitProcessed(message.event_id);
    assert.equal((await row(quiet.store, uuid)).power_state, 3);
    await sleep(300);
    // The default consumer (binding #) also saw it: its row does not exist there → no notification.
    assert.equal(bus.rawNotifications.length, before);
    await quiet.stop();
  });
});

describe('broker-side cancellation', async () => {
  const broker = await testBroker();
  const consumer = await startConsumer({ amqpUrl: broker.url, dbUrl: tempSqliteUrl() });
  const bus = await Bus.open(broker.url, consumer.config);
  const events = new EventFactory();

  it('re-declares its queue and consumes again when the broker cancels it (queue deleted)', async () => {
    const uuid = randomUUID();
    await consumer.store.upsert([instance({ uuid, host: HOST, vm_state: 'active', power_state: 1 })]);
    await bus.deleteQueue(consumer.config.consumer.queue);
    await waitUntil('the consumer to notice', () => !consumer.service.ready, 5000);
    await consumer.service.whenReady(15000);
    const message = events.event(HOST, uuid, 'paused', 3);
    await bus.publishLifecycle(consumer.config.amqp.exchange, [message]);
    assert.equal((await consumer.waitProcessed(message.event_id)).outcome, 'synced');
    assert.equal((await row(consumer.store, uuid)).power_state, 3);
  });
});

describe('per-host mode (consumer.hosts)', async () => {
  const broker = await testBroker();
  const mine = 'CMP-07.example.org';
  const consumer = await startConsumer({
    amqpUrl: broker.url,
    dbUrl: tempSqliteUrl(),
    env: {
      VIRTBUS_CONSUMER_HOSTS: mine,
      VIRTBUS_CONSUMER_QUEUE: 'per-host',
      VIRTBUS_CONSUMER_RESULT_QUEUE: 'per-host.results',
    },
  });
  const bus = await Bus.open(broker.url, consumer.config);
  const events = new EventFactory();

  it('binds <host-segment>.* for its hosts and receives nothing else', async () => {
    const [ours, theirs] = [randomUUID(), randomUUID()];
    await consumer.store.upsert([
      instance({ uuid: ours, host: mine, vm_state: 'active', power_state: 1 }),
      instance({ uuid: theirs, host: 'cmp-08', vm_state: 'active', power_state: 1 }),
    ]);
    const other = events.event('cmp-08', theirs, 'paused', 3);
    const own = events.event(mine, ours, 'paused', 3);
    await bus.publishLifecycle(consumer.config.amqp.exchange, [other, own]);
    await consumer.waitProcessed(own.event_id);
    await sleep(300);
    assert.equal((await row(consumer.store, ours)).power_state, 3);
    assert.equal((await row(consumer.store, theirs)).power_state, 1, 'not bound to cmp-08.*');
    assert.ok(!consumer.processed.some((p) => p.messageId === other.event_id));
  });
});

/**
 * The hostile-host suite, application half: the attacks RabbitMQ lets through because they stay
 * inside host A's grant — A publishing under its *own* routing key, as its own verified user, a body
 * that names host B or B's guest — and commands that reach B's bridge from the consumer identity
 * but must still not run (no verified sender, another host's name, far-future expiry, a replay).
 * Real processes: two private libvirtds (hosts A and B), `virtbus bridge` for each logged in as its
 * own broker user, `virtbus consumer` as virtbus-consumer, on the broker loaded with the generated
 * definitions (broker-fixture.ts). Each attack must end dead-lettered with a reason or ignored, and
 * B's guests and rows must not change. The broker-level refusals are in broker-refusals.test.ts.
 *
 * The checks live in the consumer (sender verification, result host, the migration rule) and in the
 * bridge's command executor (user_id, own host, expiry horizon, replay memory): issue 10 items 2–4.
 */
import { stopResult } from '../support/commands';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type ChannelModel, type ConfirmChannel, type ConsumeMessage } from 'amqplib';
import {
  COMMAND_SCHEMA,
  commandQueueName,
  commandResultRoutingKey,
  commandRoutingKey,
  type CommandResult,
  type StopCommand,
} from '../../src/messages/command';
import {
  buildLifecycleMessage,
  lifecycleRoutingKey,
  type LifecycleFields,
} from '../../src/messages/lifecycle';
import type { NativeConnection } from '../../src/native/contract';
import type { LibvirtdSandbox } from '../../src/sandbox';
import { openStore } from '../../src/store/open';
import type { InstanceStore } from '../../src/store/types';
import { createLogger } from '../../src/util/log';
import { isoMicros, nowMicros } from '../../src/util/time';
import { instance, row, waitUntil } from '../support/consumer';
import { serviceMetricsUrl } from '../support/deploy';
import { startVirtbus, type ServiceProcess } from '../support/bridge-process';
import { domainXml, openDriver } from '../support/domains';
import { onTeardown, testLibvirtd } from '../support/services';
import {
  CONSUMER,
  HOST_A,
  HOST_B,
  publishConfirmed,
  startSecureBroker,
  USER_A,
  USER_B,
  VHOST,
  type SecureBroker,
} from './broker-fixture';

const RUNNING = 1; // virDomainState
const REASON_HEADER = 'x-virtbus-reason';

interface Seen {
  readonly key: string;
  readonly messageId: string | undefined;
  readonly headers: Record<string, unknown>;
  readonly body: string;
}

describe('hostile host A against the consumer and host B’s bridge', () => {
  let broker: SecureBroker;
  let libvirtA: LibvirtdSandbox;
  let libvirtB: LibvirtdSandbox;
  let driverA: NativeConnection;
  let driverB: NativeConnection;
  let store: InstanceStore;
  let dbUrl: string;
  let consumer: ServiceProcess;
  let bridgeA: ServiceProcess;
  let bridgeB: ServiceProcess | undefined;
  let asA: ChannelModel;
  let channelA: ConfirmChannel;
  /** Test-only observer (guest, granted on the vhost): copies of dead letters and stop commands. */
  const deadLetters: Seen[] = [];
  const commands: Seen[] = [];
  /** B's guests: the victims. */
  const victim = { uuid: '', name: 'victim-1' };
  const victim2 = { uuid: '', name: 'victim-2' };
  const replayed = { uuid: '', name: 'victim-3' };
  const guestA = { uuid: '', name: 'a-guest' };
  let bootId: string;
  let seq = 0;

  const startBridge = (host: string, user: string, libvirtd: LibvirtdSandbox): ServiceProcess =>
    startVirtbus('bridge', {
      VIRTBUS_HOST: host,
      VIRTBUS_LIBVIRT_URI: libvirtd.uri,
      VIRTBUS_AMQP_URL: broker.url(user),
      // Production mode: the definitions declare everything, the bridge only checks.
      VIRTBUS_BRIDGE_DECLARE_TOPOLOGY: 'false',
      VIRTBUS_STOP_DELAY_MS: '0',
      VIRTBUS_GRACEFUL_SHUTDOWN_TIMEOUT_MS: '1000',
    });

  const ready = async (service: ServiceProcess, what: string): Promise<void> => {
    const base = await serviceMetricsUrl(service);
    await waitUntil(
      `${what} /readyz`,
      async () => (await fetch(`${base}/readyz`).catch(() => undefined))?.status === 200,
      30000,
      100,
    ).catch((error: unknown) => {
      const warnings = service.logs.filter((l) => Number(l.level) >= 40).slice(-10);
      throw new Error(
        `${String(error)}; ${what} stderr: ${service.stderr()}; log: ${JSON.stringify(warnings)}`,
      );
    });
  };

  /** A new running guest on B with its row, so that each attack has its own victim. */
  const freshVictim = async (name: string): Promise<{ uuid: string; name: string }> => {
    const ref = await driverB.defineXML(domainXml(name));
    await store.upsert([instance({ uuid: ref.uuid, host: HOST_B })]);
    await driverB.start(ref.uuid);
    await drained();
    await waitUntil(`${name} synced`, async () => (await row(store, ref.uuid)).power_state === 1, 20000);
    return { uuid: ref.uuid, name };
  };

  /** Every message published so far was taken and settled by the consumer and the bridges. */
  const drained = async (): Promise<void> => {
    const watched = new Set([
      broker.config.consumer.queue,
      broker.config.consumer.resultQueue,
      commandQueueName(HOST_A),
      ...(bridgeB ? [commandQueueName(HOST_B)] : []),
    ]);
    await waitUntil(
      'the consumer and bridge queues to be empty',
      async () => (await broker.queues()).every((q) => !watched.has(q.name) || q.messages === 0),
      30000,
      100,
    );
  };

  const lifecycle = (
    fields: Partial<LifecycleFields> & Pick<LifecycleFields, 'host' | 'transition'>,
  ): string =>
    JSON.stringify(
      buildLifecycleMessage({
        instanceUuid: null,
        domainName: null,
        libvirt: null,
        powerState: null,
        occurredMicros: nowMicros(),
        publishedMicros: nowMicros(),
        delayedMs: 0,
        seq: (seq += 1),
        bootId,
        ...fields,
      }),
    );

  /** Publishes as host A (its own user and user_id, under its own routing key) and returns the message id. */
  const publishAsA = async (key: string, body: string | Buffer): Promise<string> => {
    const messageId = randomUUID();
    await publishConfirmed(channelA, broker.config.amqp.exchange, key, body, {
      userId: USER_A,
      messageId,
      contentType: 'application/json',
      appId: 'virtbus',
      type: 'virtbus.lifecycle.v1',
    });
    return messageId;
  };

  const deadLettered = async (messageId: string, what: string): Promise<Seen> => {
    await waitUntil(
      `${what} in the dead-letter queue`,
      () => deadLetters.some((m) => m.messageId === messageId),
      20000,
      50,
    );
    const found = deadLetters.find((m) => m.messageId === messageId) as Seen;
    const reason = found.headers[REASON_HEADER];
    assert.ok(typeof reason === 'string' && reason.length > 0, `${what}: dead-lettered with a reason`);
    return found;
  };

  const assertUntouched = async (
    uuid: string,
    host: string,
    driver: NativeConnection,
    what: string,
  ): Promise<void> => {
    const current = await row(store, uuid);
    assert.equal(current.host, host, `${what}: the row's host`);
    assert.equal(current.vm_state, 'active', `${what}: vm_state`);
    assert.equal(current.power_state, 1, `${what}: power_state`);
    assert.equal(current.task_state, null, `${what}: no task`);
    assert.equal(current.pending_command_id, null, `${what}: no command pending`);
    assert.equal((await driver.domainState(uuid)).state, RUNNING, `${what}: the guest still runs`);
    assert.ok(!commands.some((c) => c.body.includes(uuid)), `${what}: no stop command was sent for ${uuid}`);
  };

  before(async () => {
    [broker, libvirtA, libvirtB] = await Promise.all([startSecureBroker(), testLibvirtd(), testLibvirtd()]);
    [driverA, driverB] = await Promise.all([openDriver(libvirtA.uri), openDriver(libvirtB.uri)]);
    onTeardown(() => Promise.all([driverA.close(), driverB.close()]));
    for (const [driver, guest] of [
      [driverB, victim],
      [driverB, victim2],
      [driverB, replayed],
      [driverA, guestA],
    ] as const) {
      const ref = await driver.defineXML(domainXml(guest.name));
      await driver.start(ref.uuid);
      guest.uuid = ref.uuid;
    }
    const scratch = mkdtempSync(join(tmpdir(), 'virtbus-hostile-db-'));
    onTeardown(() => Promise.resolve(rmSync(scratch, { recursive: true, force: true })));
    dbUrl = `sqlite:${join(scratch, 'instances.db')}`;
    store = openStore(
      { url: dbUrl, poolSize: 1, sqliteSynchronous: 'full', busyTimeoutMs: 5000 },
      createLogger('silent', 'test'),
    );
    onTeardown(() => store.close());
    await store.upsert([
      instance({ uuid: victim.uuid, host: HOST_B }),
      instance({ uuid: victim2.uuid, host: HOST_B }),
      instance({ uuid: guestA.uuid, host: HOST_A }),
    ]);

    // The test's own eyes on the bus (not part of the deployment): guest, granted on the vhost.
    await broker.node.ctl('set_permissions', '-p', VHOST, 'guest', '.*', '.*', '.*');
    const watcher = await connect(`amqp://guest:guest@127.0.0.1:${broker.node.port}/${VHOST}`);
    onTeardown(() => watcher.close().catch(() => undefined));
    const watch = await watcher.createChannel();
    const { queue } = await watch.assertQueue('', { exclusive: true });
    await watch.bindQueue(queue, broker.config.consumer.deadLetterExchange, '#');
    await watch.bindQueue(queue, broker.config.amqp.commandExchange, '*.stop');
    await watch.consume(
      queue,
      (message: ConsumeMessage | null) => {
        if (!message) return;
        const seen: Seen = {
          key: message.fields.routingKey,
          messageId: message.properties.messageId as string | undefined,
          headers: message.properties.headers ?? {},
          body: message.content.toString('utf8'),
        };
        (message.fields.exchange === broker.config.amqp.commandExchange ? commands : deadLetters).push(seen);
      },
      { noAck: true },
    );

    consumer = startVirtbus('consumer', {
      VIRTBUS_AMQP_URL: broker.url(CONSUMER),
      VIRTBUS_DB_URL: dbUrl,
      VIRTBUS_STOP_TIMEOUT_MS: '60000',
    });
    await consumer.waitForLog('consuming', (line) => line.msg === 'consuming', 30000);
    bridgeA = startBridge(HOST_A, USER_A, libvirtA);
    bridgeB = startBridge(HOST_B, USER_B, libvirtB);
    await Promise.all([ready(bridgeA, 'bridge A'), ready(bridgeB, 'bridge B'), ready(consumer, 'consumer')]);
    await drained();

    asA = await connect(broker.url(USER_A));
    channelA = await asA.createConfirmChannel();
    bootId = randomUUID();
  });

  after(async () => {
    await asA?.close().catch(() => undefined);
    const exits = await Promise.all([bridgeA?.stop(), bridgeB?.stop(), consumer?.stop()]);
    for (const exit of exits) if (exit) assert.deepEqual(exit, { code: 0, signal: null }, 'clean exit');
  });

  it('the real bridges and the consumer run as their own broker users, and the start snapshots left every row as it is', async () => {
    for (const guest of [victim, victim2]) await assertUntouched(guest.uuid, HOST_B, driverB, guest.name);
    await assertUntouched(guestA.uuid, HOST_A, driverA, guestA.name);
    assert.equal((await driverB.domainState(replayed.uuid)).state, RUNNING, 'the row-less guest still runs');
    assert.deepEqual(deadLetters, [], 'nothing dead-lettered from the genuine processes');
  });

  it("A's snapshot naming host B (B's running guest reported shut down, minutes ahead) is dead-lettered: no stop, no row change", async () => {
    const ahead = nowMicros() + 5 * 60e6;
    const snapshot = { id: randomUUID(), reason: 'periodic' as const, count: 1, taken_at: isoMicros(ahead) };
    const sync = await publishAsA(
      lifecycleRoutingKey(HOST_A, 'sync'),
      lifecycle({
        host: HOST_B,
        transition: 'sync',
        instanceUuid: victim.uuid,
        domainName: victim.name,
        powerState: 4,
        occurredMicros: ahead,
        snapshot,
      }),
    );
    const end = await publishAsA(
      lifecycleRoutingKey(HOST_A, 'sync_end'),
      lifecycle({ host: HOST_B, transition: 'sync_end', occurredMicros: ahead, snapshot, instanceUuids: [] }),
    );
    await deadLettered(sync, "A's sync naming B");
    await deadLettered(end, "A's sync_end naming B with no guests");
    await drained();
    for (const guest of [victim, victim2]) await assertUntouched(guest.uuid, HOST_B, driverB, guest.name);
  });

  it("A's lifecycle event for B's guest under A's own name does not change B's row (stopped, crashed)", async () => {
    const victim = await freshVictim('victim-own-name');
    for (const [transition, powerState] of [
      ['stopped', 4],
      ['crashed', 6],
    ] as const) {
      await publishAsA(
        lifecycleRoutingKey(HOST_A, transition),
        lifecycle({
          host: HOST_A,
          transition,
          instanceUuid: victim.uuid,
          domainName: victim.name,
          powerState,
          occurredMicros: nowMicros() + 60e6,
        }),
      );
    }
    await drained();
    await assertUntouched(victim.uuid, HOST_B, driverB, 'B’s guest reported off by A');
  });

  it("A claiming B's guest through a migrated start does not move the row (the migration rule needs B's word)", async () => {
    const victim = await freshVictim('victim-migrated-claim');
    await publishAsA(
      lifecycleRoutingKey(HOST_A, 'started'),
      lifecycle({
        host: HOST_A,
        transition: 'started',
        instanceUuid: victim.uuid,
        domainName: victim.name,
        libvirt: { event: 'STARTED', detail: 'MIGRATED', event_code: 2, detail_code: 1 },
        powerState: 1,
        occurredMicros: nowMicros(),
      }),
    );
    await publishAsA(
      lifecycleRoutingKey(HOST_A, 'resumed'),
      lifecycle({
        host: HOST_A,
        transition: 'resumed',
        instanceUuid: victim.uuid,
        domainName: victim.name,
        libvirt: { event: 'RESUMED', detail: 'MIGRATED', event_code: 4, detail_code: 1 },
        powerState: 1,
        occurredMicros: nowMicros(),
      }),
    );
    await drained();
    await assertUntouched(victim.uuid, HOST_B, driverB, 'B’s guest claimed by A');
  });

  it('malformed, deeply nested and oversized-list bodies under A’s own key are dead-lettered with a reason; the consumer keeps working', async () => {
    const key = lifecycleRoutingKey(HOST_A, 'started');
    const bodies: Array<[string, string | Buffer]> = [
      ['not JSON', 'this is not json {'],
      ['binary garbage', Buffer.from([0xff, 0xfe, 0x00, 0x7b, 0x22])],
      ['a JSON array', '[1,2,3]'],
      ['deeply nested arrays', `${'['.repeat(400_000)}${']'.repeat(400_000)}`],
      ['deeply nested objects', `${'{"a":'.repeat(150_000)}1${'}'.repeat(150_000)}`],
      ['an unknown schema', JSON.stringify({ schema: 'virtbus.lifecycle/99', host: HOST_A })],
      [
        // More entries than the consumer's snapshot bound, cheap enough to fit under max_message_size:
        // a list whose cost (a scan per entry) is the attack.
        'a sync_end listing far too many entries',
        lifecycle({
          host: HOST_A,
          transition: 'sync_end',
          snapshot: { id: randomUUID(), reason: 'periodic', count: 0, taken_at: isoMicros(nowMicros()) },
          instanceUuids: Array.from({ length: 150_000 }, () => '0'),
        }),
      ],
      [
        'a non-UUID instance',
        lifecycle({ host: HOST_A, transition: 'started', instanceUuid: '../../etc/passwd', powerState: 1 }),
      ],
    ];
    const published: Array<[string, string]> = [];
    for (const [what, body] of bodies) published.push([what, await publishAsA(key, body)]);
    await drained();
    const missing = published
      .filter(([, id]) => !deadLetters.some((m) => m.messageId === id))
      .map(([what]) => what);
    assert.deepEqual(missing, [], 'every hostile body is dead-lettered');
    for (const [what, id] of published) await deadLettered(id, what);
    assert.equal(consumer.child.exitCode, null, 'the consumer is still running');
    // Still consuming: a genuine event from A's real bridge is applied.
    await driverA.suspend(guestA.uuid);
    await waitUntil(
      'A’s paused guest in its row',
      async () => (await row(store, guestA.uuid)).power_state === 3,
      20000,
    );
    await driverA.resume(guestA.uuid);
    await waitUntil(
      'A’s resumed guest in its row',
      async () => (await row(store, guestA.uuid)).power_state === 1,
      20000,
    );
  });

  /** Publishes a command to B's queue as the consumer identity (or without user_id) and waits for B to settle it. */
  const commandB = async (command: StopCommand, options: { userId?: string } = {}): Promise<void> => {
    const model = await connect(broker.url(CONSUMER));
    try {
      const channel = await model.createConfirmChannel();
      await publishConfirmed(
        channel,
        broker.config.amqp.commandExchange,
        commandRoutingKey(HOST_B),
        JSON.stringify(command),
        {
          messageId: command.command_id,
          contentType: 'application/json',
          ...(options.userId ? { userId: options.userId } : {}),
        },
      );
    } finally {
      await model.close().catch(() => undefined);
    }
    await drained();
  };
  const stopCommand = (uuid: string, fields: Partial<StopCommand> = {}): StopCommand => ({
    schema: COMMAND_SCHEMA,
    command_id: randomUUID(),
    action: 'force_stop',
    host: HOST_B,
    instance_uuid: uuid,
    reason: 'hostile-host suite',
    issued_at: new Date().toISOString(),
    expires_at: new Date(Date.now() + 60_000).toISOString(),
    ...fields,
  });

  it('B does not execute a force_stop without a verified sender (no user_id)', async () => {
    const target = await freshVictim('victim-unverified');
    await commandB(stopCommand(target.uuid));
    assert.equal((await driverB.domainState(target.uuid)).state, RUNNING);
  });

  it('B does not execute a force_stop naming another host', async () => {
    const target = await freshVictim('victim-wrong-host');
    await commandB(stopCommand(target.uuid, { host: HOST_A }), { userId: CONSUMER });
    assert.equal((await driverB.domainState(target.uuid)).state, RUNNING);
  });

  it('B does not execute a force_stop that expires far in the future', async () => {
    const target = await freshVictim('victim-far-future');
    await commandB(
      stopCommand(target.uuid, { expires_at: new Date(Date.now() + 365 * 86400e3).toISOString() }),
      { userId: CONSUMER },
    );
    assert.equal((await driverB.domainState(target.uuid)).state, RUNNING);
  });

  // The replayed guest has no row: with one, the consumer's own Nova sync would (rightly) stop the
  // guest the genuine command shut off and force-stop it once restarted, which is not a replay.
  it('B does not execute a replayed command a second time', async () => {
    const genuine = stopCommand(replayed.uuid);
    await commandB(genuine, { userId: CONSUMER });
    assert.notEqual((await driverB.domainState(replayed.uuid)).state, RUNNING, 'the genuine command ran');
    await driverB.start(replayed.uuid); // the operator starts it again
    await commandB(genuine, { userId: CONSUMER });
    assert.equal((await driverB.domainState(replayed.uuid)).state, RUNNING, 'the replay did not run');
  });

  it("A cannot answer B's pending stop command: the row keeps waiting for B", async () => {
    const pendingVictim = await freshVictim('victim-pending');
    // B's bridge is away; a genuine report from B (B's own user) makes the consumer send B a stop.
    const exit = await bridgeB?.stop();
    assert.deepEqual(exit, { code: 0, signal: null });
    bridgeB = undefined;
    const asB = await connect(broker.url(USER_B));
    try {
      const channelB = await asB.createConfirmChannel();
      await publishConfirmed(
        channelB,
        broker.config.amqp.exchange,
        lifecycleRoutingKey(HOST_B, 'stopped'),
        lifecycle({
          host: HOST_B,
          transition: 'stopped',
          instanceUuid: pendingVictim.uuid,
          domainName: pendingVictim.name,
          libvirt: { event: 'STOPPED', detail: 'SHUTDOWN', event_code: 5, detail_code: 0 },
          powerState: 4,
          bootId: randomUUID(),
        }),
        { userId: USER_B, messageId: randomUUID(), contentType: 'application/json' },
      );
    } finally {
      await asB.close().catch(() => undefined);
    }
    await waitUntil(
      'the stop command pending for B',
      async () => (await row(store, pendingVictim.uuid)).pending_command_id !== null,
      20000,
    );
    const pending = await row(store, pendingVictim.uuid);
    const forged = (host: string): CommandResult =>
      stopResult(
        {
          command_id: pending.pending_command_id as string,
          action: pending.pending_action === 'force_stop' ? 'force_stop' : 'stop',
          host,
          instance_uuid: pendingVictim.uuid,
        },
        { method: 'destroy' },
      );
    const ids: string[] = [];
    for (const host of [HOST_B, HOST_A]) {
      const messageId = randomUUID();
      ids.push(messageId);
      await publishConfirmed(
        channelA,
        broker.config.amqp.commandExchange,
        commandResultRoutingKey(HOST_A),
        JSON.stringify(forged(host)),
        {
          userId: USER_A,
          messageId,
          contentType: 'application/json',
        },
      );
    }
    for (const id of ids) await deadLettered(id, "A's result for B's command");
    await drained();
    const after = await row(store, pendingVictim.uuid);
    assert.equal(after.vm_state, 'active', 'not marked stopped on A’s word');
    assert.equal(after.pending_command_id, pending.pending_command_id, 'still waiting for B');
    assert.equal(after.last_action, pending.last_action);
  });
});

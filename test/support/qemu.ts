/**
 * The end-to-end rig of the real-hypervisor tests (test/qemu): one sandboxed qemu host with real TCG
 * guests, the real `virtbus bridge` and `virtbus consumer` processes (nova mode, SQLite), a fresh
 * RabbitMQ vhost, and an observer that records every lifecycle message, stop command, command result
 * and instance.update notification so a test can assert the whole chain.
 *
 * Guests are created TRANSIENT, booted in parallel, and made persistent once running
 * (guest.makePersistent()): a persistent guest defined before it runs would be in the bridge's start
 * snapshot as shut off, and Nova's sync would stop an active row for it. Each guest has a row
 * (vm_state active, power_state 0) seeded before the bridge starts; the start snapshot does not list
 * the guests, so the rows stay NOSTATE (Nova only warns) until the guests' STARTED events arrive.
 */
import { connect, type ChannelModel } from 'amqplib';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  startQemuHost,
  waitUntil,
  type QemuGuest,
  type QemuGuestOptions,
  type QemuHost,
} from '../../src/sandbox';
import { startVirtbus, type ServiceProcess } from '../../src/sandbox/virtbus-process';
import { openStore } from '../../src/store/open';
import type { InstanceRow, InstanceStore } from '../../src/store/types';
import { createLogger } from '../../src/util/log';
import { commandRoutingKey, type CommandResult, type StopCommand } from '../../src/messages/command';
import type { LifecycleMessage } from '../../src/messages/lifecycle';
import { decodeNotification, type InstanceUpdateMessage } from '../../src/notify/instance-update';
import { instance, tempSqliteUrl } from './consumer';
import { onTeardown, testBroker } from './services';

export interface QemuRigOptions {
  /** Sandbox name; the bridge's VIRTBUS_HOST is `<name>.qemu.test`. */
  readonly name: string;
  /** Guests to create and boot (all in parallel); `persistent` is ignored (always made persistent). */
  readonly guests: readonly QemuGuestOptions[];
  /** VIRTBUS_STOP_DELAY_MS: longer than QEMU's ~2 s SHUTDOWN → STOPPED gap. */
  readonly stopDelayMs: number;
  /** VIRTBUS_RESYNC_INTERVAL in seconds (0: only the start snapshot). */
  readonly resyncSeconds: number;
  /** VIRTBUS_GRACEFUL_SHUTDOWN_TIMEOUT_MS of the bridge's stop commands. */
  readonly gracefulTimeoutMs: number;
}

export interface QemuRig {
  readonly hostName: string;
  readonly host: QemuHost;
  readonly store: InstanceStore;
  readonly bridge: ServiceProcess;
  readonly consumer: ServiceProcess;
  /** Every lifecycle message (sync and sync_end included), in arrival order. */
  readonly messages: LifecycleMessage[];
  /** Date.now() at which messages[i] arrived at the observer. */
  readonly arrivals: number[];
  readonly commands: StopCommand[];
  readonly results: CommandResult[];
  readonly notifications: InstanceUpdateMessage[];
  guest(name: string): QemuGuest;
  /** The non-snapshot transitions published for this domain, in order. */
  transitions(uuid: string): string[];
  /** `sync` messages about this domain. */
  snapshots(uuid: string): LifecycleMessage[];
  commandsFor(uuid: string): StopCommand[];
  resultsFor(uuid: string): CommandResult[];
  notificationsFor(uuid: string): InstanceUpdateMessage[];
  /** Waits for the nth (default first) message with this transition for the domain. */
  waitTransition(
    uuid: string,
    transition: string,
    timeoutMs?: number,
    nth?: number,
  ): Promise<LifecycleMessage>;
  row(uuid: string): Promise<InstanceRow>;
  waitRow(
    uuid: string,
    what: string,
    predicate: (row: InstanceRow) => boolean,
    timeoutMs?: number,
  ): Promise<InstanceRow>;
  /** Publishes a stop command straight to this host's bridge, as the consumer would. */
  sendCommand(command: StopCommand): Promise<void>;
  /** A readable trace of what the bus carried for a domain (for test diagnostics). */
  trace(uuid: string): string;
}

export async function startQemuRig(options: QemuRigOptions): Promise<QemuRig> {
  const hostName = `${options.name}.qemu.test`;
  const [host, broker] = await Promise.all([startQemuHost({ name: options.name }), testBroker()]);
  onTeardown(() => host.dispose());
  const guests = new Map<string, QemuGuest>();
  for (const guestOptions of options.guests) {
    guests.set(guestOptions.name, await host.defineGuest({ ...guestOptions, persistent: false }));
  }

  const dbUrl = tempSqliteUrl();
  const store = openStore(
    { url: dbUrl, poolSize: 1, sqliteSynchronous: 'full', busyTimeoutMs: 5000 },
    createLogger('silent', 'test'),
  );
  onTeardown(() => store.close());
  await store.migrate();
  await store.upsert(
    [...guests.values()].map((guest) =>
      instance({ uuid: guest.uuid, host: hostName, vm_state: 'active', power_state: 0 }),
    ),
  );

  const consumer = startVirtbus('consumer', {
    VIRTBUS_AMQP_URL: broker.url,
    VIRTBUS_DB_URL: dbUrl,
    VIRTBUS_CONSUMER_MODE: 'nova',
    VIRTBUS_STOP_TIMEOUT_MS: '60000',
  });
  onTeardown(() => consumer.stop('SIGTERM'));
  await consumer
    .waitForLog('consuming', (line) => line.msg === 'consuming', 60000)
    .catch((error: unknown) => {
      throw new Error(`${String(error)}\nconsumer log: ${JSON.stringify(consumer.logs.slice(-10))}`);
    });

  // The observer binds before the bridge publishes anything, to the exchanges the consumer declared
  // (its arguments, e.g. the alternate exchange, are the consumer's to choose).
  const messages: LifecycleMessage[] = [];
  const arrivals: number[] = [];
  const commands: StopCommand[] = [];
  const results: CommandResult[] = [];
  const notifications: InstanceUpdateMessage[] = [];
  const model: ChannelModel = await connect(broker.url);
  const channel = await model.createChannel();
  const publisher = await model.createConfirmChannel();
  const observe = async (
    exchange: string,
    declare: boolean,
    patterns: string[],
    sink: (body: Buffer, key: string) => void,
  ): Promise<void> => {
    if (declare) await channel.assertExchange(exchange, 'topic', { durable: false });
    else await channel.checkExchange(exchange);
    const { queue } = await channel.assertQueue('', { exclusive: true });
    for (const pattern of patterns) await channel.bindQueue(queue, exchange, pattern);
    await channel.consume(queue, (message) => message && sink(message.content, message.fields.routingKey), {
      noAck: true,
    });
  };
  await observe('virtbus.lifecycle', false, ['#'], (body) => {
    messages.push(JSON.parse(body.toString('utf8')) as LifecycleMessage);
    arrivals.push(Date.now());
  });
  await observe('virtbus.commands', false, ['*.stop', '*.stop_result'], (body, key) => {
    const parsed = JSON.parse(body.toString('utf8')) as StopCommand | CommandResult;
    if (key.endsWith('.stop_result')) results.push(parsed as CommandResult);
    else commands.push(parsed as StopCommand);
  });
  // The notifier declares its exchange at its first notification, non-durable by default.
  await observe('nova', true, ['versioned_notifications.info'], (body) =>
    notifications.push(decodeNotification(body)),
  );
  onTeardown(() => model.close().catch(() => undefined));

  const bridge = startVirtbus('bridge', {
    VIRTBUS_HOST: hostName,
    VIRTBUS_LIBVIRT_URI: host.uri,
    VIRTBUS_AMQP_URL: broker.url,
    VIRTBUS_STOP_DELAY_MS: String(options.stopDelayMs),
    VIRTBUS_RESYNC_INTERVAL: String(options.resyncSeconds),
    VIRTBUS_GRACEFUL_SHUTDOWN_TIMEOUT_MS: String(options.gracefulTimeoutMs),
  });
  onTeardown(() => bridge.stop('SIGTERM'));
  await waitUntil(
    'the bridge start snapshot (sync_end)',
    () => messages.some((m) => m.transition === 'sync_end'),
    30000,
  ).catch((error: unknown) => {
    const tail = bridge.logs.slice(-8).map((line) => JSON.stringify(line));
    throw new Error(`${String(error)}\nbridge stderr: ${bridge.stderr()}\nbridge log:\n${tail.join('\n')}`);
  });
  // The start snapshot's sync_end must be applied before the guests exist, or a row could be judged
  // against a snapshot that predates its guest.
  await waitUntil(
    'the start snapshot to be applied to the rows',
    async () => {
      for (const guest of guests.values()) if ((await store.get(guest.uuid))?.power_state !== 0) return false;
      return true;
    },
    10000,
  );
  await sleep(500);

  // Boot every guest at once (TCG: ~8–11 s each, longer when they share the cores).
  await Promise.all(
    [...guests.values()].map(async (guest) => {
      await guest.start();
      await guest.makePersistent();
    }),
  );
  await Promise.all([...guests.values()].map((guest) => guest.waitBooted(240000)));

  const isEvent = (m: LifecycleMessage, uuid: string): boolean =>
    m.instance_uuid === uuid && m.transition !== 'sync' && m.transition !== 'sync_end';
  const rig: QemuRig = {
    hostName,
    host,
    store,
    bridge,
    consumer,
    messages,
    arrivals,
    commands,
    results,
    notifications,
    guest: (name) => {
      const found = guests.get(name);
      if (!found) throw new Error(`no guest ${name} in this rig`);
      return found;
    },
    transitions: (uuid) => messages.filter((m) => isEvent(m, uuid)).map((m) => m.transition),
    snapshots: (uuid) => messages.filter((m) => m.instance_uuid === uuid && m.transition === 'sync'),
    commandsFor: (uuid) => commands.filter((c) => c.instance_uuid === uuid),
    resultsFor: (uuid) => results.filter((r) => r.instance_uuid === uuid),
    notificationsFor: (uuid) => notifications.filter((n) => n.payload['nova_object.data'].uuid === uuid),
    waitTransition: async (uuid, transition, timeoutMs = 30000, nth = 1) => {
      const matching = (): LifecycleMessage[] =>
        messages.filter((m) => isEvent(m, uuid) && m.transition === transition);
      await waitUntil(
        `'${transition}' #${nth} for ${uuid} (seen: ${rig.transitions(uuid).join(', ')})`,
        () => matching().length >= nth,
        timeoutMs,
      );
      return matching()[nth - 1] as LifecycleMessage;
    },
    row: async (uuid) => {
      const found = await store.get(uuid);
      if (!found) throw new Error(`no row ${uuid}`);
      return found;
    },
    waitRow: async (uuid, what, predicate, timeoutMs = 30000) => {
      await waitUntil(`row ${uuid}: ${what}`, async () => predicate(await rig.row(uuid)), timeoutMs, 100);
      return rig.row(uuid);
    },
    sendCommand: async (command) => {
      publisher.publish(
        'virtbus.commands',
        commandRoutingKey(command.host),
        Buffer.from(JSON.stringify(command)),
        {
          persistent: true,
          contentType: 'application/json',
          messageId: command.command_id,
          userId: 'guest', // the sandbox bridge trusts the guest user's commands (broker-verified user_id)
        },
      );
      await publisher.waitForConfirms();
    },
    trace: (uuid) =>
      messages
        .filter((m) => m.instance_uuid === uuid)
        .map((m) => {
          const codes = m.libvirt ? `${m.libvirt.event}/${m.libvirt.detail}` : '';
          return `${m.occurred_at.slice(11, 23)} ${m.transition}(${codes}) power=${String(m.power_state)} delayed=${m.delayed_ms}`;
        })
        .join('\n'),
  };
  return rig;
}

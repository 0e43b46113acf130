/**
 * The two-host rig of the live-migration tests (test/qemu/migration.test.ts): two private qemu
 * libvirtds (hosts A and B), one real `virtbus bridge` per host, one real `virtbus consumer` in nova
 * mode on SQLite, and a bus observer that records every lifecycle message, stop command, command
 * result and instance.update notification with the time it arrived.
 *
 * Why each piece:
 * - Each bridge reaches the broker through its own holdable TCP proxy: holding it keeps that host's
 *   messages (with their original occurred_at) from the bus while the other host's flow, which is a
 *   real reordering — SIGSTOPping the bridge would also delay libvirt's callbacks, and with them the
 *   occurred_at stamps, so the late messages would not be out of order by time.
 * - Bridges and the consumer are real processes that the tests stop and start again (a bridge down
 *   during a migration, a consumer down while both hosts' messages queue up); each bridge keeps its
 *   outbox directory across restarts, as an installed bridge does.
 * - The observer sees the bus as the consumer does but on its own queues, so the event sequences of
 *   both hosts can be printed (for the docs) and asserted on.
 */
import { connect, type Channel, type ChannelModel } from 'amqplib';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect as tcpConnect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startVirtbus, type ServiceProcess } from './bridge-process';
import { onTeardown } from './services';
import { waitUntil } from '../../src/sandbox';
import type { QemuHost } from '../../src/sandbox';
import type { LifecycleMessage } from '../../src/messages/lifecycle';
import type { CommandResult, StopCommand } from '../../src/messages/command';
import { decodeNotification, type InstanceUpdateMessage } from '../../src/notify/instance-update';
import type { InstanceRow, InstanceStore } from '../../src/store/types';

/** Something seen on the bus, with the observer's receive time (ms since the epoch). */
export interface Seen<T> {
  readonly at: number;
  readonly body: T;
}

/** A TCP proxy whose client→server direction can be held (the bytes wait in the socket buffers). */
export class HoldableProxy {
  readonly #server: Server;
  readonly #clients = new Set<Socket>();
  #held = false;
  port = 0;

  private constructor(target: { host: string; port: number }) {
    this.#server = createServer((client) => {
      const upstream = tcpConnect(target.port, target.host);
      this.#clients.add(client);
      if (this.#held) client.pause();
      client.on('data', (chunk: Buffer) => upstream.write(chunk));
      upstream.on('data', (chunk: Buffer) => client.write(chunk));
      const close = (): void => {
        this.#clients.delete(client);
        client.destroy();
        upstream.destroy();
      };
      client.on('close', close);
      upstream.on('close', close);
      client.on('error', close);
      upstream.on('error', close);
    });
  }

  static async start(target: { host: string; port: number }): Promise<HoldableProxy> {
    const proxy = new HoldableProxy(target);
    const server = proxy.#server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', resolve);
    });
    const address = server.address();
    proxy.port = typeof address === 'object' && address !== null ? address.port : 0;
    return proxy;
  }

  /** From now on nothing the clients send reaches the broker (heartbeats included: keep it short). */
  hold(): void {
    this.#held = true;
    for (const client of this.#clients) client.pause();
  }

  release(): void {
    this.#held = false;
    for (const client of this.#clients) client.resume();
  }

  async close(): Promise<void> {
    for (const client of this.#clients) client.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

export interface RigHost {
  readonly name: string;
  readonly qemu: QemuHost;
  readonly proxy: HoldableProxy;
  bridge: ServiceProcess | undefined;
}

export interface BridgeSettings {
  readonly stopDelayMs: number;
  readonly resyncSeconds: number;
}

/** Starts a host's bridge and waits until its start snapshot is published. */
export async function startBridge(
  host: RigHost,
  brokerUrl: string,
  outboxDir: string,
  settings: BridgeSettings,
): Promise<ServiceProcess> {
  const url = new URL(brokerUrl);
  url.hostname = '127.0.0.1';
  url.port = String(host.proxy.port);
  const bridge = startVirtbus('bridge', {
    VIRTBUS_HOST: host.name,
    VIRTBUS_LIBVIRT_URI: host.qemu.uri,
    VIRTBUS_AMQP_URL: url.toString(),
    VIRTBUS_OUTBOX_DIR: outboxDir,
    VIRTBUS_STOP_DELAY_MS: String(settings.stopDelayMs),
    VIRTBUS_RESYNC_INTERVAL: String(settings.resyncSeconds),
    VIRTBUS_GRACEFUL_SHUTDOWN_TIMEOUT_MS: '5000',
    // A held proxy also holds the bridge's heartbeats: keep the broker from closing it meanwhile.
    VIRTBUS_AMQP_HEARTBEAT: '120',
    VIRTBUS_LOG_LEVEL: 'info',
  });
  host.bridge = bridge;
  await bridge.waitForLog(
    `bridge ${host.name}'s start snapshot`,
    (line) => line.msg === 'snapshot published' && line.reason === 'start',
    60000,
  );
  return bridge;
}

/** A bridge's own outbox directory, kept across its restarts and removed after the file. */
export function outboxDir(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `virtbus-mig-outbox-${name}-`));
  onTeardown(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
  return dir;
}

/** Records the bus: lifecycle messages, stop commands and results, instance.update notifications. */
export class BusObserver {
  readonly lifecycle: Array<Seen<LifecycleMessage>> = [];
  readonly commands: Array<Seen<StopCommand>> = [];
  readonly results: Array<Seen<CommandResult>> = [];
  readonly notifications: Array<Seen<InstanceUpdateMessage>> = [];
  #model!: ChannelModel;
  #channel!: Channel;

  /** Call once the consumer has declared its topology (the exchanges must exist). */
  static async open(url: string): Promise<BusObserver> {
    const observer = new BusObserver();
    observer.#model = await connect(url);
    onTeardown(() => observer.#model.close().catch(() => undefined));
    const channel = await observer.#model.createChannel();
    observer.#channel = channel;
    const watch = async (exchange: string, keys: string[], onBody: (body: Buffer, key: string) => void) => {
      await channel.checkExchange(exchange);
      const { queue } = await channel.assertQueue('', { exclusive: true });
      for (const key of keys) await channel.bindQueue(queue, exchange, key);
      await channel.consume(
        queue,
        (message) => {
          if (message) onBody(message.content, message.fields.routingKey);
        },
        { noAck: true },
      );
    };
    await watch('virtbus.lifecycle', ['#'], (body) =>
      observer.lifecycle.push({
        at: Date.now(),
        body: JSON.parse(body.toString('utf8')) as LifecycleMessage,
      }),
    );
    await watch('virtbus.commands', ['*.stop', '*.stop_result'], (body, key) => {
      const parsed = JSON.parse(body.toString('utf8')) as StopCommand & CommandResult;
      if (key.endsWith('.stop_result')) observer.results.push({ at: Date.now(), body: parsed });
      else observer.commands.push({ at: Date.now(), body: parsed });
    });
    await watch('nova', ['versioned_notifications.info'], (body) =>
      observer.notifications.push({ at: Date.now(), body: decodeNotification(body) }),
    );
    return observer;
  }

  /** Messages still ready in a queue (the consumer's, to know it has caught up). */
  async ready(queue: string): Promise<number> {
    return (await this.#channel.checkQueue(queue)).messageCount;
  }

  lifecycleFor(uuid: string, since = 0): Array<Seen<LifecycleMessage>> {
    return this.lifecycle.filter((seen) => seen.at >= since && seen.body.instance_uuid === uuid);
  }

  commandsFor(uuid: string): Array<Seen<StopCommand>> {
    return this.commands.filter((seen) => seen.body.instance_uuid === uuid);
  }

  notificationsFor(uuid: string, since = 0): Array<Seen<InstanceUpdateMessage>> {
    return this.notifications.filter(
      (seen) => seen.at >= since && seen.body.payload['nova_object.data'].uuid === uuid,
    );
  }

  /** Waits for a lifecycle message matching the predicate, received at or after `since`. */
  async waitLifecycle(
    what: string,
    predicate: (message: LifecycleMessage) => boolean,
    since: number,
    timeoutMs = 60000,
  ): Promise<Seen<LifecycleMessage>> {
    let found: Seen<LifecycleMessage> | undefined;
    await waitUntil(
      what,
      () => {
        found = this.lifecycle.find((seen) => seen.at >= since && predicate(seen.body));
        return found !== undefined;
      },
      timeoutMs,
      50,
    );
    return found as Seen<LifecycleMessage>;
  }

  /**
   * A host's snapshot taken after `since` has been seen: the host's view after a migration has
   * then reached the consumer's queue at least once by the snapshot path too.
   */
  waitSnapshot(host: string, since: number, timeoutMs = 60000): Promise<Seen<LifecycleMessage>> {
    return this.waitLifecycle(
      `a snapshot of ${host} taken after the migration`,
      (message) =>
        message.transition === 'sync_end' &&
        message.host === host &&
        Date.parse(message.snapshot?.taken_at ?? message.occurred_at) >= since,
      since,
      timeoutMs,
    );
  }

  /**
   * The story of one guest since `since`, in arrival order, one line each: its lifecycle messages from
   * both hosts (a periodic snapshot repeating the same host's previous one left out), each host's
   * snapshot ends where they start or stop listing the guest (and every non-periodic one), and the consumer's instance.update
   * notifications — what the hosts said and what the consumer made of it, for the report and docs.
   */
  describe(uuid: string, since: number): string[] {
    const lines: Array<{ at: number; text: string }> = [];
    const stamp = (at: number): string => `+${String(at - since).padStart(6)} ms  `;
    const lastSync = new Map<string, string>();
    const listed = new Map<string, boolean>();
    for (const { at, body } of this.lifecycle) {
      if (at < since) continue;
      if (body.transition === 'sync_end') {
        const lists = body.instance_uuids?.includes(uuid) ?? false;
        const before = listed.get(body.host);
        listed.set(body.host, lists);
        // A change of mind, or a snapshot after a (re)start (the host's first word after a gap).
        if ((before !== undefined && before !== lists) || body.snapshot?.reason !== 'periodic')
          lines.push({
            at,
            text: `${stamp(at)}${body.host.padEnd(18)} sync_end            ${lists ? 'lists the guest' : 'does not list the guest'} (${body.snapshot?.reason ?? '?'} snapshot)`,
          });
        continue;
      }
      if (body.instance_uuid !== uuid) continue;
      if (body.transition === 'sync') {
        const state = `${body.libvirt?.detail ?? '-'} ${String(body.power_state)}`;
        const repeated = body.snapshot?.reason === 'periodic' && lastSync.get(body.host) === state;
        lastSync.set(body.host, state);
        if (repeated) continue;
      }
      const libvirt = body.libvirt ? `${body.libvirt.event}/${body.libvirt.detail}` : '-';
      lines.push({
        at,
        text:
          `${stamp(at)}${body.host.padEnd(18)} ${body.transition.padEnd(19)} ${libvirt.padEnd(22)} ` +
          `power_state ${String(body.power_state)}` +
          (body.delayed_ms > 0 ? ` delayed ${body.delayed_ms} ms` : '') +
          (body.snapshot ? ` (${body.snapshot.reason} snapshot)` : ''),
      });
    }
    for (const { at, body } of this.notificationsFor(uuid, since)) {
      const data = body.payload['nova_object.data'];
      lines.push({
        at,
        text:
          `${stamp(at)}consumer → instance.update host ${String(data.host)}, power_state ` +
          `${String(data.power_state)}, vm_state ${String(data.state)}, task_state ${String(data.task_state)}`,
      });
    }
    for (const { at, body } of this.commandsFor(uuid).filter((seen) => seen.at >= since))
      lines.push({
        at,
        text: `${stamp(at)}consumer → ${body.action} command to ${body.host} (${body.reason})`,
      });
    return lines.sort((a, b) => a.at - b.at).map((line) => line.text);
  }
}

/** Waits until the consumer's queue is empty, then a little longer for the last batch to commit. */
export async function consumerCaughtUp(observer: BusObserver, queue = 'virtbus.consumer'): Promise<void> {
  await waitUntil(
    'the consumer to drain its queue',
    async () => (await observer.ready(queue)) === 0,
    60000,
    100,
  );
  await sleep(1500);
}

/**
 * Waits until the row satisfies `done`; fails at once (with the commands) when a stop or force_stop
 * for the instance shows up, since no later state can undo a command that was sent.
 */
export async function waitRow(
  store: InstanceStore,
  observer: BusObserver,
  uuid: string,
  what: string,
  done: (row: InstanceRow) => boolean,
  timeoutMs = 45000,
): Promise<InstanceRow> {
  let last: InstanceRow | undefined;
  await waitUntil(
    what,
    async () => {
      const sent = observer.commandsFor(uuid);
      if (sent.length > 0)
        throw new Error(
          `while waiting for ${what}: a command was sent: ${JSON.stringify(sent.map((s) => s.body))}; ` +
            `row: ${JSON.stringify(await store.get(uuid))}`,
        );
      last = await store.get(uuid);
      return last !== undefined && done(last);
    },
    timeoutMs,
    200,
  ).catch((error: unknown) => {
    throw new Error(`${(error as Error).message}; last row: ${JSON.stringify(last)}`);
  });
  return last as InstanceRow;
}

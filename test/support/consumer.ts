/**
 * Test harness for the consumer suite: a consumer service wired exactly as `virtbus consumer` wires
 * it (real broker vhost, real database), plus a bus client that plays the bridge: publishes
 * lifecycle messages, watches stop commands and notifications, answers commands, reads the
 * dead-letter queue.
 */
import { stopResult } from './commands';
import {
  connect,
  type Channel,
  type ChannelModel,
  type ConfirmChannel,
  type ConsumeMessage,
  type GetMessage,
} from 'amqplib';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { AmqpConnection, amqpOptionsFromConfig } from '../../src/amqp/connection';
import { loadConfig, type VirtbusConfig } from '../../src/config/load';
import { createConsumerMetrics, type ConsumerMetrics } from '../../src/consumer/metrics';
import { ConsumerService, type ProcessedInfo } from '../../src/consumer/service';
import type { Transition } from '../../src/libvirt/translate';
import type { PowerStateCode } from '../../src/libvirt/constants';
import { commandResultRoutingKey, type CommandOutcome, type StopCommand } from '../../src/messages/command';
import {
  buildLifecycleMessage,
  lifecycleRoutingKey,
  LIFECYCLE_MESSAGE_TYPE,
  type LifecycleMessage,
} from '../../src/messages/lifecycle';
import { decodeNotification, type InstanceUpdateMessage } from '../../src/notify/instance-update';
import { openStore } from '../../src/store/open';
import type { InstanceInput, InstanceRow, InstanceStore } from '../../src/store/types';
import { createLogger } from '../../src/util/log';
import { isoMicros, nowMicros } from '../../src/util/time';
import { waitUntil } from '../../src/sandbox';

export const LOG_LEVEL = process.env.VIRTBUS_TEST_LOG ?? 'silent';

/** A fresh SQLite database file in a temp dir, removed after the test file. */
export function tempSqliteUrl(): string {
  const dir = mkdtempSync(join(tmpdir(), 'virtbus-consumer-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  return `sqlite:${join(dir, 'instances.db')}`;
}

/** A fresh SQLite instance store (tempSqliteUrl), closed after the test file; with its URL for the processes. */
export function tempSqliteStore(): { readonly url: string; readonly store: InstanceStore } {
  const url = tempSqliteUrl();
  const store = openStore(
    { url, poolSize: 1, sqliteSynchronous: 'full', busyTimeoutMs: 5000 },
    createLogger('silent', 'test'),
  );
  after(() => store.close());
  return { url, store };
}

export function consumerConfig(env: Record<string, string>): VirtbusConfig {
  return loadConfig({
    role: 'consumer',
    skipDefaultFile: true,
    // The suite publishes as one shared broker user (guest): lax sender verification unless a test
    // asks for strict (test/consumer/senders.test.ts).
    env: {
      VIRTBUS_LOG_LEVEL: LOG_LEVEL,
      VIRTBUS_METRICS_PORT: '0',
      VIRTBUS_CONSUMER_SENDERS: 'routing-key',
      ...env,
    },
  });
}

export interface RunningConsumer {
  readonly config: VirtbusConfig;
  readonly service: ConsumerService;
  readonly store: InstanceStore;
  readonly metrics: ConsumerMetrics;
  readonly amqp: AmqpConnection;
  /** Every processed message, in order. */
  readonly processed: ProcessedInfo[];
  /** Resolves when the message with this id has been acknowledged. */
  waitProcessed(messageId: string, timeoutMs?: number): Promise<ProcessedInfo>;
  stop(): Promise<void>;
}

export async function startConsumer(options: {
  readonly amqpUrl: string;
  readonly dbUrl: string;
  readonly env?: Record<string, string>;
  /** Share a store (and skip opening one). */
  readonly store?: InstanceStore;
  readonly ready?: boolean;
}): Promise<RunningConsumer> {
  const config = consumerConfig({
    VIRTBUS_AMQP_URL: options.amqpUrl,
    VIRTBUS_DB_URL: options.dbUrl,
    VIRTBUS_AMQP_RECONNECT_INITIAL_DELAY_MS: '100',
    VIRTBUS_AMQP_RECONNECT_MAX_DELAY_MS: '1000',
    VIRTBUS_DB_RETRY_INITIAL_DELAY_MS: '100',
    VIRTBUS_DB_RETRY_MAX_DELAY_MS: '500',
    VIRTBUS_DB_BUSY_TIMEOUT_MS: '2000',
    VIRTBUS_CONSUMER_QUEUE_DEPTH_INTERVAL_MS: '200',
    ...options.env,
  });
  const logger = createLogger(config.log.level, 'test-consumer');
  const store = options.store ?? openStore(config.db, logger, 'virtbus-test');
  const metrics = createConsumerMetrics();
  const amqp = new AmqpConnection(amqpOptionsFromConfig(config.amqp, 'virtbus-test-consumer', logger));
  const service = new ConsumerService({ settings: config, store, metrics, logger, amqp });
  const processed: ProcessedInfo[] = [];
  const waiters = new Map<string, (info: ProcessedInfo) => void>();
  const seen = new Map<string, ProcessedInfo>();
  service.on('processed', (info) => {
    processed.push(info);
    if (info.messageId) {
      seen.set(info.messageId, info);
      waiters.get(info.messageId)?.(info);
    }
  });
  service.start();
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await service.stop();
    if (!options.store) await store.close();
  };
  after(stop);
  if (options.ready !== false) await service.whenReady(30000);
  return {
    config,
    service,
    store,
    metrics,
    amqp,
    processed,
    stop,
    waitProcessed: (messageId, timeoutMs = 15000) => {
      const done = seen.get(messageId);
      if (done) return Promise.resolve(done);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`message ${messageId} not processed within ${timeoutMs} ms`)),
          timeoutMs,
        );
        waiters.set(messageId, (info) => {
          clearTimeout(timer);
          waiters.delete(messageId);
          resolve(info);
        });
      });
    },
  };
}

/** Lifecycle message builder with a per-test clock and sequence. */
export class EventFactory {
  #seq = 0;
  #clock = nowMicros() - 60_000_000;
  constructor(readonly bootId = randomUUID()) {}

  /** The next occurred_at, strictly increasing. */
  tick(stepUs = 1000): number {
    this.#clock += stepUs;
    return this.#clock;
  }

  event(
    host: string,
    uuid: string,
    transition: Transition,
    powerState: PowerStateCode | null,
    extra: { occurredUs?: number; seq?: number; bootId?: string } = {},
  ): LifecycleMessage {
    this.#seq += 1;
    const occurred = extra.occurredUs ?? this.tick();
    return buildLifecycleMessage({
      host,
      instanceUuid: uuid,
      domainName: `instance-${uuid.slice(0, 8)}`,
      transition,
      libvirt: null,
      powerState,
      occurredMicros: occurred,
      publishedMicros: occurred + 100,
      delayedMs: 0,
      seq: extra.seq ?? this.#seq,
      bootId: extra.bootId ?? this.bootId,
    });
  }

  syncEnd(host: string, uuids: readonly string[], takenUs: number): LifecycleMessage {
    this.#seq += 1;
    return syncEndMessage({
      host,
      seq: this.#seq,
      bootId: this.bootId,
      occurredUs: this.tick(),
      takenUs,
      uuids,
    });
  }
}

/** A snapshot's closing message (`sync_end`): which instances the host had when it was taken. */
export function syncEndMessage(fields: {
  host: string;
  seq: number;
  bootId: string;
  occurredUs: number;
  takenUs: number;
  uuids: readonly string[];
}): LifecycleMessage {
  return buildLifecycleMessage({
    host: fields.host,
    instanceUuid: null,
    domainName: null,
    transition: 'sync_end',
    libvirt: null,
    powerState: null,
    occurredMicros: fields.occurredUs,
    publishedMicros: fields.occurredUs + 100,
    delayedMs: 0,
    seq: fields.seq,
    bootId: fields.bootId,
    snapshot: {
      id: randomUUID(),
      reason: 'periodic',
      count: fields.uuids.length,
      taken_at: isoMicros(fields.takenUs),
    },
    instanceUuids: fields.uuids,
  });
}

/** Fake-bridge answer: what a CommandResult for a command should say. */
export type Answer =
  { outcome: CommandOutcome; power_state: number; error?: string | null; finishedUs?: number } | 'ignore';

/** The test's own connection to the vhost: the bridge's side of the bus, plus observers. */
export class Bus {
  readonly commands: StopCommand[] = [];
  readonly notifications: InstanceUpdateMessage[] = [];
  /** The notifications as they came off the wire: routing key, properties and body. */
  readonly rawNotifications: Array<{
    routingKey: string;
    exchange: string;
    body: string;
    contentType: unknown;
  }> = [];
  #model!: ChannelModel;
  #publish!: ConfirmChannel;
  #observe!: Channel;
  #answer: ((command: StopCommand) => Answer) | undefined;
  #commandExchange = 'virtbus.commands';

  static async open(url: string, config: VirtbusConfig): Promise<Bus> {
    const bus = new Bus();
    await bus.#open(url, config);
    after(() => bus.close());
    return bus;
  }

  async #open(url: string, config: VirtbusConfig): Promise<void> {
    this.#commandExchange = config.amqp.commandExchange;
    this.#model = await connect(url);
    this.#publish = await this.#model.createConfirmChannel();
    this.#observe = await this.#model.createChannel();
    const commandQueue = (await this.#observe.assertQueue('', { exclusive: true })).queue;
    await this.#observe.assertExchange(config.amqp.commandExchange, 'topic', { durable: true });
    await this.#observe.bindQueue(commandQueue, config.amqp.commandExchange, '*.stop');
    await this.#observe.consume(
      commandQueue,
      (message) => {
        if (message) this.#onCommand(message);
      },
      { noAck: true },
    );
    const notifications = config.consumer.notifications;
    await this.#observe.assertExchange(notifications.exchange, 'topic', { durable: notifications.durable });
    const notificationQueue = (await this.#observe.assertQueue('', { exclusive: true })).queue;
    await this.#observe.bindQueue(notificationQueue, notifications.exchange, `${notifications.topic}.info`);
    await this.#observe.consume(
      notificationQueue,
      (message) => {
        if (!message) return;
        this.notifications.push(decodeNotification(message.content));
        this.rawNotifications.push({
          routingKey: message.fields.routingKey,
          exchange: message.fields.exchange,
          body: message.content.toString('utf8'),
          contentType: message.properties.contentType,
        });
      },
      { noAck: true },
    );
  }

  /** Answer every stop command as the bridge would (or 'ignore' to leave it unanswered). */
  answerCommands(answer: (command: StopCommand) => Answer): void {
    this.#answer = answer;
  }

  #onCommand(message: ConsumeMessage): void {
    const command = JSON.parse(message.content.toString('utf8')) as StopCommand;
    this.commands.push(command);
    const answer = this.#answer?.(command) ?? 'ignore';
    if (answer === 'ignore') return;
    void this.sendResult(
      command,
      answer.outcome,
      answer.power_state,
      answer.error ?? null,
      answer.finishedUs,
    );
  }

  async sendResult(
    command: StopCommand,
    outcome: CommandOutcome,
    powerState: number,
    error: string | null = null,
    /** The bridge's finished_at (epoch microseconds); now by default. */
    finishedUs: number = nowMicros(),
  ): Promise<void> {
    const result = stopResult(command, {
      outcome,
      power_state: powerState,
      error,
      finished_at: isoMicros(finishedUs),
    });
    await this.publishRaw(
      this.#commandExchange,
      commandResultRoutingKey(command.host),
      Buffer.from(JSON.stringify(result)),
      result.command_id,
    );
  }

  async publishLifecycle(exchange: string, messages: readonly LifecycleMessage[]): Promise<void> {
    for (const message of messages) {
      this.#publish.publish(
        exchange,
        lifecycleRoutingKey(message.host, message.transition),
        Buffer.from(JSON.stringify(message)),
        {
          persistent: true,
          contentType: 'application/json',
          messageId: message.event_id,
          type: LIFECYCLE_MESSAGE_TYPE,
          appId: 'virtbus',
          timestamp: Math.floor(Date.now() / 1000),
        },
      );
    }
    await this.#publish.waitForConfirms();
  }

  async publishRaw(exchange: string, routingKey: string, body: Buffer, messageId: string): Promise<void> {
    this.#publish.publish(exchange, routingKey, body, { persistent: true, messageId });
    await this.#publish.waitForConfirms();
  }

  /** Drains a queue (e.g. the dead-letter queue) with basic.get. */
  async drain(queue: string): Promise<GetMessage[]> {
    const messages: GetMessage[] = [];
    for (;;) {
      const message = await this.#observe.get(queue, { noAck: true });
      if (!message) return messages;
      messages.push(message);
    }
  }

  async deleteQueue(queue: string): Promise<void> {
    const channel = await this.#model.createChannel();
    try {
      await channel.deleteQueue(queue);
    } finally {
      await channel.close().catch(() => undefined);
    }
  }

  async queueCounts(queue: string): Promise<{ messageCount: number; consumerCount: number }> {
    const channel = await this.#model.createChannel();
    try {
      return await channel.checkQueue(queue);
    } finally {
      await channel.close().catch(() => undefined);
    }
  }

  notificationsFor(uuid: string): InstanceUpdateMessage[] {
    return this.notifications.filter((n) => n.payload['nova_object.data'].uuid === uuid);
  }

  commandsFor(uuid: string): StopCommand[] {
    return this.commands.filter((c) => c.instance_uuid === uuid);
  }

  async close(): Promise<void> {
    await this.#model.close().catch(() => undefined);
  }
}

export function instance(fields: Partial<InstanceInput> & { host: string | null }): InstanceInput {
  return {
    uuid: fields.uuid ?? randomUUID(),
    host: fields.host,
    vm_state: fields.vm_state ?? 'active',
    task_state: fields.task_state ?? null,
    power_state: fields.power_state ?? 1,
    launched_at: fields.launched_at === undefined ? '2026-01-01T00:00:00.000000Z' : fields.launched_at,
    ...(fields.attrs ? { attrs: fields.attrs } : {}),
  };
}

export async function row(store: InstanceStore, uuid: string): Promise<InstanceRow> {
  const found = await store.get(uuid);
  if (!found) throw new Error(`no row ${uuid}`);
  return found;
}

export { waitUntil };

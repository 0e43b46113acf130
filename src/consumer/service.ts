/**
 * The consumer process's engine: takes lifecycle messages and stop-command results from its queues,
 * validates them (unusable ones go to the dead-letter exchange with the reason), hands them to the
 * handler in batches, and acknowledges each message only after its database changes are committed
 * and what it published is confirmed.
 *
 * The pipeline: every message delivered within one turn of the event loop is validated together;
 * the valid ones queue for the store stage, which runs one batch at a time (whatever queued while the
 * previous batch was in the database) — one store round per batch, messages of one instance in
 * delivery order — so the database sees one transaction per batch and a batch's decisions are
 * taken on the rows the previous batch committed. After the commit the batch's notifications and
 * stop commands go out at once; when the broker has confirmed them all, the batch is acknowledged
 * with one `multiple` ack up to the newest delivery tag below which every message is done. While a
 * batch waits for its confirms the next one is already in the database.
 *
 * Failure handling:
 * - broker lost: the AmqpConnection reconnects; topology is re-declared and consumption resumes.
 *   Messages that were in flight are redelivered by the broker; the handler's event-position guard
 *   makes that harmless.
 * - database unavailable: consumption pauses (consumers cancelled), the messages in hand stay
 *   unacknowledged and wait, readiness goes false, the database is probed with backoff; when it
 *   answers they are processed, acknowledged, and consumption resumes. Nothing is nacked, so a
 *   database outage never counts against a quorum queue's delivery limit.
 * - a message that fails on a database that does answer: dead-lettered with the error as reason.
 *
 * The parts: subscription.ts (the broker channels and the consumers, one state in
 * subscription-state.ts), database.ts (the database's state and the outage wait), acknowledge.ts
 * (how a batch ends: acknowledged or dead-lettered), acks.ts (the ack frames).
 */
import type { ConsumeMessage, Options } from 'amqplib';
import { EventEmitter } from 'node:events';
import type { AmqpConnection } from '../amqp/connection';
import type { ReadinessCheck } from '../metrics/server';
import type { StopCommand } from '../messages/command';
import { Notifier } from '../notify/notifier';
import type { InstanceStore } from '../store/types';
import { settlesWithin } from '../util/deadline';
import type { Logger } from '../util/log';
import { nowMicros } from '../util/time';
import type { Channels, Delivery } from './acks';
import { Acknowledger } from './acknowledge';
import { Database } from './database';
import { HostsKeeper } from './hosts';
import {
  LifecycleHandler,
  ShutdownAbort,
  type ConsumerMode,
  type ItemResult,
  type WorkItem,
} from './handler';
import type { ConsumerMetrics, MessageOutcome } from './metrics';
import { readDelivery } from './intake';
import { publishCommand, publishConfirmed } from './publishing';
import { pollQueueDepth } from './queue-depth';
import { traceHeaders } from '../tracing/consumer';
import type { SenderPolicy } from './senders';
import { Subscription } from './subscription';
import type { ConsumerTopologySettings } from './topology';

export { DEAD_LETTER_PREFIX_BYTES, REASON_HEADER } from './publishing';

export interface ConsumerSettings extends ConsumerTopologySettings {
  readonly consumer: ConsumerTopologySettings['consumer'] & {
    readonly prefetch: number;
    /** Bodies above this are dead-lettered before they are decoded. */
    readonly maxMessageBytes: number;
    readonly senders: SenderPolicy;
    /** nova or observe (validated by the configuration schema). */
    readonly mode: string;
    readonly stopTimeoutMs: number;
    /** Rows follow live migrations both hosts agree on (docs/consumer.md). */
    readonly followMigrations: boolean;
    readonly migrationWindowMs: number;
    readonly queueDepthIntervalMs: number;
    /** The hosts view's flush and re-read period (hosts.ts). */
    readonly hostsIntervalMs: number;
    readonly maxFutureSkewMs: number;
    readonly shutdownTimeoutMs: number;
    readonly notifications: {
      readonly enabled: boolean;
      readonly exchange: string;
      readonly topic: string;
      readonly durable: boolean;
      readonly declareQueue: boolean;
      /** InstanceUpdatePayload 2.0 (Nova before `shares`) or 2.1. */
      readonly payloadVersion?: string;
    };
  };
  readonly db: { readonly retryInitialDelayMs: number; readonly retryMaxDelayMs: number };
}

export interface ProcessedInfo {
  readonly queue: 'lifecycle' | 'result';
  readonly messageId: string | undefined;
  readonly outcome: MessageOutcome;
  readonly reason?: string;
}

interface ServiceEvents {
  /** After a message was acknowledged (or dead-lettered and acknowledged). */
  processed: [info: ProcessedInfo];
  /** Consumption started (true) or paused/stopped (false). */
  consuming: [active: boolean];
}

/** Valid messages waiting for the store stage, and who waits for them. */
interface StageEntry {
  readonly items: WorkItem[];
  readonly deliveries: Delivery[];
  readonly done: () => void;
}

export class ConsumerService extends EventEmitter<ServiceEvents> {
  readonly handler: LifecycleHandler;
  /** The hosts view and its maintenance switches (hosts.ts). */
  readonly hosts: HostsKeeper;
  readonly #settings: ConsumerSettings;
  readonly #store: InstanceStore;
  readonly #metrics: ConsumerMetrics;
  readonly #logger: Logger;
  readonly #amqp: AmqpConnection;
  readonly #inFlight = new Set<Promise<void>>();
  #intake: Delivery[] = [];
  #intakeScheduled = false;
  readonly #stage: StageEntry[] = [];
  #stageRunning = false;
  readonly #abort = new AbortController();
  readonly #db: Database;
  readonly #subscription: Subscription;
  readonly #acknowledger: Acknowledger;
  /** What stop() returns every time it is called (the shutdown runs once). */
  #shutdown: Promise<void> | undefined;
  #dbStart: Promise<void> | undefined;
  #timers: NodeJS.Timeout[] = [];
  #sweeping = false;

  constructor(options: {
    readonly settings: ConsumerSettings;
    readonly store: InstanceStore;
    readonly metrics: ConsumerMetrics;
    readonly logger: Logger;
    readonly amqp: AmqpConnection;
  }) {
    super();
    this.#settings = options.settings;
    this.#store = options.store;
    this.#metrics = options.metrics;
    this.#logger = options.logger;
    this.#amqp = options.amqp;
    this.hosts = new HostsKeeper({
      store: this.#store.hosts,
      metrics: this.#metrics.hosts,
      logger: this.#logger.child({ module: 'hosts' }),
      intervalMs: this.#settings.consumer.hostsIntervalMs,
    });
    const { notifications } = this.#settings.consumer;
    const notifier = new Notifier({
      enabled: notifications.enabled,
      exchange: notifications.exchange,
      topic: notifications.topic,
      persistent: notifications.durable,
      payloadVersion: notifications.payloadVersion === '2.0' ? '2.0' : '2.1',
      publish: (exchange, routingKey, body, publishOptions) =>
        this.#publish(exchange, routingKey, body, {
          persistent: publishOptions.persistent,
          messageId: publishOptions.messageId,
          contentType: 'application/json',
          contentEncoding: 'utf-8',
          ...traceHeaders(), // the traceparent of the message that caused it
        }),
      count: (outcome) => this.#metrics.notifications.inc({ outcome }),
      logger: this.#logger.child({ module: 'notifier' }),
    });
    this.handler = new LifecycleHandler({
      store: this.#store,
      mode: (this.#settings.consumer.mode === 'observe' ? 'observe' : 'nova') satisfies ConsumerMode,
      stopTimeoutMs: this.#settings.consumer.stopTimeoutMs,
      followMigrations: this.#settings.consumer.followMigrations,
      migrationWindowMs: this.#settings.consumer.migrationWindowMs,
      maintenance: this.hosts.maintenance.check,
      notifier,
      sendCommand: (command, ttlMs) => this.#sendCommand(command, ttlMs),
      metrics: this.#metrics,
      logger: this.#logger.child({ module: 'sync' }),
    });
    this.#db = new Database({
      store: this.#store,
      retry: this.#settings.db,
      metrics: this.#metrics,
      logger: this.#logger,
      signal: this.#abort.signal,
      // Maintenance switches are known before the first message is decided on.
      afterMigrate: () => this.hosts.load(),
      onUp: () => {
        this.#updatePaused();
        void this.#subscription.reconcile();
      },
      onOutage: () => {
        this.#updatePaused();
        void this.#subscription.reconcile();
      },
    });
    this.#subscription = new Subscription({
      settings: this.#settings,
      amqp: this.#amqp,
      metrics: this.#metrics,
      logger: this.#logger,
      signal: this.#abort.signal,
      wanted: () => this.#db.up,
      accept: (queue, channels, message) => this.#accept(queue, channels, message),
      acked: (deliveries) => {
        for (const delivery of deliveries) if (delivery.info) this.emit('processed', delivery.info);
      },
      changed: (from, to) => {
        if ((from.name === 'consuming') === (to.name === 'consuming')) return;
        this.#updatePaused();
        this.emit('consuming', to.name === 'consuming');
      },
      attached: () => void this.#pollDepth(),
    });
    this.#acknowledger = new Acknowledger({
      queues: this.#settings.consumer,
      metrics: this.#metrics,
      logger: this.#logger,
      publish: (exchange, routingKey, content, options, channels) =>
        this.#publish(exchange, routingKey, content, options, channels),
      track: (work) => this.#track(work),
      selfUser: () => this.#amqp.user,
    });
  }

  /** Starts the database and broker loops in the background; readiness reports progress. */
  start(): void {
    this.#metrics.dbUp.set(0);
    this.#metrics.amqpUp.set(0);
    this.#metrics.paused.set(0);
    this.#amqp.on('up', (model) => void this.#subscription.up(model));
    this.#amqp.on('down', () => this.#subscription.down());
    this.#dbStart = this.#db.start();
    this.#amqp.start();
    const { queueDepthIntervalMs, stopTimeoutMs } = this.#settings.consumer;
    this.#timers.push(setInterval(() => void this.#pollDepth(), queueDepthIntervalMs));
    const sweepMs = Math.min(5000, Math.max(100, Math.floor(stopTimeoutMs / 4)));
    this.#timers.push(setInterval(() => void this.#sweep(), sweepMs));
    for (const timer of this.#timers) timer.unref();
    this.hosts.start();
  }

  get ready(): boolean {
    return this.#subscription.consuming && this.#db.up && this.#amqp.isUp;
  }

  readiness(): ReadinessCheck[] {
    return [
      { name: 'amqp', ready: () => this.#amqp.isUp && this.#subscription.channels?.open === true },
      { name: 'db', ready: () => this.#db.up },
      { name: 'consuming', ready: () => this.#subscription.consuming },
    ];
  }

  /** Resolves when the consumer is consuming (tests and the CLI's start-up log). */
  async whenReady(timeoutMs = 30000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ready) {
      if (Date.now() > deadline) throw new Error(`consumer not ready after ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /**
   * Graceful stop: cancel the consumers, let messages in hand finish (bounded by
   * consumer.shutdownTimeoutMs; unfinished ones are redelivered), close the broker connection.
   * The store belongs to the caller.
   */
  stop(): Promise<void> {
    this.#shutdown ??= this.#runShutdown();
    return this.#shutdown;
  }

  async #runShutdown(): Promise<void> {
    for (const timer of this.#timers) clearInterval(timer);
    await this.#subscription.stop();
    this.#takeIntake();
    const drained = Promise.allSettled([...this.#inFlight]);
    if (!(await settlesWithin(drained, this.#settings.consumer.shutdownTimeoutMs)))
      this.#logger.warn(
        { inFlight: this.#inFlight.size },
        'shutdown timeout: unfinished messages will be redelivered',
      );
    await this.hosts.stop(); // the last observations reach the hosts table
    this.#abort.abort();
    await this.#dbStart;
    await this.#amqp.close();
    this.#metrics.amqpUp.set(0);
  }

  /** virtbus_consumer_paused: consumption is off because the database is down. */
  #updatePaused(): void {
    this.#metrics.paused.set(!this.#subscription.consuming && this.#db.state.name === 'outage' ? 1 : 0);
  }

  // ---- messages ----------------------------------------------------------------------------

  #accept(queue: 'lifecycle' | 'result', channels: Channels, message: ConsumeMessage): void {
    const delivery: Delivery = { queue, channels, message, state: 'in_hand', behind: false, info: undefined };
    channels.acks?.add(delivery);
    this.#intake.push(delivery);
    if (!this.#intakeScheduled) {
      this.#intakeScheduled = true;
      setImmediate(() => this.#takeIntake());
    }
  }

  /** Validates what arrived since the last turn; dead-letters the unusable, queues the rest. */
  #takeIntake(): void {
    this.#intakeScheduled = false;
    const deliveries = this.#intake;
    if (deliveries.length === 0) return;
    this.#intake = [];
    this.#metrics.inFlight.inc(deliveries.length);
    const nowUs = nowMicros();
    const items: WorkItem[] = [];
    const valid: Delivery[] = [];
    // The consumer's own broker user: the only one whose dead-letter replays are believed.
    const intake = { ...this.#settings.consumer, selfUser: this.#amqp.user };
    for (const delivery of deliveries) {
      const read = readDelivery(delivery.queue, delivery.message, nowUs, intake, this.#metrics);
      if ('reason' in read)
        this.#track(this.#acknowledger.deadLetter(delivery, read.reason, read.truncated === true));
      else {
        items.push(read);
        valid.push(delivery);
      }
    }
    if (valid.length === 0) return;
    this.#track(
      new Promise<void>((done) => {
        this.#stage.push({ items, deliveries: valid, done });
        if (!this.#stageRunning) void this.#runStage();
      }),
    );
  }

  #track(task: Promise<void>): void {
    this.#inFlight.add(task);
    void task.finally(() => this.#inFlight.delete(task));
  }

  /** The store stage: one batch at a time, each made of everything that queued meanwhile. */
  async #runStage(): Promise<void> {
    this.#stageRunning = true;
    try {
      while (this.#stage.length > 0) {
        const entries = this.#stage.splice(0);
        const items =
          entries.length === 1 ? (entries[0] as StageEntry).items : entries.flatMap((e) => e.items);
        const deliveries =
          entries.length === 1 ? (entries[0] as StageEntry).deliveries : entries.flatMap((e) => e.deliveries);
        const done = (): void => {
          for (const entry of entries) entry.done();
        };
        let results: ItemResult[];
        try {
          results = await this.handler.handleBatch(items, this.#db.run);
          this.hosts.observe(items, results);
        } catch (error) {
          if (!(error instanceof ShutdownAbort))
            this.#logger.error({ err: error }, 'messages left unacknowledged after an unexpected failure');
          this.#metrics.inFlight.dec(deliveries.length);
          done();
          continue;
        }
        this.#acknowledger.acknowledgeBatch(deliveries, results, done);
      }
    } finally {
      this.#stageRunning = false;
    }
  }

  #publish(
    exchange: string,
    routingKey: string,
    content: Buffer,
    options: Options.Publish,
    channels: Channels | undefined = this.#subscription.channels,
  ): Promise<void> {
    return publishConfirmed(channels, exchange, routingKey, content, options);
  }

  /** Sent as this consumer's broker user (bridges verify it), mandatory (a return is a failure). */
  #sendCommand(command: StopCommand, ttlMs: number): Promise<void> {
    return publishCommand(
      this.#subscription.channels,
      this.#settings.amqp.commandExchange,
      command,
      ttlMs,
      this.#amqp.user,
    );
  }

  // ---- timers ------------------------------------------------------------------------------

  #pollDepth(): Promise<void> {
    const { consumer } = this.#settings;
    return pollQueueDepth(
      this.#subscription.channels,
      this.#amqp.model,
      consumer,
      this.#metrics,
      this.#logger,
    );
  }

  async #sweep(): Promise<void> {
    if (this.#sweeping || !this.#db.up || this.#subscription.stopped) return;
    this.#sweeping = true;
    try {
      await this.handler.expireCommands(this.#db.run);
    } catch (error) {
      this.#logger.warn({ err: error }, 'stop-command timeout sweep failed');
    } finally {
      this.#sweeping = false;
    }
  }
}

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
 * with one `multiple` ack up to the newest delivery tag below which everything is settled. While a
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
 */
import type { ChannelModel, ConsumeMessage, Options } from 'amqplib';
import { EventEmitter } from 'node:events';
import type { AmqpConnection } from '../amqp/connection';
import { assertTopology } from '../amqp/topology';
import type { ReadinessCheck } from '../metrics/server';
import type { StopCommand } from '../messages/command';
import { Notifier, prepareNotificationExchange, prepareNotificationQueue } from '../notify/notifier';
import { StoreUnavailableError, type InstanceStore } from '../store/types';
import { Backoff, cancellableDelay } from '../util/backoff';
import { settlesWithin } from '../util/deadline';
import type { Logger } from '../util/log';
import { nowMicros } from '../util/time';
import { Acks, type Channels, type Delivery } from './acks';
import {
  LifecycleHandler,
  ShutdownAbort,
  type ConsumerMode,
  type ItemResult,
  type StoreRunner,
  type WorkItem,
} from './handler';
import type { ConsumerMetrics, MessageOutcome } from './metrics';
import { readDelivery } from './intake';
import { deadLetterMessage, publishCommand, publishConfirmed, watchReturns } from './publishing';
import { pollQueueDepth } from './queue-depth';
import { traceHeaders } from '../tracing/consumer'; // hook (issue 13)
import type { SenderPolicy } from './senders';
import { consumerTopology, type ConsumerTopologySettings } from './topology';

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
    readonly maxFutureSkewMs: number;
    readonly shutdownTimeoutMs: number;
    readonly notifications: {
      readonly enabled: boolean;
      readonly exchange: string;
      readonly topic: string;
      readonly durable: boolean;
      readonly declareQueue: boolean;
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
  readonly #runStore: StoreRunner = (call) => this.#withDb(call);
  readonly #abort = new AbortController();
  #channels: Channels | undefined;
  #generation = 0;
  #dbUp = false;
  #dbInit: Promise<void> | undefined;
  #outage: Promise<void> | undefined;
  #consuming = false;
  #stopping: Promise<void> | undefined;
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
    const { notifications } = this.#settings.consumer;
    const notifier = new Notifier({
      enabled: notifications.enabled,
      exchange: notifications.exchange,
      topic: notifications.topic,
      persistent: notifications.durable,
      publish: (exchange, routingKey, body, publishOptions) =>
        this.#publish(exchange, routingKey, body, {
          persistent: publishOptions.persistent,
          messageId: publishOptions.messageId,
          contentType: 'application/json',
          contentEncoding: 'utf-8',
          ...traceHeaders(), // hook (issue 13): the traceparent of the message that caused it
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
      notifier,
      sendCommand: (command, ttlMs) => this.#sendCommand(command, ttlMs),
      metrics: this.#metrics,
      logger: this.#logger.child({ module: 'sync' }),
    });
  }

  /** Starts the database and broker loops in the background; readiness reports progress. */
  start(): void {
    this.#metrics.dbUp.set(0);
    this.#metrics.amqpUp.set(0);
    this.#metrics.paused.set(0);
    this.#amqp.on('up', (model) => void this.#onUp(model));
    this.#amqp.on('down', () => this.#onDown());
    this.#dbInit = this.#initDb();
    this.#amqp.start();
    const { queueDepthIntervalMs, stopTimeoutMs } = this.#settings.consumer;
    this.#timers.push(setInterval(() => void this.#pollDepth(), queueDepthIntervalMs));
    const sweepMs = Math.min(5000, Math.max(100, Math.floor(stopTimeoutMs / 4)));
    this.#timers.push(setInterval(() => void this.#sweep(), sweepMs));
    for (const timer of this.#timers) timer.unref();
  }

  get ready(): boolean {
    return this.#consuming && this.#dbUp && this.#amqp.isUp;
  }

  readiness(): ReadinessCheck[] {
    return [
      { name: 'amqp', ready: () => this.#amqp.isUp && this.#channels?.open === true },
      { name: 'db', ready: () => this.#dbUp },
      { name: 'consuming', ready: () => this.#consuming },
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
    this.#stopping ??= this.#shutdown();
    return this.#stopping;
  }

  async #shutdown(): Promise<void> {
    for (const timer of this.#timers) clearInterval(timer);
    await this.#cancelConsumers();
    this.#takeIntake();
    const drained = Promise.allSettled([...this.#inFlight]);
    if (!(await settlesWithin(drained, this.#settings.consumer.shutdownTimeoutMs)))
      this.#logger.warn(
        { inFlight: this.#inFlight.size },
        'shutdown timeout: unfinished messages will be redelivered',
      );
    this.#abort.abort();
    await this.#dbInit;
    await this.#amqp.close();
    this.#consuming = false;
    this.#metrics.amqpUp.set(0);
  }

  // ---- database ----------------------------------------------------------------------------

  async #initDb(): Promise<void> {
    const backoff = new Backoff(this.#settings.db.retryInitialDelayMs, this.#settings.db.retryMaxDelayMs);
    while (!this.#abort.signal.aborted) {
      try {
        await this.#store.migrate();
        this.#setDbUp(true);
        this.#logger.info({ store: this.#store.kind }, 'instance database ready');
        void this.#resume();
        return;
      } catch (error) {
        const delay = backoff.next();
        this.#logger.error({ err: error, retryInMs: delay }, 'instance database unavailable at start-up');
        await cancellableDelay(delay, this.#abort.signal);
      }
    }
  }

  #setDbUp(up: boolean): void {
    this.#dbUp = up;
    this.#metrics.dbUp.set(up ? 1 : 0);
  }

  /**
   * Runs `task` until it succeeds. A StoreUnavailableError, or any error while the database does not
   * answer a ping, waits for the database (pausing consumption); an error on a healthy database is
   * the message's own and is thrown.
   */
  async #withDb<T>(task: () => Promise<T>): Promise<T> {
    for (;;) {
      if (this.#outage) await this.#outage;
      if (this.#abort.signal.aborted) throw new ShutdownAbort('shutting down');
      try {
        return await task();
      } catch (error) {
        if (this.#abort.signal.aborted) throw new ShutdownAbort('shutting down');
        if (!(error instanceof StoreUnavailableError)) {
          const healthy = await this.#store.ping().then(
            () => true,
            () => false,
          );
          if (healthy) throw error;
        }
        this.#metrics.dbErrors.inc();
        await this.#dbOutage(error);
      }
    }
  }

  #dbOutage(error: unknown): Promise<void> {
    if (!this.#outage) {
      this.#setDbUp(false);
      this.#logger.error({ err: error }, 'instance database unavailable: pausing consumption');
      void this.#pause();
      this.#outage = this.#probe().finally(() => {
        this.#outage = undefined;
        void this.#resume();
      });
    }
    return this.#outage;
  }

  async #probe(): Promise<void> {
    const backoff = new Backoff(this.#settings.db.retryInitialDelayMs, this.#settings.db.retryMaxDelayMs);
    for (;;) {
      await cancellableDelay(backoff.next(), this.#abort.signal);
      if (this.#abort.signal.aborted) throw new ShutdownAbort('shutting down');
      try {
        await this.#store.ping();
        break;
      } catch (error) {
        this.#logger.debug({ err: error }, 'instance database still unavailable');
      }
    }
    this.#setDbUp(true);
    this.#logger.info('instance database back: resuming consumption');
  }

  // ---- broker ------------------------------------------------------------------------------

  async #onUp(model: ChannelModel): Promise<void> {
    if (this.#abort.signal.aborted) return;
    const generation = ++this.#generation;
    try {
      const publish = await model.createConfirmChannel();
      publish.on('error', (error: Error) => this.#logger.warn({ err: error }, 'publish channel error'));
      watchReturns(publish, (message) => {
        this.#metrics.commandsReturned.inc();
        this.#logger.error(
          { routingKey: message.fields.routingKey, command: message.properties.messageId as unknown },
          "stop command returned by the broker: no queue for that host's bridge",
        );
      });
      await assertTopology(publish, consumerTopology(this.#settings));
      const { notifications } = this.#settings.consumer;
      if (notifications.enabled) {
        await prepareNotificationExchange(model, notifications.exchange, notifications.durable);
        if (notifications.declareQueue)
          await prepareNotificationQueue(
            model,
            notifications.exchange,
            notifications.topic,
            notifications.durable,
          );
      }
      const consume = await model.createChannel();
      consume.on('error', (error: Error) => this.#logger.warn({ err: error }, 'consume channel error'));
      await consume.prefetch(this.#settings.consumer.prefetch);
      const channels: Channels = {
        generation,
        consume,
        publish,
        depth: undefined,
        acks: undefined,
        tags: [],
        subscribing: false,
        resumeAgain: false,
        open: true,
      };
      channels.acks = new Acks(
        channels,
        Math.max(16, Math.floor(this.#settings.consumer.prefetch / 4)),
        (deliveries) => {
          for (const delivery of deliveries) if (delivery.info) this.emit('processed', delivery.info);
        },
        (error) => this.#logger.debug({ err: error }, 'ack failed; the broker redelivers the messages'),
      );
      const closed = (): void => {
        if (!channels.open) return;
        channels.open = false;
        if (this.#channels === channels) {
          this.#setConsuming(false);
          this.#logger.warn('broker channel closed; reconnecting');
          this.#amqp.reset('consumer channel closed');
        }
      };
      consume.on('close', closed);
      publish.on('close', closed);
      if (generation !== this.#generation || this.#abort.signal.aborted) {
        await model.close().catch(() => undefined);
        return;
      }
      this.#channels = channels;
      this.#metrics.amqpUp.set(1);
      this.#logger.info({ queue: this.#settings.consumer.queue }, 'consumer topology declared');
      await this.#resume();
      void this.#pollDepth();
    } catch (error) {
      this.#logger.error({ err: error }, 'cannot set up the consumer on the broker; reconnecting');
      this.#amqp.reset('consumer setup failed');
    }
  }

  #onDown(): void {
    if (this.#channels) this.#channels.open = false;
    this.#channels = undefined;
    this.#metrics.amqpUp.set(0);
    this.#setConsuming(false);
  }

  #setConsuming(active: boolean): void {
    if (this.#consuming === active) return;
    this.#consuming = active;
    this.#metrics.paused.set(!active && !this.#dbUp ? 1 : 0);
    this.emit('consuming', active);
  }

  /** Starts consuming when the broker is up, the database answers and we are not stopping. */
  async #resume(): Promise<void> {
    const channels = this.#channels;
    if (!channels?.open || !this.#dbUp || this.#outage || this.#stopping) return;
    if (channels.subscribing) {
      // A database outage may begin and end while this subscription is being set up and then
      // cancelled; the outage's own resume would be lost without this second look.
      channels.resumeAgain = true;
      return;
    }
    if (channels.tags.length > 0) return;
    const { queue, resultQueue } = this.#settings.consumer;
    channels.subscribing = true;
    channels.resumeAgain = false;
    try {
      const lifecycle = await channels.consume.consume(queue, (message) => {
        if (message) this.#accept('lifecycle', channels, message);
        else this.#cancelledByBroker(queue);
      });
      const results = await channels.consume.consume(resultQueue, (message) => {
        if (message) this.#accept('result', channels, message);
        else this.#cancelledByBroker(resultQueue);
      });
      channels.tags = [lifecycle.consumerTag, results.consumerTag];
      this.#setConsuming(true);
      this.#logger.info({ queue, resultQueue, prefetch: this.#settings.consumer.prefetch }, 'consuming');
      // The database may have gone away while we subscribed.
      if (!this.#dbUp || this.#outage) await this.#pause();
    } catch (error) {
      this.#logger.error({ err: error }, 'cannot consume; reconnecting');
      this.#amqp.reset('consume failed');
    } finally {
      channels.subscribing = false;
    }
    if (channels.resumeAgain && channels.tags.length === 0) void this.#resume();
  }

  /**
   * The broker cancelled a consumer (its queue was deleted, or a quorum queue lost its members):
   * reconnect, which re-declares the topology and subscribes again.
   */
  #cancelledByBroker(queue: string): void {
    if (this.#stopping) return;
    this.#logger.warn({ queue }, 'the broker cancelled the consumer; reconnecting');
    this.#setConsuming(false);
    this.#amqp.reset('consumer cancelled by the broker');
  }

  /** Cancels the consumers (messages in hand stay ours, unacknowledged). */
  async #pause(): Promise<void> {
    this.#setConsuming(false);
    this.#metrics.paused.set(this.#dbUp ? 0 : 1);
    await this.#cancelConsumers();
  }

  async #cancelConsumers(): Promise<void> {
    const channels = this.#channels;
    if (!channels) return;
    const tags = channels.tags;
    channels.tags = [];
    this.#setConsuming(false);
    for (const tag of tags) await channels.consume.cancel(tag).catch(() => undefined);
  }

  // ---- messages ----------------------------------------------------------------------------

  #accept(queue: 'lifecycle' | 'result', channels: Channels, message: ConsumeMessage): void {
    const delivery: Delivery = { queue, channels, message, state: 0, behind: false, info: undefined };
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
    for (const delivery of deliveries) {
      const read = readDelivery(
        delivery.queue,
        delivery.message,
        nowUs,
        this.#settings.consumer,
        this.#metrics,
      );
      if ('reason' in read) this.#track(this.#deadLetter(delivery, read.reason, read.truncated === true));
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
          results = await this.handler.handleBatch(items, this.#runStore);
        } catch (error) {
          if (!(error instanceof ShutdownAbort))
            this.#logger.error({ err: error }, 'messages left unacknowledged after an unexpected failure');
          this.#metrics.inFlight.dec(deliveries.length);
          done();
          continue;
        }
        this.#settle(deliveries, results, done);
      }
    } finally {
      this.#stageRunning = false;
    }
  }

  /**
   * After a batch's commit: dead-letters the messages that failed on a healthy database, and
   * acknowledges the rest once everything the batch published is confirmed (or has failed).
   */
  #settle(deliveries: readonly Delivery[], results: readonly ItemResult[], done: () => void): void {
    const applied: Delivery[] = [];
    const published: Array<Promise<void>> = [];
    const outcomes = new Map<MessageOutcome, number>();
    for (let index = 0; index < deliveries.length; index += 1) {
      const delivery = deliveries[index] as Delivery;
      const result = results[index] as ItemResult;
      if (!result.ok) {
        this.#track(this.#deadLetter(delivery, `processing failed: ${result.error.message}`));
        continue;
      }
      const messageId = delivery.message.properties.messageId as unknown;
      delivery.info = {
        queue: delivery.queue,
        messageId: typeof messageId === 'string' ? messageId : undefined,
        outcome: result.outcome,
      };
      outcomes.set(result.outcome, (outcomes.get(result.outcome) ?? 0) + 1);
      if (result.published) published.push(result.published);
      applied.push(delivery);
    }
    const finish = (): void => {
      for (const [outcome, count] of outcomes) this.#metrics.messages.inc({ outcome }, count);
      this.#metrics.inFlight.dec(applied.length);
      const byChannels = new Map<Channels, Delivery[]>();
      for (const delivery of applied) {
        const list = byChannels.get(delivery.channels);
        if (list) list.push(delivery);
        else byChannels.set(delivery.channels, [delivery]);
      }
      for (const [channels, list] of byChannels) channels.acks?.complete(list);
      done();
    };
    if (published.length === 0) finish();
    else void Promise.all(published).then(finish, finish);
  }

  /**
   * Publishes the message unchanged to the dead-letter exchange with the reason in a header (on the
   * confirm channel), then acknowledges the original. If the dead-letter publish fails, the original
   * is returned to the queue instead (its delivery limit bounds the retries), so nothing is lost.
   */
  async #deadLetter(delivery: Delivery, reason: string, truncate = false): Promise<void> {
    const { queue, channels, message } = delivery;
    const { consumer } = this.#settings;
    const properties = message.properties;
    const { content, options } = deadLetterMessage(
      message,
      reason,
      queue === 'lifecycle' ? consumer.queue : consumer.resultQueue,
      truncate,
    );
    try {
      await this.#publish(consumer.deadLetterExchange, message.fields.routingKey, content, options, channels);
    } catch (error) {
      this.#logger.error({ err: error, reason }, 'cannot dead-letter a message; returning it to its queue');
      this.#metrics.inFlight.dec();
      if (channels.open) {
        try {
          channels.consume.nack(message, false, true);
        } catch {
          // the channel closed meanwhile: the broker returns the message itself
        }
      }
      channels.acks?.settled(delivery);
      return;
    }
    this.#metrics.messages.inc({ outcome: 'dead_lettered' });
    this.#logger.warn(
      { reason, routingKey: message.fields.routingKey, messageId: properties.messageId as unknown },
      'message dead-lettered',
    );
    this.#metrics.inFlight.dec();
    delivery.info = {
      queue,
      messageId: typeof properties.messageId === 'string' ? properties.messageId : undefined,
      outcome: 'dead_lettered',
      reason,
    };
    channels.acks?.complete([delivery]);
  }

  #publish(
    exchange: string,
    routingKey: string,
    content: Buffer,
    options: Options.Publish,
    channels: Channels | undefined = this.#channels,
  ): Promise<void> {
    return publishConfirmed(channels, exchange, routingKey, content, options);
  }

  /** Sent as this consumer's broker user (bridges verify it), mandatory (a return is a failure). */
  #sendCommand(command: StopCommand, ttlMs: number): Promise<void> {
    return publishCommand(
      this.#channels,
      this.#settings.amqp.commandExchange,
      command,
      ttlMs,
      this.#amqp.user,
    );
  }

  // ---- timers ------------------------------------------------------------------------------

  #pollDepth(): Promise<void> {
    const { consumer } = this.#settings;
    return pollQueueDepth(this.#channels, this.#amqp.model, consumer, this.#metrics, this.#logger);
  }

  async #sweep(): Promise<void> {
    if (this.#sweeping || !this.#dbUp || this.#outage || this.#stopping) return;
    this.#sweeping = true;
    try {
      await this.handler.expireCommands(this.#runStore);
    } catch (error) {
      this.#logger.warn({ err: error }, 'stop-command timeout sweep failed');
    } finally {
      this.#sweeping = false;
    }
  }
}

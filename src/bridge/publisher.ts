/**
 * Publishes the outbox to the broker on a confirm channel: persistent, mandatory, many publishes in
 * flight (bounded by maxInFlight), in outbox order on one channel so per-domain order holds on the
 * wire. A record leaves the outbox only when the broker acks it. A nack or a lost channel restarts
 * publishing from the first unconfirmed record (at-least-once; consumers deduplicate by event_id and
 * seq), so nothing accepted is lost. Reopening after a nack (or a channel that closed on its own)
 * backs off exponentially, so a queue that keeps rejecting (x-overflow: reject-publish) or a
 * persistent broker error is not a hot loop of duplicates into the other bound queues. Topology is
 * declared (or, with declareTopology false, checked passively) on every (re)connect.
 */
import type { ChannelModel, ConfirmChannel, Message } from 'amqplib';
import type { AmqpConnection } from '../amqp/connection';
import { MissingTopologyError, prepareTopology, type Topology } from '../amqp/topology';
import { settlesWithin } from '../util/deadline';
import type { Logger } from '../util/log';
import { APP_ID } from '../messages/lifecycle';
import type { Outbox, OutboxRecord } from './outbox';
import type { BridgeMetrics } from './metrics';
import type { PublishHooks } from './publish-hooks'; // hook: formats and tracing (issue 13)

export interface PublisherOptions {
  readonly connection: AmqpConnection;
  readonly outbox: Outbox;
  readonly topology: Topology;
  /** false: check the topology passively instead of declaring it (a bridge configures nothing shared). Default true. */
  readonly declareTopology?: boolean;
  readonly maxInFlight: number;
  readonly metrics: BridgeMetrics;
  readonly logger: Logger;
  /** First delay before reopening the channel after a nack; doubles per nack up to reopenMaxDelayMs. */
  readonly reopenInitialDelayMs?: number;
  readonly reopenMaxDelayMs?: number;
  /** Content type, headers (format, traceparent) and spans per record: publish-hooks.ts. */
  readonly hooks?: PublishHooks; // hook (issue 13)
}

/** Confirms in a row on one channel after which the nack backoff starts again from its first step. */
const CONFIRM_STREAK_RESET = 100;

export class Publisher {
  readonly #options: PublisherOptions;
  #channel: ConfirmChannel | undefined;
  /** Bumped for every channel: confirms of an older channel are ignored. */
  #generation = 0;
  /** Highest outbox id written to the current channel. */
  #cursor = 0;
  #inFlight = 0;
  #waitingForDrain = false;
  #pumping = false;
  #closed = false;
  #idleWaiters: Array<() => void> = [];
  /** After a confirm, publish more only once this many slots are free (one read refills many). */
  readonly #refill: number;
  /** Confirms by transition not yet added to the counter: one labelled increment per burst of acks. */
  readonly #published = new Map<string, number>();
  #countScheduled = false;
  /** Nacks since the last confirm streak: the reopen delay doubles with each. */
  #nackStreak = 0;
  /** Nacks since start, for the log. */
  #nacks = 0;
  /** Confirms in a row on the current channel. */
  #confirmStreak = 0;
  #reopenTimer: NodeJS.Timeout | undefined;

  constructor(options: PublisherOptions) {
    this.#options = options;
    this.#refill = Math.max(1, Math.min(64, Math.floor(options.maxInFlight / 4)));
    options.outbox.onAppend(() => this.#pump());
    options.connection.on('up', (model) => {
      this.#cancelReopen();
      void this.#openChannel(model);
    });
    options.connection.on('down', () => this.#dropChannel('connection lost'));
    options.connection.on('unblocked', () => this.#pump());
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  get ready(): boolean {
    return this.#channel !== undefined;
  }

  /** Resolves when the outbox is empty (everything confirmed) or after timeoutMs; true if empty. */
  async waitIdle(timeoutMs: number): Promise<boolean> {
    if (this.#options.outbox.depth === 0) return true;
    const idle = new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
    return settlesWithin(idle, timeoutMs);
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#cancelReopen();
    const channel = this.#channel;
    this.#dropChannel('closing');
    if (channel) await channel.close().catch(() => undefined);
  }

  async #openChannel(model: ChannelModel): Promise<void> {
    const { logger, topology } = this.#options;
    if (this.#closed) return;
    let channel: ConfirmChannel;
    try {
      channel = await model.createConfirmChannel();
      await prepareTopology(channel, topology, this.#options.declareTopology ?? true);
    } catch (error) {
      // A setup that started on a connection which dropped meanwhile fails too; resetting then would
      // close the newer, healthy connection (whose own 'up' opens the channel).
      if (this.#options.connection.model !== model) {
        logger.info({ err: error }, 'publishing channel setup failed on a connection that is gone; ignored');
        return;
      }
      if (error instanceof MissingTopologyError) {
        // The connection is fine; what is missing is the operator's to create: check again later.
        logger.error(
          { err: error },
          'the lifecycle topology is missing; nothing is published until it exists',
        );
        this.#scheduleReopen(2000);
        return;
      }
      logger.error(
        { err: error },
        'cannot open the publishing channel or declare the topology; reconnecting',
      );
      this.#options.connection.reset('topology declaration failed');
      return;
    }
    if (this.#closed || this.#channel || this.#options.connection.model !== model) {
      // Closed, another open won, or the connection is gone: this channel is not needed.
      await channel.close().catch(() => undefined);
      return;
    }
    const generation = ++this.#generation;
    channel.on('error', (error: Error) => logger.warn({ err: error }, 'publishing channel error'));
    channel.on('close', () => {
      if (this.#generation !== generation) return;
      this.#dropChannel('channel closed');
      // A channel-level error (e.g. an exchange deleted under us) leaves the connection up: reopen.
      this.#scheduleReopen(250);
    });
    channel.on('drain', () => {
      this.#waitingForDrain = false;
      this.#pump();
    });
    channel.on('return', (message: Message) => {
      // Only reachable when the alternate exchange is missing: a message no binding matched.
      this.#options.metrics.publishFailures.inc({ reason: 'unroutable' });
      logger.warn(
        { routingKey: message.fields.routingKey, messageId: message.properties.messageId as unknown },
        'broker returned an unroutable message (no alternate exchange?)',
      );
    });
    this.#channel = channel;
    this.#cursor = 0; // republish everything unconfirmed, in order
    this.#inFlight = 0;
    this.#confirmStreak = 0;
    this.#waitingForDrain = false;
    logger.info({ unconfirmed: this.#options.outbox.depth }, 'publishing channel open');
    this.#pump();
  }

  #cancelReopen(): void {
    clearTimeout(this.#reopenTimer);
    this.#reopenTimer = undefined;
  }

  /**
   * Reopens the channel on the current connection after max(minDelayMs, the nack backoff). A new
   * connection ('up') opens its channel itself and cancels this.
   */
  #scheduleReopen(minDelayMs: number): number | undefined {
    if (this.#closed || this.#reopenTimer) return undefined;
    const delay = Math.max(minDelayMs, this.#nackDelay());
    this.#reopenTimer = setTimeout(() => {
      this.#reopenTimer = undefined;
      const model = this.#options.connection.model;
      if (!this.#closed && !this.#channel && model) void this.#openChannel(model);
    }, delay);
    this.#reopenTimer.unref();
    return delay;
  }

  /** 0 before any nack, then initial, doubling per nack in a row, capped. */
  #nackDelay(): number {
    if (this.#nackStreak === 0) return 0;
    const initial = this.#options.reopenInitialDelayMs ?? 100;
    const max = this.#options.reopenMaxDelayMs ?? 5000;
    return Math.min(max, initial * 2 ** Math.min(this.#nackStreak - 1, 30));
  }

  #dropChannel(reason: string): void {
    if (!this.#channel) return;
    this.#channel = undefined;
    this.#generation += 1;
    if (this.#inFlight > 0) {
      this.#options.metrics.publishFailures.inc({ reason: 'channel_closed' }, this.#inFlight);
      this.#options.logger.warn(
        { inFlight: this.#inFlight, reason },
        'channel gone with publishes unconfirmed; they will be republished',
      );
    }
    this.#inFlight = 0;
  }

  #pump(): void {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      const { outbox, maxInFlight, connection } = this.#options;
      while (
        this.#channel &&
        !this.#waitingForDrain &&
        !connection.isBlocked &&
        this.#inFlight < maxInFlight
      ) {
        const records = outbox.readAfter(this.#cursor, Math.min(512, maxInFlight - this.#inFlight));
        if (records.length === 0) break;
        for (const record of records) {
          if (!this.#publish(this.#channel, record)) {
            this.#waitingForDrain = true;
            break;
          }
        }
      }
    } finally {
      this.#pumping = false;
    }
  }

  #publish(channel: ConfirmChannel, record: OutboxRecord): boolean {
    const generation = this.#generation;
    this.#cursor = record.id;
    this.#inFlight += 1;
    const wire = this.#options.hooks?.properties(record); // hook (issue 13)
    this.#options.hooks?.published(record); // hook (issue 13)
    return channel.publish(
      record.exchange,
      record.routingKey,
      record.body,
      {
        persistent: true,
        mandatory: true,
        // The broker checks user_id equals this connection's user: consumers verify the sender by it.
        ...(this.#options.connection.user ? { userId: this.#options.connection.user } : {}),
        contentType: wire?.contentType ?? 'application/json', // hook (issue 13)
        ...(wire ? { headers: wire.headers } : {}), // hook (issue 13)
        contentEncoding: 'utf-8',
        messageId: record.messageId,
        timestamp: Math.floor(Date.now() / 1000),
        appId: APP_ID,
        type: record.type,
      },
      (error: unknown) => this.#onConfirm(record, generation, error),
    );
  }

  #onConfirm(record: OutboxRecord, generation: number, error: unknown): void {
    if (generation !== this.#generation) return; // from a channel that is gone; republished already
    this.#inFlight -= 1;
    const { metrics, outbox, logger } = this.#options;
    if (error) {
      metrics.publishFailures.inc({ reason: 'nack' });
      this.#nacks += 1;
      this.#nackStreak += 1;
      // Restart from the first unconfirmed record so order is kept; close the channel to get a fresh
      // one, after a delay that grows with every nack in a row (the record stays in the outbox).
      const channel = this.#channel;
      this.#dropChannel('nack');
      channel?.close().catch(() => undefined);
      const retryInMs = this.#scheduleReopen(0);
      logger.warn(
        {
          id: record.id,
          routingKey: record.routingKey,
          nacks: this.#nacks,
          inARow: this.#nackStreak,
          retryInMs,
        },
        'broker nacked a publish; republishing from the first unconfirmed',
      );
      return;
    }
    outbox.confirm(record.id);
    this.#options.hooks?.confirmed(record); // hook (issue 13)
    // A streak of confirms (or an outbox caught up) ends the nack backoff.
    this.#confirmStreak += 1;
    if (this.#confirmStreak >= CONFIRM_STREAK_RESET || outbox.depth === 0) this.#nackStreak = 0;
    this.#countPublished(record.transition);
    metrics.eventToConfirm.observe(Math.max(0, Date.now() / 1000 - record.occurredMicros / 1e6));
    if (outbox.depth === 0 && this.#idleWaiters.length > 0) {
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const wake of waiters) wake();
    }
    // The broker acks in bursts; refilling per ack would read the outbox once per message.
    if (this.#inFlight <= this.#options.maxInFlight - this.#refill) this.#pump();
  }

  #countPublished(transition: string): void {
    this.#published.set(transition, (this.#published.get(transition) ?? 0) + 1);
    if (this.#countScheduled) return;
    this.#countScheduled = true;
    queueMicrotask(() => {
      this.#countScheduled = false;
      for (const [label, count] of this.#published)
        this.#options.metrics.eventsPublished.inc({ transition: label }, count);
      this.#published.clear();
    });
  }
}

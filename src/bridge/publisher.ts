/**
 * Publishes the outbox to the broker on a confirm channel: persistent, mandatory, many publishes in
 * flight (bounded by maxInFlight), in outbox order on one channel so per-domain order holds on the
 * wire. A record leaves the outbox only when the broker acks it. A nack or a lost channel restarts
 * publishing from the first unconfirmed record (at-least-once; consumers deduplicate by event_id and
 * seq), so nothing accepted is lost. Reopening after a nack (or a channel that closed on its own)
 * backs off exponentially, so a queue that keeps rejecting (x-overflow: reject-publish) or a
 * persistent broker error is not a hot loop of duplicates into the other bound queues. Topology is
 * declared (or, with declareTopology false, checked passively) on every (re)connect. The channel's
 * life is one explicit state (src/bridge/publisher-state.ts).
 */
import type { ChannelModel, ConfirmChannel, Message } from 'amqplib';
import type { AmqpConnection } from '../amqp/connection';
import { MissingTopologyError, prepareTopology, type Topology } from '../amqp/topology';
import { settlesWithin } from '../util/deadline';
import type { Logger } from '../util/log';
import { APP_ID } from '../messages/lifecycle';
import type { Outbox, OutboxRecord } from './outbox';
import type { BridgeMetrics } from './metrics';
import { PublisherLifecycle, type OpenChannel } from './publisher-state';
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
  readonly hooks?: PublishHooks;
}

/** Confirms in a row on one channel after which the nack backoff starts again from its first step. */
const CONFIRM_STREAK_RESET = 100;

export class Publisher {
  readonly #options: PublisherOptions;
  /** The channel's life: idle, opening, open (with what was written on it), reopenWait, closed. */
  readonly #life = new PublisherLifecycle<ChannelModel, ConfirmChannel>();
  #pumping = false;
  #idleWaiters: Array<() => void> = [];
  /** After a confirm, publish more only once this many slots are free (one read refills many). */
  readonly #refill: number;
  /** Confirms by transition not yet added to the counter: one labelled increment per burst of acks. */
  readonly #published = new Map<string, number>();
  #countScheduled = false;
  /** Nacks since the last confirm streak (across channels): the reopen delay doubles with each. */
  #nackStreak = 0;
  /** Nacks since start, for the log. */
  #nacks = 0;

  constructor(options: PublisherOptions) {
    this.#options = options;
    this.#refill = Math.max(1, Math.min(64, Math.floor(options.maxInFlight / 4)));
    options.outbox.onAppend(() => this.#pump());
    options.connection.on('up', (model) => {
      // Closed: nothing to do. Open: the live channel stays (a connection reports 'down' before a new 'up').
      const kind = this.#life.kind;
      if (kind !== 'closed' && kind !== 'open') void this.#openChannel(model);
    });
    options.connection.on('down', () => {
      if (this.#life.kind === 'closed') return;
      const lost = this.#life.connectionDown();
      if (lost) this.#reportLost(lost, 'connection lost');
    });
    options.connection.on('unblocked', () => this.#pump());
  }

  get inFlight(): number {
    return this.#life.open?.inFlight ?? 0;
  }

  get ready(): boolean {
    return this.#life.kind === 'open';
  }

  /** Resolves when the outbox is empty (everything confirmed) or after timeoutMs; true if empty. */
  async waitIdle(timeoutMs: number): Promise<boolean> {
    if (this.#options.outbox.depth === 0) return true;
    const idle = new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
    return settlesWithin(idle, timeoutMs);
  }

  async close(): Promise<void> {
    if (this.#life.kind === 'closed') return;
    const from = this.#life.close();
    if (from.kind !== 'open') return;
    this.#reportLost(from, 'closing');
    await from.channel.close().catch(() => undefined);
  }

  async #openChannel(model: ChannelModel): Promise<void> {
    const { logger, topology, connection } = this.#options;
    const attempt = this.#life.opening(model);
    let channel: ConfirmChannel;
    try {
      channel = await model.createConfirmChannel();
      await prepareTopology(channel, topology, this.#options.declareTopology ?? true);
    } catch (error) {
      const current = this.#life.isOpening(attempt);
      if (current) this.#life.abandon(attempt);
      // A setup that started on a connection which dropped meanwhile fails too; resetting then would
      // close the newer, healthy connection (whose own 'up' opens the channel).
      if (!current || connection.model !== model) {
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
      connection.reset('topology declaration failed');
      return;
    }
    if (!this.#life.isOpening(attempt) || connection.model !== model) {
      // Closed, superseded by a newer connection's setup, or the connection is gone: not needed.
      if (this.#life.isOpening(attempt)) this.#life.abandon(attempt);
      await channel.close().catch(() => undefined);
      return;
    }
    const open = this.#life.opened(attempt, channel);
    channel.on('error', (error: Error) => logger.warn({ err: error }, 'publishing channel error'));
    channel.on('close', () => {
      if (!this.#life.isCurrent(open)) return;
      this.#reportLost(this.#life.channelLost(), 'channel closed');
      // A channel-level error (e.g. an exchange deleted under us) leaves the connection up: reopen.
      this.#scheduleReopen(250);
    });
    channel.on('drain', () => {
      if (!this.#life.isCurrent(open)) return;
      open.waitingForDrain = false;
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
    // A new channel republishes everything unconfirmed, in order (its cursor starts at 0).
    logger.info({ unconfirmed: this.#options.outbox.depth }, 'publishing channel open');
    this.#pump();
  }

  /**
   * From idle: reopens the channel on the current connection after max(minDelayMs, the nack
   * backoff). A new connection ('up') opens its channel itself and cancels this. Returns the delay,
   * or undefined when there is nothing to reopen (closed, or a reopen or a setup already pending).
   */
  #scheduleReopen(minDelayMs: number): number | undefined {
    if (this.#life.kind !== 'idle') return undefined;
    const delay = Math.max(minDelayMs, this.#nackDelay());
    const timer = setTimeout(() => {
      const state = this.#life.state;
      if (state.kind !== 'reopenWait' || state.timer !== timer) return;
      this.#life.reopenDue();
      const model = this.#options.connection.model;
      if (model) void this.#openChannel(model);
    }, delay);
    timer.unref();
    this.#life.waitToReopen(timer);
    return delay;
  }

  /** 0 before any nack, then initial, doubling per nack in a row, capped. */
  #nackDelay(): number {
    if (this.#nackStreak === 0) return 0;
    const initial = this.#options.reopenInitialDelayMs ?? 100;
    const max = this.#options.reopenMaxDelayMs ?? 5000;
    return Math.min(max, initial * 2 ** Math.min(this.#nackStreak - 1, 30));
  }

  /** A channel left the open state: what it had in flight is republished on the next one. */
  #reportLost(lost: OpenChannel<ConfirmChannel>, reason: string): void {
    if (lost.inFlight === 0) return;
    this.#options.metrics.publishFailures.inc({ reason: 'channel_closed' }, lost.inFlight);
    this.#options.logger.warn(
      { inFlight: lost.inFlight, reason },
      'channel gone with publishes unconfirmed; they will be republished',
    );
  }

  #pump(): void {
    if (this.#pumping) return;
    const open = this.#life.open;
    if (!open) return;
    this.#pumping = true;
    try {
      const { outbox, maxInFlight, connection } = this.#options;
      while (
        this.#life.isCurrent(open) &&
        !open.waitingForDrain &&
        !connection.isBlocked &&
        open.inFlight < maxInFlight
      ) {
        const records = outbox.readAfter(open.cursor, Math.min(512, maxInFlight - open.inFlight));
        if (records.length === 0) break;
        for (const record of records) {
          if (!this.#publish(open, record)) {
            open.waitingForDrain = true;
            break;
          }
        }
      }
    } finally {
      this.#pumping = false;
    }
  }

  #publish(open: OpenChannel<ConfirmChannel>, record: OutboxRecord): boolean {
    open.cursor = record.id;
    open.inFlight += 1;
    const wire = this.#options.hooks?.properties(record);
    this.#options.hooks?.published(record);
    return open.channel.publish(
      record.exchange,
      record.routingKey,
      record.body,
      {
        persistent: true,
        mandatory: true,
        // The broker checks user_id equals this connection's user: consumers verify the sender by it.
        ...(this.#options.connection.user ? { userId: this.#options.connection.user } : {}),
        contentType: wire?.contentType ?? 'application/json',
        ...(wire ? { headers: wire.headers } : {}),
        contentEncoding: 'utf-8',
        messageId: record.messageId,
        timestamp: Math.floor(Date.now() / 1000),
        appId: APP_ID,
        type: record.type,
      },
      (error: unknown) => this.#onConfirm(open, record, error),
    );
  }

  #onConfirm(open: OpenChannel<ConfirmChannel>, record: OutboxRecord, error: unknown): void {
    if (!this.#life.isCurrent(open)) return; // from a channel that is gone; republished already
    open.inFlight -= 1;
    const { metrics, outbox, logger } = this.#options;
    if (error) {
      metrics.publishFailures.inc({ reason: 'nack' });
      this.#nacks += 1;
      this.#nackStreak += 1;
      // Restart from the first unconfirmed record so order is kept; close the channel to get a fresh
      // one, after a delay that grows with every nack in a row (the record stays in the outbox).
      this.#reportLost(this.#life.channelLost(), 'nack');
      open.channel.close().catch(() => undefined);
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
    this.#options.hooks?.confirmed(record);
    // A streak of confirms (or an outbox caught up) ends the nack backoff.
    open.confirmStreak += 1;
    if (open.confirmStreak >= CONFIRM_STREAK_RESET || outbox.depth === 0) this.#nackStreak = 0;
    this.#countPublished(record.transition);
    metrics.eventToConfirm.observe(Math.max(0, Date.now() / 1000 - record.occurredMicros / 1e6));
    if (outbox.depth === 0 && this.#idleWaiters.length > 0) {
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const wake of waiters) wake();
    }
    // The broker acks in bursts; refilling per ack would read the outbox once per message.
    if (open.inFlight <= this.#options.maxInFlight - this.#refill) this.#pump();
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

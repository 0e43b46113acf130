/**
 * The bridge's two AMQP channels for commands, kept up across reconnects: a consumer channel on the
 * host's command queue (prefetch 32) and a confirm channel for results. A channel that closes on its
 * own while the connection stays up is reopened; a channel that cannot be created on the live
 * connection resets it, one that fails on a connection already gone is ignored (a newer 'up' opens
 * its own). A command queue that is missing or refused (the bridge declares passively by default) or
 * a consumer the broker cancels (queue deleted, node failover: amqplib calls the consume callback with
 * null) is retried on a new channel with a growing delay, without dropping the connection the
 * lifecycle publisher shares. Results are published mandatory: one the broker returns (no queue
 * bound for it) counts as not delivered. Settling (ack/nack) never throws: on a dead channel the
 * broker redelivers by itself. Both channels' life is one explicit state (./channel-state.ts).
 */
import type { Channel, ChannelModel, ConfirmChannel, ConsumeMessage, Message, Options } from 'amqplib';
import type { AmqpConnection } from '../../amqp/connection';
import type { Logger } from '../../util/log';
import { SubscriptionLifecycle } from './channel-state';

export interface CommandSubscriptionOptions {
  readonly amqp: AmqpConnection;
  readonly logger: Logger;
  readonly queue: string;
  /** Declares (or checks) what the consumer channel needs before consuming. */
  readonly prepare: (channel: Channel) => Promise<void>;
  /** Called for every delivery; must not throw (the caller settles the message). */
  readonly onMessage: (channel: Channel, message: ConsumeMessage) => void;
}

/** A channel that closes on its own (a channel-level error) while the connection stays up is reopened. */
const REOPEN_DELAY_MS = 250;
/** Re-subscribing after a cancel or a refused queue: from RETRY_MIN_MS, doubling up to RETRY_MAX_MS. */
const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 30_000;
const PREFETCH = 32;

export type Settlement = 'ack' | 'requeue' | 'drop';

export class CommandSubscription {
  readonly #options: CommandSubscriptionOptions;
  /** Both channels' life: consumer idle/opening/consuming/waiting/stopped, results none/opening/open/waiting. */
  readonly #life = new SubscriptionLifecycle<ChannelModel, Channel, ConfirmChannel>();
  /** The next re-subscribe delay after a refusal or a cancel (reset once consuming). */
  #retryMs = RETRY_MIN_MS;

  constructor(options: CommandSubscriptionOptions) {
    this.#options = options;
    options.amqp.on('up', (model) => {
      if (this.#life.stopped) return;
      // A connection reports 'down' before a new 'up'; without one, what is open belonged to the old connection.
      const { consumer, results } = this.#life.state;
      if (consumer.kind === 'consuming' || results.kind === 'open') this.#life.connectionDown();
      void this.#openResults(model);
      void this.#openConsumer(model);
    });
    options.amqp.on('down', () => this.#life.connectionDown());
  }

  /** Stops taking deliveries (cancels the consumer); results can still be published. */
  async stop(): Promise<void> {
    if (this.#life.stopped) return;
    const from = this.#life.stop();
    if (from.kind === 'consuming') await from.channel.cancel(from.tag).catch(() => undefined);
  }

  /**
   * Acks or nacks on the channel the command came from. amqplib throws on a closed channel (the
   * connection dropped while the command ran): the broker then redelivers the command by itself.
   */
  settle(channel: Channel, message: ConsumeMessage, how: Settlement): void {
    try {
      if (how === 'ack') channel.ack(message);
      else channel.nack(message, false, how === 'requeue');
    } catch (error) {
      this.#options.logger.warn(
        { err: error, how },
        'command channel closed before the command was settled; the broker redelivers it',
      );
    }
  }

  /**
   * Publishes mandatory on the confirm channel; resolves when the broker confirmed a routed message,
   * rejects when it nacked, returned it (no queue bound: the broker sends basic.return before the
   * ack) or the channel closed first. options.messageId must be set (it identifies the return).
   */
  publish(exchange: string, routingKey: string, content: Buffer, options: Options.Publish): Promise<void> {
    const open = this.#life.resultsOpen;
    if (!open) return Promise.reject(new Error('broker not connected'));
    const { channel, returned } = open;
    const id = String(options.messageId);
    return new Promise((resolve, reject) => {
      try {
        channel.publish(exchange, routingKey, content, { ...options, mandatory: true }, (error: unknown) => {
          if (error) reject(error instanceof Error ? error : new Error('nacked'));
          else if (returned.delete(id)) reject(new UnroutableError(routingKey));
          else resolve();
        });
      } catch (error) {
        reject(error instanceof Error ? error : new Error(String(error)));
      }
    });
  }

  /** Not stopped, and `model` is still the live connection (a stale failure must not reset a newer one). */
  #isLive(model: ChannelModel): boolean {
    return !this.#life.stopped && this.#options.amqp.model === model;
  }

  /** A channel could not be created: reset the connection if it is the live one (and the setup current). */
  #setupFailed(model: ChannelModel, current: boolean, what: string, error: unknown): void {
    const { logger, amqp } = this.#options;
    if (!current || !this.#isLive(model)) {
      logger.info({ err: error }, `${what} failed on a connection that is gone; ignored`);
      return;
    }
    logger.error({ err: error }, `cannot set up the ${what}; reconnecting`);
    amqp.reset(`${what} failed`);
  }

  async #openResults(model: ChannelModel): Promise<void> {
    const { logger } = this.#options;
    const attempt = this.#life.resultsOpening(model);
    let results: ConfirmChannel;
    try {
      results = await model.createConfirmChannel();
    } catch (error) {
      const current = this.#life.isResults(attempt);
      if (current) this.#life.resultsAbandon(attempt);
      this.#setupFailed(model, current, 'command result channel', error);
      return;
    }
    // Without an 'error' listener amqplib throws the channel error inside the connection (tearing it down).
    results.on('error', (error: Error) => logger.warn({ err: error }, 'command result channel error'));
    const returned = new Set<string>();
    results.on('return', (message: Message) => returned.add(String(message.properties.messageId)));
    results.on('close', () => {
      const state = this.#life.results;
      if (state.kind !== 'open' || state.channel !== results) return;
      this.#life.resultsLost(state);
      this.#reopenResultsLater(model);
    });
    if (!this.#life.isResults(attempt) || !this.#isLive(model)) {
      if (this.#life.isResults(attempt)) this.#life.resultsAbandon(attempt);
      await results.close().catch(() => undefined);
      return;
    }
    this.#life.resultsOpened(attempt, results, returned);
  }

  /** Reopens a result channel that closed while its connection stayed up (after a short delay). */
  #reopenResultsLater(model: ChannelModel): void {
    if (!this.#isLive(model) || this.#life.results.kind !== 'none') return;
    const timer = setTimeout(() => {
      const state = this.#life.results;
      if (state.kind !== 'waiting' || state.timer !== timer) return;
      this.#life.resultsReopenDue();
      if (this.#isLive(model)) void this.#openResults(model);
    }, REOPEN_DELAY_MS);
    timer.unref();
    this.#life.resultsWait(model, timer);
  }

  /** Opens the consumer channel again later, each time later (a missing queue is not a hot loop). */
  #retryConsumer(model: ChannelModel): void {
    if (!this.#isLive(model)) return;
    const delay = this.#retryMs;
    this.#retryMs = Math.min(RETRY_MAX_MS, this.#retryMs * 2);
    this.#consumerLater(model, delay);
  }

  /** With no consumer on the live connection: open one on `model` after delayMs. */
  #consumerLater(model: ChannelModel, delayMs: number): void {
    if (!this.#isLive(model) || this.#life.consumer.kind !== 'idle') return;
    const timer = setTimeout(() => {
      const state = this.#life.consumer;
      if (state.kind !== 'waiting' || state.timer !== timer) return;
      this.#life.consumerRetryDue();
      if (this.#isLive(model)) void this.#openConsumer(model);
    }, delayMs);
    timer.unref();
    this.#life.consumerWait(model, timer);
  }

  async #openConsumer(model: ChannelModel): Promise<void> {
    const { queue, logger } = this.#options;
    const attempt = this.#life.consumerOpening(model);
    let channel: Channel;
    try {
      channel = await model.createChannel();
    } catch (error) {
      const current = this.#life.isConsumer(attempt);
      if (current) this.#life.consumerAbandon(attempt);
      this.#setupFailed(model, current, 'command queue', error);
      return;
    }
    channel.on('error', (error: Error) => logger.warn({ err: error }, 'command channel error'));
    channel.on('close', () => {
      const state = this.#life.consumer;
      if (state.kind !== 'consuming' || state.channel !== channel) return;
      // Closed on its own (a channel-level error) while the connection stays up: reopen shortly.
      this.#life.consumerLost(state);
      this.#consumerLater(model, REOPEN_DELAY_MS);
    });
    try {
      await this.#options.prepare(channel);
      await channel.prefetch(PREFETCH);
      const { consumerTag } = await channel.consume(queue, (message) => {
        if (message) this.#options.onMessage(channel, message);
        else this.#cancelled(model, channel);
      });
      if (!this.#life.isConsumer(attempt) || !this.#isLive(model)) {
        if (this.#life.isConsumer(attempt)) this.#life.consumerAbandon(attempt);
        await channel.close().catch(() => undefined);
        return;
      }
      this.#life.consumerStarted(attempt, channel, consumerTag);
      this.#retryMs = RETRY_MIN_MS;
      logger.info({ queue }, 'taking stop commands');
    } catch (error) {
      // The channel is closed by the broker's refusal (404 no queue, 403 no permission): the
      // connection is fine, so only this channel is retried; the reason is in the log.
      const current = this.#life.isConsumer(attempt);
      if (current) this.#life.consumerAbandon(attempt);
      if (!current || !this.#isLive(model)) return;
      logger.error(
        { err: error, queue, retryInMs: this.#retryMs },
        'cannot consume the command queue; no stop command is taken until it can',
      );
      await channel.close().catch(() => undefined);
      this.#retryConsumer(model);
    }
  }

  /** The broker cancelled the consumer (queue deleted, failover): subscribe again on a new channel. */
  #cancelled(model: ChannelModel, channel: Channel): void {
    const state = this.#life.consumer;
    if (state.kind !== 'consuming' || state.channel !== channel) return;
    this.#life.consumerLost(state);
    this.#options.logger.warn(
      { queue: this.#options.queue, retryInMs: this.#retryMs },
      'the broker cancelled the command consumer; subscribing again',
    );
    void channel.close().catch(() => undefined);
    this.#retryConsumer(model);
  }
}

/** A result the broker returned: no queue is bound for its routing key (no consumer listens). */
export class UnroutableError extends Error {
  constructor(routingKey: string) {
    super(`the broker returned the result: no queue is bound for ${routingKey}`);
    this.name = 'UnroutableError';
  }
}

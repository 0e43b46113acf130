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
 * broker redelivers by itself.
 */
import type { Channel, ChannelModel, ConfirmChannel, ConsumeMessage, Message, Options } from 'amqplib';
import type { AmqpConnection } from '../../amqp/connection';
import type { Logger } from '../../util/log';

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
  #consumer: { channel: Channel; tag: string } | undefined;
  #results: ConfirmChannel | undefined;
  /** Message ids the broker returned on the current result channel (mandatory, unroutable). */
  #returned = new Set<string>();
  #closing = false;
  #retryMs = RETRY_MIN_MS;
  #retryTimer: NodeJS.Timeout | undefined;

  constructor(options: CommandSubscriptionOptions) {
    this.#options = options;
    options.amqp.on('up', (model) => {
      void this.#openResults(model);
      void this.#openConsumer(model);
    });
    options.amqp.on('down', () => {
      this.#consumer = undefined;
      this.#results = undefined;
    });
  }

  /** Stops taking deliveries (cancels the consumer); results can still be published. */
  async stop(): Promise<void> {
    this.#closing = true;
    clearTimeout(this.#retryTimer);
    const consumer = this.#consumer;
    this.#consumer = undefined;
    if (consumer) await consumer.channel.cancel(consumer.tag).catch(() => undefined);
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
    const channel = this.#results;
    if (!channel) return Promise.reject(new Error('broker not connected'));
    const returned = this.#returned;
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

  /** The connection this setup started on is still the live one (a stale failure must not reset a newer one). */
  #isCurrent(model: ChannelModel): boolean {
    return !this.#closing && this.#options.amqp.model === model;
  }

  #setupFailed(model: ChannelModel, what: string, error: unknown): void {
    const { logger, amqp } = this.#options;
    if (!this.#isCurrent(model)) {
      logger.info({ err: error }, `${what} failed on a connection that is gone; ignored`);
      return;
    }
    logger.error({ err: error }, `cannot set up the ${what}; reconnecting`);
    amqp.reset(`${what} failed`);
  }

  /** Reopens a channel that closed while its connection stayed up (after a short delay). */
  #reopenLater(
    model: ChannelModel,
    open: (model: ChannelModel) => Promise<void>,
    isOpen: () => boolean,
  ): void {
    if (!this.#isCurrent(model)) return;
    setTimeout(() => {
      if (!isOpen() && this.#isCurrent(model)) void open(model);
    }, REOPEN_DELAY_MS).unref();
  }

  async #openResults(model: ChannelModel): Promise<void> {
    const { logger } = this.#options;
    if (this.#closing) return;
    let results: ConfirmChannel;
    try {
      results = await model.createConfirmChannel();
    } catch (error) {
      this.#setupFailed(model, 'command result channel', error);
      return;
    }
    // Without an 'error' listener amqplib throws the channel error inside the connection (tearing it down).
    results.on('error', (error: Error) => logger.warn({ err: error }, 'command result channel error'));
    const returned = new Set<string>();
    results.on('return', (message: Message) => returned.add(String(message.properties.messageId)));
    results.on('close', () => {
      if (this.#results !== results) return;
      this.#results = undefined;
      this.#reopenLater(
        model,
        (m) => this.#openResults(m),
        () => this.#results !== undefined,
      );
    });
    if (!this.#isCurrent(model)) {
      await results.close().catch(() => undefined);
      return;
    }
    this.#results = results;
    this.#returned = returned;
  }

  /** Opens the consumer channel again later, each time later (a missing queue is not a hot loop). */
  #retryConsumer(model: ChannelModel): void {
    if (!this.#isCurrent(model)) return;
    const delay = this.#retryMs;
    this.#retryMs = Math.min(RETRY_MAX_MS, this.#retryMs * 2);
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => {
      if (this.#consumer === undefined && this.#isCurrent(model)) void this.#openConsumer(model);
    }, delay);
    this.#retryTimer.unref();
  }

  async #openConsumer(model: ChannelModel): Promise<void> {
    const { queue, logger } = this.#options;
    if (this.#closing) return;
    let channel: Channel;
    try {
      channel = await model.createChannel();
    } catch (error) {
      this.#setupFailed(model, 'command queue', error);
      return;
    }
    channel.on('error', (error: Error) => logger.warn({ err: error }, 'command channel error'));
    channel.on('close', () => {
      if (this.#consumer?.channel !== channel) return;
      this.#consumer = undefined;
      this.#reopenLater(
        model,
        (m) => this.#openConsumer(m),
        () => this.#consumer !== undefined,
      );
    });
    try {
      await this.#options.prepare(channel);
      await channel.prefetch(PREFETCH);
      const { consumerTag } = await channel.consume(queue, (message) => {
        if (message) this.#options.onMessage(channel, message);
        else this.#cancelled(model, channel);
      });
      this.#consumer = { channel, tag: consumerTag };
      if (!this.#isCurrent(model)) {
        this.#consumer = undefined;
        await channel.close().catch(() => undefined);
        return;
      }
      this.#retryMs = RETRY_MIN_MS;
      logger.info({ queue }, 'taking stop commands');
    } catch (error) {
      // The channel is closed by the broker's refusal (404 no queue, 403 no permission): the
      // connection is fine, so only this channel is retried; the reason is in the log.
      this.#consumer = undefined;
      if (!this.#isCurrent(model)) return;
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
    if (this.#consumer?.channel !== channel) return;
    this.#consumer = undefined;
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

/**
 * The bridge's two AMQP channels for commands, kept up across reconnects: a consumer channel on the
 * host's command queue (prefetch 32) and a confirm channel for results. A channel that closes on its
 * own while the connection stays up is reopened; a setup that fails on the live connection resets it,
 * one that fails on a connection already gone is ignored (a newer 'up' opens its own). Settling
 * (ack/nack) never throws: on a dead channel the broker redelivers by itself.
 */
import type { Channel, ChannelModel, ConfirmChannel, ConsumeMessage, Options } from 'amqplib';
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
const PREFETCH = 32;

export type Settlement = 'ack' | 'requeue' | 'drop';

export class CommandSubscription {
  readonly #options: CommandSubscriptionOptions;
  #consumer: { channel: Channel; tag: string } | undefined;
  #results: ConfirmChannel | undefined;
  #closing = false;

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

  /** Publishes on the confirm channel; resolves when the broker confirmed, rejects otherwise. */
  publish(exchange: string, routingKey: string, content: Buffer, options: Options.Publish): Promise<void> {
    const channel = this.#results;
    if (!channel) return Promise.reject(new Error('broker not connected'));
    // A publish on a closed channel throws inside the executor (a rejection); a channel closing with
    // the publish unconfirmed calls back with an error (amqplib), so this always settles.
    return new Promise((resolve, reject) => {
      channel.publish(exchange, routingKey, content, options, (error: unknown) =>
        error ? reject(error instanceof Error ? error : new Error('nacked')) : resolve(),
      );
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
      });
      this.#consumer = { channel, tag: consumerTag };
      if (!this.#isCurrent(model)) {
        this.#consumer = undefined;
        await channel.close().catch(() => undefined);
        return;
      }
      logger.info({ queue }, 'taking stop commands');
    } catch (error) {
      this.#setupFailed(model, 'command queue', error);
    }
  }
}

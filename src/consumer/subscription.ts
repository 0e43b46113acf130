/**
 * The consumer's subscription on the broker: sets up the channels of each connection (publish
 * channel with confirms, the topology, the consuming channel with its prefetch), subscribes to the
 * lifecycle and result queues when the consumer should consume, and cancels the consumers when it
 * should not (a database outage, shutdown). Its life is one state (subscription-state.ts); every
 * broker call here is a named transition of it, and each step that awaits the broker ends by asking
 * again what the consumer should be doing, so a change that happened during the step is acted on.
 */
import type { ChannelModel, ConsumeMessage } from 'amqplib';
import type { AmqpConnection } from '../amqp/connection';
import { assertTopology } from '../amqp/topology';
import { prepareNotificationExchange, prepareNotificationQueue } from '../notify/notifier';
import type { Logger } from '../util/log';
import { Acks, type Channels, type Delivery } from './acks';
import type { ConsumerMetrics } from './metrics';
import { watchReturns } from './publishing';
import type { ConsumerSettings } from './service';
import { SubscriptionMachine, type SubscriptionState } from './subscription-state';
import { consumerTopology } from './topology';

export interface SubscriptionOptions {
  readonly settings: ConsumerSettings;
  readonly amqp: AmqpConnection;
  readonly metrics: Pick<ConsumerMetrics, 'amqpUp' | 'commandsReturned'>;
  readonly logger: Logger;
  /** Aborted when the consumer shuts down for good (after the drain): no new channels are set up. */
  readonly signal: AbortSignal;
  /** Whether the consumer should consume now (the database answers). */
  readonly wanted: () => boolean;
  /** A message arrived on these channels. */
  readonly accept: (queue: 'lifecycle' | 'result', channels: Channels, message: ConsumeMessage) => void;
  /** These deliveries were acknowledged. */
  readonly acked: (deliveries: readonly Delivery[]) => void;
  /** The subscription changed state (the service reports consuming on/off from here). */
  readonly changed: (from: SubscriptionState<Channels>, to: SubscriptionState<Channels>) => void;
  /** New channels are up: read the queue depths now. */
  readonly attached: () => void;
}

export class Subscription {
  readonly #options: SubscriptionOptions;
  readonly #machine: SubscriptionMachine<Channels>;
  /** Numbers channel setups, so a slow setup overtaken by a newer connection is dropped. */
  #generation = 0;

  constructor(options: SubscriptionOptions) {
    this.#options = options;
    this.#machine = new SubscriptionMachine<Channels>(options.changed);
  }

  get state(): SubscriptionState<Channels> {
    return this.#machine.state;
  }

  /** The channels in use (undefined while the broker is down). */
  get channels(): Channels | undefined {
    return this.#machine.channels;
  }

  get consuming(): boolean {
    return this.#machine.consuming;
  }

  get stopped(): boolean {
    return this.#machine.stopped;
  }

  /** The broker connection is up: set up the channels and the topology, then consume if wanted. */
  async up(model: ChannelModel): Promise<void> {
    const { settings, amqp, metrics, logger, signal } = this.#options;
    if (signal.aborted) return;
    const generation = ++this.#generation;
    try {
      const publish = await model.createConfirmChannel();
      publish.on('error', (error: Error) => logger.warn({ err: error }, 'publish channel error'));
      watchReturns(publish, (message) => {
        metrics.commandsReturned.inc();
        logger.error(
          { routingKey: message.fields.routingKey, command: message.properties.messageId as unknown },
          "stop command returned by the broker: no queue for that host's bridge",
        );
      });
      await assertTopology(publish, consumerTopology(settings));
      const { notifications } = settings.consumer;
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
      consume.on('error', (error: Error) => logger.warn({ err: error }, 'consume channel error'));
      await consume.prefetch(settings.consumer.prefetch);
      const machine = this.#machine;
      const channels: Channels = {
        generation,
        consume,
        publish,
        depth: undefined,
        acks: undefined,
        // Open while they are the subscription's channels: a close or a newer connection ends that.
        get open() {
          return machine.channels === channels;
        },
      };
      channels.acks = new Acks(
        channels,
        Math.max(16, Math.floor(settings.consumer.prefetch / 4)),
        this.#options.acked,
        (error) => logger.debug({ err: error }, 'ack failed; the broker redelivers the messages'),
      );
      const closed = (): void => {
        // Only the channels in use are news; a late close of older ones is not.
        if (!machine.detach(channels)) return;
        logger.warn('broker channel closed; reconnecting');
        amqp.reset('consumer channel closed');
      };
      consume.on('close', closed);
      publish.on('close', closed);
      if (generation !== this.#generation || signal.aborted) {
        await model.close().catch(() => undefined);
        return;
      }
      machine.attach(channels);
      metrics.amqpUp.set(1);
      logger.info({ queue: settings.consumer.queue }, 'consumer topology declared');
      await this.reconcile();
      this.#options.attached();
    } catch (error) {
      logger.error({ err: error }, 'cannot set up the consumer on the broker; reconnecting');
      amqp.reset('consumer setup failed');
    }
  }

  /** The broker connection is down: its channels are gone. */
  down(): void {
    this.#machine.detach();
    this.#options.metrics.amqpUp.set(0);
  }

  /**
   * Brings the consumers in line with what the consumer should do: subscribe when idle and wanted,
   * cancel when consuming and not. A step in progress (subscribing, cancelling) asks again when it
   * ends, so nothing is lost by returning here meanwhile.
   */
  async reconcile(): Promise<void> {
    const state = this.#machine.state;
    const wanted = this.#options.wanted();
    if (state.name === 'idle' && wanted) await this.#subscribe();
    else if (state.name === 'consuming' && !wanted) await this.#cancel();
  }

  /** Stops for good: cancels the consumers (messages in hand stay ours, unacknowledged). */
  async stop(): Promise<void> {
    const consumers = this.#machine.toStopped();
    if (consumers) await cancel(consumers.channels, consumers.tags);
  }

  async #subscribe(): Promise<void> {
    const { settings, amqp, logger } = this.#options;
    const channels = this.#machine.toSubscribing();
    const { queue, resultQueue, prefetch } = settings.consumer;
    let tags: string[];
    try {
      const lifecycle = await channels.consume.consume(queue, (message) => {
        if (message) this.#options.accept('lifecycle', channels, message);
        else this.#cancelledByBroker(channels, queue);
      });
      const results = await channels.consume.consume(resultQueue, (message) => {
        if (message) this.#options.accept('result', channels, message);
        else this.#cancelledByBroker(channels, resultQueue);
      });
      tags = [lifecycle.consumerTag, results.consumerTag];
    } catch (error) {
      this.#machine.subscribeFailed(channels);
      // Channels that are no longer in use were reset already; a newer connection is healthy.
      if (!channels.open) return;
      logger.error({ err: error }, 'cannot consume; reconnecting');
      amqp.reset('consume failed');
      return;
    }
    if (!this.#machine.toConsuming(channels, tags)) {
      // Stopped while subscribing (or the channels closed): these consumers are not wanted.
      if (channels.open) await cancel(channels, tags);
      return;
    }
    logger.info({ queue, resultQueue, prefetch }, 'consuming');
    // The database may have gone away while we subscribed.
    await this.reconcile();
  }

  async #cancel(): Promise<void> {
    const { channels, tags } = this.#machine.toCancelling();
    await cancel(channels, tags);
    this.#machine.toIdle(channels);
    // The database may have come back while we cancelled.
    await this.reconcile();
  }

  /**
   * The broker cancelled a consumer (its queue was deleted, or a quorum queue lost its members):
   * reconnect, which re-declares the topology and subscribes again. The subscription stops counting
   * as consuming at once; the reset closes these channels (detach).
   */
  #cancelledByBroker(channels: Channels, queue: string): void {
    const state = this.#machine.state;
    if (state.name === 'stopped') return;
    this.#options.logger.warn({ queue }, 'the broker cancelled the consumer; reconnecting');
    if (state.name === 'consuming' && state.channels === channels) this.#machine.toCancelling();
    this.#options.amqp.reset('consumer cancelled by the broker');
  }
}

async function cancel(channels: Channels, tags: readonly string[]): Promise<void> {
  for (const tag of tags) await channels.consume.cancel(tag).catch(() => undefined);
}

/**
 * Emits instance.update notifications for the consumer: one per saved change of power_state,
 * vm_state or task_state, exchange `nova` (configurable), routing key `versioned_notifications.info`.
 * Like Nova's notifier it is fire-and-forget for the caller: a failed publish is logged and counted,
 * never retried, and never fails the database change it describes. Publishes go out at once (in
 * order, on one channel); the returned promise settles when the broker has confirmed (or refused)
 * them all, which the consumer waits for before it acknowledges the message behind them.
 * Like oslo's publisher (_publish_and_creates_default_queue) the consumer also declares a queue named
 * after the routing key, bound with it, so notifications published before any listener exists are
 * kept rather than confirmed and dropped (consumer.notifications.declareQueue).
 */
import type { Channel, ChannelModel } from 'amqplib';
import type { QueueSpec } from '../amqp/topology';
import type { InstanceRow } from '../store/types';
import type { Logger } from '../util/log';
import { nowMicros } from '../util/time';
import { encodeInstanceUpdate, notificationRoutingKey, type PayloadVersion } from './instance-update';

export interface NotifierOptions {
  readonly enabled: boolean;
  readonly exchange: string;
  readonly topic: string;
  /** Publishes on a confirm channel; resolves on the broker's confirm. */
  readonly publish: (
    exchange: string,
    routingKey: string,
    body: Buffer,
    options: { readonly persistent: boolean; readonly messageId: string },
  ) => Promise<void>;
  /** Called with 'published' or 'failed' per notification (metrics). */
  readonly count: (outcome: 'published' | 'failed') => void;
  readonly logger: Logger;
  /** Message persistence follows the exchange's durability, as oslo does. */
  readonly persistent: boolean;
  /** InstanceUpdatePayload version: 2.1 (default) or 2.0 for Nova releases before `shares`. */
  readonly payloadVersion?: PayloadVersion;
}

export class Notifier {
  readonly #options: NotifierOptions;

  constructor(options: NotifierOptions) {
    this.#options = options;
  }

  get enabled(): boolean {
    return this.#options.enabled;
  }

  /**
   * Notifies each step of a change in order: `steps` are the row's successive states after `before`
   * (Nova saves power_state and then task_state separately when the sync starts a stop, and sends
   * one notification per save). Publishes them all now; resolves once each is confirmed or failed
   * (never rejects).
   */
  instanceUpdates(before: InstanceRow, steps: readonly InstanceRow[]): Promise<void> | undefined {
    if (!this.#options.enabled || steps.length === 0) return undefined;
    if (steps.length === 1) return this.#send(steps[0] as InstanceRow, before);
    const sent: Array<Promise<void>> = [];
    let previous = before;
    for (const step of steps) {
      sent.push(this.#send(step, previous));
      previous = step;
    }
    return Promise.all(sent).then(() => undefined);
  }

  #send(row: InstanceRow, before: InstanceRow): Promise<void> {
    const { exchange, topic, logger } = this.#options;
    const failed = (error: unknown): void => {
      this.#options.count('failed');
      logger.warn({ err: error, uuid: row.uuid }, 'instance.update notification not published');
    };
    try {
      const { messageId, body } = encodeInstanceUpdate(row, before, {
        nowMicros: nowMicros(),
        ...(this.#options.payloadVersion ? { payloadVersion: this.#options.payloadVersion } : {}),
      });
      return this.#options
        .publish(exchange, notificationRoutingKey(topic), body, {
          persistent: this.#options.persistent,
          messageId,
        })
        .then(() => this.#options.count('published'), failed);
    } catch (error) {
      failed(error);
      return Promise.resolve();
    }
  }
}

/**
 * Makes sure the notification exchange exists without fighting its owner: an existing exchange (a
 * Nova deployment declares `nova` itself) is used as it is, whatever its durability; a missing one is
 * created as a topic exchange with the configured durability. Uses throw-away channels, because a
 * failed passive declare closes the channel.
 */
export async function prepareNotificationExchange(
  model: ChannelModel,
  exchange: string,
  durable: boolean,
): Promise<void> {
  if (await passivelyExists(model, (probe) => probe.checkExchange(exchange))) return;
  await onThrowAwayChannel(model, (channel) => channel.assertExchange(exchange, 'topic', { durable }));
}

/**
 * oslo's default notification queue: named after the routing key (`<topic>.info`), durable as the
 * exchange (amqp_durable_queues), not auto-delete, no arguments (a classic queue).
 */
export function notificationQueue(topic: string, durable: boolean): QueueSpec {
  return { name: notificationRoutingKey(topic), durable, arguments: {} };
}

/**
 * Declares oslo's default queue for the topic and binds it to the exchange with its routing key,
 * without fighting its owner: an existing queue (imported from definitions.json, or declared by
 * Nova's own publisher) is used as it is, whatever its durability or arguments; a missing one is
 * created. The bind is idempotent and repairs a queue that exists but lost its binding. Throw-away
 * channels, as for the exchange.
 */
export async function prepareNotificationQueue(
  model: ChannelModel,
  exchange: string,
  topic: string,
  durable: boolean,
): Promise<void> {
  const queue = notificationQueue(topic, durable);
  const exists = await passivelyExists(model, (probe) => probe.checkQueue(queue.name));
  await onThrowAwayChannel(model, async (channel) => {
    if (!exists)
      await channel.assertQueue(queue.name, { durable: queue.durable, autoDelete: false, arguments: {} });
    await channel.bindQueue(queue.name, exchange, notificationRoutingKey(topic));
  });
}

/** Whether a passive declare succeeds; on a throw-away channel, since a failed one (404) closes it. */
async function passivelyExists(
  model: ChannelModel,
  check: (probe: Channel) => Promise<unknown>,
): Promise<boolean> {
  const probe = await model.createChannel();
  probe.on('error', () => undefined);
  try {
    await check(probe);
  } catch {
    return false; // 404: the broker closed the probe channel
  }
  await probe.close().catch(() => undefined);
  return true;
}

/** Runs `work` on a channel of its own, closed afterwards whatever happens. */
async function onThrowAwayChannel(
  model: ChannelModel,
  work: (channel: Channel) => Promise<unknown>,
): Promise<void> {
  const channel = await model.createChannel();
  channel.on('error', () => undefined);
  try {
    await work(channel);
  } finally {
    await channel.close().catch(() => undefined);
  }
}

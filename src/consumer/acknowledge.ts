/**
 * The end of a batch, apart from the pipeline that produced it: each message is either
 * acknowledged (after its row is committed and what it published is confirmed) or dead-lettered
 * with its reason (published to the dead-letter exchange, then acknowledged — or, if that publish
 * fails, returned to its queue). Kept apart from service.ts so the service reads as the pipeline and
 * this file holds the one rule that protects against loss: never acknowledge before the message's
 * effects are safe somewhere.
 */
import type { Options } from 'amqplib';
import type { Logger } from '../util/log';
import type { Channels, Delivery } from './acks';
import type { ItemResult } from './handler';
import type { ConsumerMetrics, MessageOutcome } from './metrics';
import { deadLetterMessage } from './publishing';

export interface AcknowledgerOptions {
  readonly queues: {
    readonly queue: string;
    readonly resultQueue: string;
    readonly deadLetterExchange: string;
  };
  readonly metrics: Pick<ConsumerMetrics, 'messages' | 'inFlight'>;
  readonly logger: Logger;
  /** A confirmed publish on these channels. */
  readonly publish: (
    exchange: string,
    routingKey: string,
    content: Buffer,
    options: Options.Publish,
    channels: Channels,
  ) => Promise<void>;
  /** Keeps a dead-letter publish in the set of work a shutdown waits for. */
  readonly track: (work: Promise<void>) => void;
  /** The consumer's own broker user (the dead-letter copy is published as it). */
  readonly selfUser: () => string;
}

export class Acknowledger {
  readonly #options: AcknowledgerOptions;

  constructor(options: AcknowledgerOptions) {
    this.#options = options;
  }

  /**
   * After a batch's commit: dead-letters the messages that failed on a healthy database, and
   * acknowledges the rest once everything the batch published is confirmed (or has failed); then
   * calls `done`.
   */
  acknowledgeBatch(deliveries: readonly Delivery[], results: readonly ItemResult[], done: () => void): void {
    const { metrics, track } = this.#options;
    const applied: Delivery[] = [];
    const published: Array<Promise<void>> = [];
    const outcomes = new Map<MessageOutcome, number>();
    for (let index = 0; index < deliveries.length; index += 1) {
      const delivery = deliveries[index] as Delivery;
      const result = results[index] as ItemResult;
      if (!result.ok) {
        track(this.deadLetter(delivery, `processing failed: ${result.error.message}`));
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
      for (const [outcome, count] of outcomes) metrics.messages.inc({ outcome }, count);
      metrics.inFlight.dec(applied.length);
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
  async deadLetter(delivery: Delivery, reason: string, truncate = false): Promise<void> {
    const { queues, metrics, logger } = this.#options;
    const { queue, channels, message } = delivery;
    const properties = message.properties;
    // The original sender and routing key are recorded, and the copy is published as the consumer's
    // own user, so a replay can be verified later (dead-letters.ts).
    const { content, options, routingKey } = deadLetterMessage(
      message,
      reason,
      queue === 'lifecycle' ? queues.queue : queues.resultQueue,
      truncate,
      this.#options.selfUser(),
    );
    try {
      await this.#options.publish(queues.deadLetterExchange, routingKey, content, options, channels);
    } catch (error) {
      logger.error({ err: error, reason }, 'cannot dead-letter a message; returning it to its queue');
      metrics.inFlight.dec();
      if (channels.open) {
        try {
          channels.consume.nack(message, false, true);
        } catch {
          // the channel closed meanwhile: the broker returns the message itself
        }
      }
      channels.acks?.returned(delivery);
      return;
    }
    metrics.messages.inc({ outcome: 'dead_lettered' });
    logger.warn(
      { reason, routingKey: message.fields.routingKey, messageId: properties.messageId as unknown },
      'message dead-lettered',
    );
    metrics.inFlight.dec();
    delivery.info = {
      queue,
      messageId: typeof properties.messageId === 'string' ? properties.messageId : undefined,
      outcome: 'dead_lettered',
      reason,
    };
    channels.acks?.complete([delivery]);
  }
}

/**
 * Listens to the bus like an operator's consumer would: exclusive queues bound with given patterns,
 * every message recorded with its routing key, properties and parsed body.
 */
import { connect, type ChannelModel, type ConsumeMessage } from 'amqplib';
import { setTimeout as sleep } from 'node:timers/promises';
import type { LifecycleMessage } from '../../src/messages/lifecycle';

export interface Received<T = LifecycleMessage> {
  readonly routingKey: string;
  readonly exchange: string;
  readonly properties: ConsumeMessage['properties'];
  readonly raw: string;
  readonly body: T;
}

export class BusRecorder<T = LifecycleMessage> {
  readonly messages: Array<Received<T>> = [];
  private constructor(private readonly model: ChannelModel) {}

  /** One exclusive queue bound to `exchange` with all `patterns`. */
  static async listen<T = LifecycleMessage>(
    url: string,
    exchange: string,
    patterns: readonly string[],
    exchangeOptions: { type?: string; durable?: boolean; arguments?: Record<string, unknown> } = {},
  ): Promise<BusRecorder<T>> {
    const model = await connect(url);
    const recorder = new BusRecorder<T>(model);
    const channel = await model.createChannel();
    await channel.assertExchange(exchange, exchangeOptions.type ?? 'topic', {
      durable: exchangeOptions.durable ?? true,
      ...(exchangeOptions.arguments ? { arguments: exchangeOptions.arguments } : {}),
    });
    const { queue } = await channel.assertQueue('', { exclusive: true, autoDelete: true });
    for (const pattern of patterns) await channel.bindQueue(queue, exchange, pattern);
    await channel.consume(
      queue,
      (message) => {
        if (!message) return;
        const raw = message.content.toString('utf8');
        recorder.messages.push({
          routingKey: message.fields.routingKey,
          exchange: message.fields.exchange,
          properties: message.properties,
          raw,
          body: JSON.parse(raw) as T,
        });
      },
      { noAck: true },
    );
    return recorder;
  }

  filter(predicate: (message: Received<T>) => boolean): Array<Received<T>> {
    return this.messages.filter(predicate);
  }

  /** Waits until `predicate` holds over the recorded messages; the error says what was seen. */
  async waitFor(
    what: string,
    predicate: (messages: ReadonlyArray<Received<T>>) => boolean,
    timeoutMs = 15000,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate(this.messages)) {
      if (Date.now() > deadline) {
        const seen = this.messages.slice(-10).map((m) => m.routingKey);
        throw new Error(
          `timed out waiting for ${what}; ${this.messages.length} messages, last: ${seen.join(', ')}`,
        );
      }
      await sleep(25);
    }
  }

  async close(): Promise<void> {
    await this.model.close().catch(() => undefined);
  }
}

/**
 * The bench's broker side: the production topology (the lifecycle exchange with its alternate
 * exchange, and the consumer's own queue — durable quorum, as `virtbus consumer` declares it by
 * default — bound `#`), a representative lifecycle message, and a raw confirmed publisher.
 */
import { randomUUID } from 'node:crypto';
import { connect, type ConfirmChannel } from 'amqplib';
import { assertTopology, type Topology } from '../../src/amqp/topology';
import { loadConfig } from '../../src/config/load';
import { consumerTopology } from '../../src/consumer/topology';
import { translate, type Transition } from '../../src/libvirt/translate';
import type { PowerStateCode } from '../../src/libvirt/constants';
import {
  APP_ID,
  buildLifecycleMessage,
  lifecycleRoutingKey,
  LIFECYCLE_MESSAGE_TYPE,
} from '../../src/messages/lifecycle';
import { nowMicros } from '../../src/util/time';

export const BENCH_HOST = 'bench-host';

/** The consumer configuration with its defaults (queue virtbus.consumer, quorum, bound #). */
export function defaultConsumerConfig(env: NodeJS.ProcessEnv = {}) {
  return loadConfig({ role: 'consumer', skipDefaultFile: true, env });
}

/** Everything a deployment declares: the bridge's exchanges plus the consumer's queues, bound #. */
export function benchTopology(): Topology {
  return consumerTopology(defaultConsumerConfig());
}

export const CONSUMER_QUEUE = defaultConsumerConfig().consumer.queue;

export async function declareTopology(url: string): Promise<void> {
  const model = await connect(url);
  try {
    const channel = await model.createChannel();
    await assertTopology(channel, benchTopology());
  } finally {
    await model.close();
  }
}

export async function queueDepth(url: string, queue = CONSUMER_QUEUE): Promise<number> {
  const model = await connect(url);
  try {
    const channel = await model.createChannel();
    return (await channel.checkQueue(queue)).messageCount;
  } finally {
    await model.close();
  }
}

export async function purgeQueue(url: string, queue = CONSUMER_QUEUE): Promise<void> {
  const model = await connect(url);
  try {
    const channel = await model.createChannel();
    await channel.purgeQueue(queue);
  } finally {
    await model.close();
  }
}

/** Synthetic domain i as the native injector names it (native/src/synthetic.cc). */
export function syntheticDomain(i: number): { uuid: string; name: string } {
  return { uuid: `5e1f0000-0000-4000-8000-${i.toString(16).padStart(12, '0')}`, name: `synthetic-${i}` };
}

const TYPE_OF: Readonly<Record<string, number>> = { started: 2, paused: 3, resumed: 4 };

/** A lifecycle message body exactly as the dispatcher builds it (JSON format). */
export function lifecycleBody(fields: {
  readonly domain: number;
  readonly transition: 'started' | 'paused' | 'resumed';
  readonly powerState: PowerStateCode;
  readonly occurredMicros: number;
  readonly seq: number;
  readonly bootId: string;
}): { body: Buffer; routingKey: string; messageId: string } {
  const { uuid, name } = syntheticDomain(fields.domain);
  const translation = translate(0, TYPE_OF[fields.transition] ?? 3, 0);
  const message = buildLifecycleMessage({
    host: BENCH_HOST,
    bootId: fields.bootId,
    seq: fields.seq,
    publishedMicros: nowMicros(),
    instanceUuid: uuid,
    domainName: name,
    transition: fields.transition satisfies Transition,
    libvirt: translation.libvirt,
    powerState: fields.powerState,
    occurredMicros: fields.occurredMicros,
    delayedMs: 0,
  });
  return {
    body: Buffer.from(JSON.stringify(message)),
    routingKey: lifecycleRoutingKey(BENCH_HOST, fields.transition),
    messageId: message.event_id,
  };
}

/** A representative message: what the bridge publishes for a paused synthetic domain. */
export function sampleMessage(): { body: Buffer; routingKey: string } {
  return lifecycleBody({
    domain: 123,
    transition: 'paused',
    powerState: 3,
    occurredMicros: nowMicros(),
    seq: 123456,
    bootId: randomUUID(),
  });
}

/** After a confirm, publish again once this many slots are free (as the bridge's publisher). */
const REFILL = 64;

export interface PublishItem {
  readonly exchange: string;
  readonly routingKey: string;
  readonly body: Buffer;
  readonly messageId: string;
}

/**
 * Publishes `count` messages on a confirm channel with up to `window` unconfirmed, with the same
 * properties as the bridge's publisher (persistent, mandatory, message id, type, timestamp…), and
 * resolves when the last one is confirmed. `item(i)` makes message i.
 */
export function publishConfirmed(
  channel: ConfirmChannel,
  count: number,
  window: number,
  item: (i: number) => PublishItem,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let sent = 0;
    let confirmed = 0;
    let inFlight = 0;
    let blocked = false;
    let failed = false;
    const pump = (): void => {
      while (!blocked && !failed && inFlight < window && sent < count) {
        const next = item(sent);
        sent += 1;
        inFlight += 1;
        const ok = channel.publish(
          next.exchange,
          next.routingKey,
          next.body,
          {
            persistent: true,
            mandatory: true,
            contentType: 'application/json',
            contentEncoding: 'utf-8',
            messageId: next.messageId,
            timestamp: Math.floor(Date.now() / 1000),
            appId: APP_ID,
            type: LIFECYCLE_MESSAGE_TYPE,
          },
          (error: unknown) => {
            if (error) {
              failed = true;
              reject(error instanceof Error ? error : new Error('nacked'));
              return;
            }
            inFlight -= 1;
            confirmed += 1;
            if (confirmed === count) resolve();
            else if (inFlight <= window - REFILL) pump();
          },
        );
        if (!ok) blocked = true;
      }
    };
    channel.on('drain', () => {
      blocked = false;
      pump();
    });
    if (count === 0) resolve();
    else pump();
  });
}

/**
 * Worker: a raw amqplib publisher. `ceiling` publishes one representative lifecycle message over and
 * over (the broker's own limit for this message size and topology); `lifecycle` publishes distinct,
 * consistent lifecycle messages (to prefill the consumer queue for the consumer benchmarks).
 */
import { randomUUID } from 'node:crypto';
import { connect } from 'amqplib';
import { serve } from '../lib/ipc';
import { defaultConsumerConfig, lifecycleBody, publishConfirmed, sampleMessage } from '../lib/amqp';
import { ResourceSampler, type ResourceUse } from '../lib/stats';
import { nowMicros } from '../../src/util/time';

export interface PublishResult {
  readonly count: number;
  readonly seconds: number;
  readonly rate: number;
  readonly bodyBytes: number;
  readonly resources: ResourceUse;
}

const EXCHANGE = defaultConsumerConfig().amqp.exchange;

async function publish(
  url: string,
  count: number,
  window: number,
  make: (i: number) => { routingKey: string; body: Buffer; messageId: string },
  bodyBytes: number,
): Promise<PublishResult> {
  const model = await connect(url);
  try {
    const channel = await model.createConfirmChannel();
    const sampler = new ResourceSampler();
    const started = performance.now();
    await publishConfirmed(channel, count, window, (i) => ({ exchange: EXCHANGE, ...make(i) }));
    const seconds = (performance.now() - started) / 1000;
    return { count, seconds, rate: count / seconds, bodyBytes, resources: sampler.stop() };
  } finally {
    await model.close().catch(() => undefined);
  }
}

serve({
  async ceiling(params: { url: string; count: number; window: number }) {
    const sample = sampleMessage();
    return publish(
      params.url,
      params.count,
      params.window,
      () => ({ routingKey: sample.routingKey, body: sample.body, messageId: randomUUID() }),
      sample.body.length,
    );
  },

  /**
   * Distinct messages for `domains` synthetic instances: per instance paused, resumed, paused… with
   * the matching live power_state (3, 1) and increasing occurred_at, as one bridge would publish them.
   */
  async lifecycle(params: { url: string; count: number; window: number; domains: number }) {
    const bootId = randomUUID();
    const base = nowMicros() - params.count;
    let bytes = 0;
    const result = await publish(
      params.url,
      params.count,
      params.window,
      (i) => {
        const paused = Math.floor(i / params.domains) % 2 === 0;
        const message = lifecycleBody({
          domain: i % params.domains,
          transition: paused ? 'paused' : 'resumed',
          powerState: paused ? 3 : 1,
          occurredMicros: base + i,
          seq: i + 1,
          bootId,
        });
        bytes += message.body.length;
        return message;
      },
      0,
    );
    return { ...result, bodyBytes: Math.round(bytes / Math.max(1, params.count)) };
  },
});

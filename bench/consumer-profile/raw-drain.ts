/**
 * What the broker itself allows a consumer: a raw amqplib consumer (no parsing, no database) draining
 * the same prefilled quorum queue as benchmark 5, acknowledging every message on its own or with
 * `multiple` once per burst, optionally publishing one notification-sized message per event on a
 * confirm channel first (as the consumer's instance.update does).
 *
 *   node dist/bench/consumer-profile/raw-drain.js [--count N] [--prefetch N,N…] [--notify]
 */
import { connect, type ConsumeMessage } from 'amqplib';
import { startRabbitMQ } from '../../src/sandbox';
import { IN_FLIGHT } from '../ceiling';
import { CONSUMER_QUEUE, declareTopology } from '../lib/amqp';
import { BenchContext } from '../lib/context';

function option(args: readonly string[], name: string): string | undefined {
  const index = args.indexOf(name);
  return index >= 0 ? args[index + 1] : undefined;
}

async function drainOnce(
  url: string,
  count: number,
  prefetch: number,
  multiple: boolean,
  notify: boolean,
): Promise<number> {
  const model = await connect(url);
  const channel = await model.createChannel();
  const publish = await model.createConfirmChannel();
  await publish.assertExchange('nova', 'topic', { durable: false });
  await channel.prefetch(prefetch);
  const body = Buffer.alloc(2600, 'x');
  let done = 0;
  let first = 0;
  let last = 0;
  let pending: ConsumeMessage[] = [];
  let scheduled = false;
  const settle = (batch: ConsumeMessage[]): void => {
    if (multiple) channel.ack(batch[batch.length - 1] as ConsumeMessage, true);
    else for (const message of batch) channel.ack(message);
    done += batch.length;
    last = performance.now();
  };
  const flush = (): void => {
    scheduled = false;
    const batch = pending;
    pending = [];
    if (!notify) return settle(batch);
    let confirmed = 0;
    for (let i = 0; i < batch.length; i += 1)
      publish.publish('nova', 'versioned_notifications.info', body, {}, () => {
        confirmed += 1;
        if (confirmed === batch.length) settle(batch);
      });
  };
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      if (done >= count) {
        clearInterval(timer);
        resolve();
      }
    }, 20);
    void channel.consume(CONSUMER_QUEUE, (message) => {
      if (!message) return;
      if (first === 0) first = performance.now();
      pending.push(message);
      if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    });
  });
  await model.close();
  return count / ((last - first) / 1000);
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const count = Number(option(args, '--count') ?? '60000');
  const prefetches = (option(args, '--prefetch') ?? '256,1024').split(',').map(Number);
  const notify = args.includes('--notify');
  const rabbit = await startRabbitMQ({ name: 'virtbus-raw-drain' });
  const ctx = new BenchContext(rabbit, { quick: false, profileDir: undefined });
  try {
    for (const prefetch of prefetches)
      for (const multiple of [false, true]) {
        const url = await ctx.vhost('raw');
        await declareTopology(url);
        const publisher = ctx.worker('publisher');
        await publisher.call('lifecycle', { url, count, window: IN_FLIGHT, domains: 1000 }, 600_000);
        await publisher.close();
        const rate = await drainOnce(url, count, prefetch, multiple, notify);
        console.log(JSON.stringify({ prefetch, multiple, notify, rate: Math.round(rate) }));
      }
  } finally {
    await ctx.cleanup();
    await rabbit.dispose();
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error('raw-drain failed:', error);
    process.exit(1);
  },
);

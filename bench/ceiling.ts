/**
 * 1. The broker ceiling: a raw amqplib publisher (its own process) sending the bridge's message — same
 * body size, same properties, persistent — on a confirm channel with as many publishes in flight as
 * the bridge allows (amqp.maxInFlight), to the production topology: topic exchange with alternate
 * exchange, and the consumer's durable quorum queue bound `#`. It refills its window like the bridge's
 * publisher (after 64 confirms). The best run of the whole suite is the ceiling every other figure is
 * a ratio of.
 */
import { declareTopology, purgeQueue } from './lib/amqp';
import type { BenchContext, BenchResult } from './lib/context';
import { round } from './lib/stats';
import type { PublishResult } from './workers/publisher';

export const IN_FLIGHT = 2000; // amqp.maxInFlight's default, as the bridge publishes

/**
 * One ceiling measurement in `url` (topology declared, queue purged after); adds it to the context
 * unless the publisher is pinned to `pin` (CPU list) for a pinned comparison.
 */
export async function measureCeiling(
  ctx: BenchContext,
  url: string,
  count: number,
  pin?: string,
): Promise<PublishResult> {
  const worker = ctx.worker('publisher');
  try {
    if (pin) ctx.pin(worker.pid, pin);
    const result = await worker.call<PublishResult>('ceiling', { url, count, window: IN_FLIGHT });
    if (!pin) ctx.ceilingRuns.push(result.rate); // a pinned run measures another configuration
    return result;
  } finally {
    await worker.close();
    await purgeQueue(url);
  }
}

export async function run(ctx: BenchContext): Promise<BenchResult> {
  const count = ctx.options.quick ? 20_000 : 100_000;
  const url = await ctx.vhost('ceiling');
  await declareTopology(url);
  const runs: PublishResult[] = [];
  for (let i = 0; i < 2; i += 1) runs.push(await measureCeiling(ctx, url, count));
  const best = Math.max(...runs.map((r) => r.rate));
  return {
    id: '1',
    title: 'Broker ceiling (raw amqplib, confirmed, persistent)',
    figures: [{ label: 'broker ceiling (best run of the suite)', value: round(best), unit: 'msg/s' }],
    details: {
      count,
      inFlight: IN_FLIGHT,
      bodyBytes: runs[0]?.bodyBytes,
      queue:
        'virtbus.consumer: durable quorum queue bound # (the consumer default); exchange virtbus.lifecycle (topic, alternate exchange virtbus.unroutable)',
      runs: runs.map((r) => ({
        rate: round(r.rate),
        seconds: round(r.seconds, 2),
        cpuPercent: r.resources.cpuPercent,
      })),
    },
    notes: [],
  };
}

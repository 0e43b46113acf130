/**
 * 6. Memory of the bridge process (its RSS, sampled every 50 ms):
 * - at steady load: the publish path fed at half the broker ceiling's rate for a while;
 * - with the broker stopped while 1,000,000 events accumulate in the outbox (the durable journal,
 *   bridge.outbox.kind's default: the backlog must live on disk, not in memory), and then while
 *   that backlog drains once the broker is back (drain rate against the ceiling).
 * The RabbitMQ node is stopped and started again for the second part (durable data kept).
 */
import { declareTopology, purgeQueue } from './lib/amqp';
import type { BenchContext, BenchResult } from './lib/context';
import { round } from './lib/stats';
import { bridgeRun, summary, syntheticLibvirtd } from './publish-path';

const DOMAINS = 1000;

interface Status {
  depth: number;
  appended: number;
  confirmed: number;
  rssMB: number;
  heapUsedMB: number;
  journalBytes: number | undefined;
  amqpUp: boolean;
}

export async function run(ctx: BenchContext): Promise<BenchResult> {
  const backlog = ctx.options.quick ? 100_000 : 1_000_000;
  const url = await ctx.vhost('memory');
  await declareTopology(url);
  const libvirt = await syntheticLibvirtd(ctx, DOMAINS);

  const half = Math.round(ctx.ceiling / 2);
  const seconds = ctx.options.quick ? 4 : 6;
  const steady = await bridgeRun(ctx, url, libvirt.uri, 'paced', { rate: half, seconds, domains: DOMAINS });

  const bridge = ctx.worker('bridge');
  let rssMax = 0;
  let heapMax = 0;
  let last: Status | undefined;
  const poll = async (): Promise<Status> => {
    last = await bridge.call<Status>('status');
    rssMax = Math.max(rssMax, last.rssMB);
    heapMax = Math.max(heapMax, last.heapUsedMB);
    return last;
  };
  try {
    await bridge.call('start', { amqpUrl: url, libvirtUri: libvirt.uri });
    await ctx.rabbit.stop();
    await ctx.waitFor('the bridge to notice the broker is gone', async () => !(await poll()).amqpUp);
    const base = await poll();
    const injecting = bridge.call<{ seconds: number }>(
      'inject',
      { count: backlog, domains: DOMAINS },
      600_000,
    );
    let injectDone = false;
    const injected = injecting.then((r) => {
      injectDone = true;
      return r;
    });
    while (!injectDone) {
      await poll();
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const accumulate = await injected;
    await ctx.waitFor('the backlog in the outbox', async () => (await poll()).depth >= backlog);
    const full = await poll();
    const heapFull = await bridge.call('heap');
    const rssFull = rssMax;
    rssMax = 0;
    const restarted = performance.now();
    await ctx.rabbit.start();
    const brokerBack = performance.now();
    let drainStart = 0;
    await ctx.waitFor(
      'the backlog to drain',
      async () => {
        const status = await poll();
        if (drainStart === 0 && status.confirmed > full.confirmed) drainStart = performance.now();
        return status.depth === 0;
      },
      600_000,
    );
    const drained = performance.now();
    const drainSeconds = (drained - (drainStart || brokerBack)) / 1000;
    const drainRate = backlog / drainSeconds;
    const heapDrained = await bridge.call('heap');
    await bridge.call('stop', {}, 60_000);
    await purgeQueue(url);
    return {
      id: '6',
      title: 'Memory: bridge RSS at steady load, and with 1,000,000 events held while the broker is down',
      figures: [
        {
          label: `bridge RSS at ${half}/s (½ ceiling, synthetic), max`,
          value: steady.resources.rssMaxMB,
          unit: 'MB',
          target: { kind: 'max', value: 100 },
        },
        {
          label: `bridge RSS, ${backlog.toLocaleString('en-US')} events in the outbox, broker down`,
          value: rssFull,
          unit: 'MB',
          target: { kind: 'max', value: 150 },
        },
        {
          label: 'journal on disk for that backlog',
          value: full.journalBytes === undefined ? null : round(full.journalBytes / 1048576),
          unit: 'MB',
        },
        {
          label: 'backlog drain rate after the broker returns',
          value: round(drainRate),
          unit: 'events/s',
          vsCeiling: true,
        },
        { label: 'bridge RSS while draining, max', value: rssMax, unit: 'MB' },
      ],
      details: {
        steady: { rate: half, seconds, ...summary(steady), startRssMB: steady.startRssMB },
        backlog: {
          events: backlog,
          idleRssMB: base.rssMB,
          accumulateSeconds: round(accumulate.seconds, 1),
          accumulateRate: round(backlog / accumulate.seconds),
          heapUsedMaxMB: heapMax,
          journalMB: full.journalBytes === undefined ? null : round(full.journalBytes / 1048576),
          brokerRestartSeconds: round((brokerBack - restarted) / 1000, 1),
          drainSeconds: round(drainSeconds, 1),
          drainRate: round(drainRate),
          final: last,
          heapAtFullBacklog: heapFull,
          heapAfterDrain: heapDrained,
        },
      },
      notes: [],
    };
  } finally {
    if (!ctx.rabbit.running()) await ctx.rabbit.start();
    await bridge.close();
  }
}

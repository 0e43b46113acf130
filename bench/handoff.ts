/**
 * 3. The native hand-off alone: the addon's injector thread → bounded native queue → wake-up →
 * EventPump drain into JavaScript, with no translation or publishing. Reports events/s (the injector
 * waiting for room, so nothing is dropped), the queue's high-water mark under that burst and under a
 * paced load at the broker ceiling's rate, and what a burst costs when the injector drops like
 * libvirt's callbacks do.
 */
import type { BenchContext, BenchResult } from './lib/context';
import { round, type ResourceUse } from './lib/stats';

interface HandoffRun {
  events: number;
  seconds: number;
  rate: number;
  dropped: number;
  overflowReported: number;
  highWater: number;
  capacity: number;
  resources: ResourceUse;
}

export async function run(ctx: BenchContext): Promise<BenchResult> {
  const count = ctx.options.quick ? 500_000 : 3_000_000;
  const capacity = 16384; // bridge.queueCapacity's default
  const worker = ctx.worker('handoff');
  let paced: { events: number; highWater: number };
  let burst: HandoffRun;
  let dropping: HandoffRun;
  try {
    await worker.call('start', { capacity });
    // Paced first: the high-water mark is per process.
    paced = await worker.call('paced', { rate: Math.round(ctx.ceiling), seconds: 3, domains: 1000 });
    burst = await worker.call<HandoffRun>('run', { count, domains: 1000, waitWhenFull: true });
    dropping = await worker.call<HandoffRun>('run', { count: 1_000_000, domains: 1000, waitWhenFull: false });
    await worker.call('stop');
  } finally {
    await worker.close();
  }
  return {
    id: '3',
    title: 'Native hand-off alone (injector thread → queue → EventPump, no publishing)',
    figures: [
      {
        label: 'native hand-off',
        value: round(burst.rate),
        unit: 'events/s',
        vsCeiling: true,
        target: { kind: 'ceiling-ratio-min', value: 20 },
      },
      {
        label: `queue high-water at ${Math.round(ctx.ceiling)}/s (ceiling rate)`,
        value: paced.highWater,
        unit: `of ${capacity}`,
      },
      { label: 'queue high-water, flat-out burst', value: burst.highWater, unit: `of ${capacity}` },
      {
        label: 'dropped of a 1,000,000-event burst (drop policy)',
        value: dropping.dropped,
        unit: 'events',
        note: 'each overflow is reported to the bridge, which publishes an overflow snapshot',
      },
    ],
    details: {
      capacity,
      burst: { ...burst, rate: round(burst.rate), seconds: round(burst.seconds, 3) },
      dropping: { ...dropping, rate: round(dropping.rate), seconds: round(dropping.seconds, 3) },
      paced,
    },
    notes: [],
  };
}

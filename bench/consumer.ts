/**
 * 5. The consumer: lifecycle messages applied to the instance database (validation, Nova's
 * handle_lifecycle_event and power-state sync with its compare-and-swap row write, commit, ack, the
 * instance.update notification), as `virtbus consumer` runs them. The consumer queue is prefilled with
 * distinct, consistent events (paused/resumed with the matching live power_state, so every message
 * writes its row) for instances that exist in the database, then drained by the consumer(s):
 * SQLite (one consumer, the default synchronous=full) and PostgreSQL (two consumers sharing the
 * queue and the database).
 */
import { declareTopology, queueDepth } from './lib/amqp';
import type { BenchContext, BenchResult, Figure } from './lib/context';
import { round } from './lib/stats';
import { IN_FLIGHT } from './ceiling';
import type { ConsumerRunResult } from './workers/consumer';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const INSTANCES = 1000;

async function drain(
  ctx: BenchContext,
  label: string,
  dbUrl: string,
  consumers: number,
  count: number,
): Promise<Record<string, unknown> & { rate: number }> {
  const url = await ctx.vhost(`consumer-${label}`);
  await declareTopology(url);
  const seeder = ctx.worker('consumer');
  await seeder.call('seed', { amqpUrl: url, dbUrl, count: INSTANCES });
  await seeder.close();
  const publisher = ctx.worker('publisher');
  const prefill = await publisher.call<{ rate: number; bodyBytes: number }>(
    'lifecycle',
    { url, count, window: IN_FLIGHT, domains: INSTANCES },
    300_000,
  );
  await publisher.close();
  const workers = Array.from({ length: consumers }, () => ctx.worker('consumer'));
  await Promise.all(workers.map((w) => w.call('start', { amqpUrl: url, dbUrl })));
  const deadline = Date.now() + 240_000;
  let total = 0;
  while (total < count && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    const counts = await Promise.all(workers.map((w) => w.call<{ processed: number }>('count')));
    total = counts.reduce((sum, c) => sum + c.processed, 0);
  }
  const results = await Promise.all(
    workers.map((w) => w.call<ConsumerRunResult>('wait', { count: 0, timeoutMs: 0 })),
  );
  await Promise.all(workers.map((w) => w.call('stop', {}, 30_000)));
  await Promise.all(workers.map((w) => w.close()));
  const first = Math.min(...results.map((r) => r.firstProcessedAtMs));
  const last = Math.max(...results.map((r) => r.lastProcessedAtMs));
  const processed = results.reduce((sum, r) => sum + r.processed, 0);
  const outcomes: Record<string, number> = {};
  for (const r of results)
    for (const [k, v] of Object.entries(r.outcomes)) outcomes[k] = (outcomes[k] ?? 0) + v;
  return {
    rate: processed / ((last - first) / 1000),
    processed,
    seconds: round((last - first) / 1000, 2),
    left: await queueDepth(url),
    outcomes,
    prefillRate: round(prefill.rate),
    bodyBytes: prefill.bodyBytes,
    perConsumer: results.map((r) => ({
      processed: r.processed,
      cpuPercent: r.resources?.cpuPercent,
      rssMaxMB: r.resources?.rssMaxMB,
    })),
  };
}

export async function run(ctx: BenchContext): Promise<BenchResult> {
  const count = ctx.options.quick ? 10_000 : 40_000;
  const dir = mkdtempSync(join(tmpdir(), 'virtbus-bench-sqlite-'));
  const figures: Figure[] = [];
  const details: Record<string, unknown> = { count, instances: INSTANCES };
  try {
    const sqlite = await drain(ctx, 'sqlite', `sqlite:${join(dir, 'instances.db')}`, 1, count);
    figures.push({
      label: 'consumer, SQLite, 1 consumer',
      value: round(sqlite.rate),
      unit: 'events/s',
      vsCeiling: true,
      target: { kind: 'ceiling-ratio-min', value: 0.8 },
    });
    details.sqlite = { ...sqlite, rate: round(sqlite.rate) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const postgres = await ctx.postgres();
  const pg = await drain(ctx, 'postgres', postgres.url, 2, count);
  figures.push({
    label: 'consumer, PostgreSQL, 2 consumers',
    value: round(pg.rate),
    unit: 'events/s',
    vsCeiling: true,
    target: { kind: 'ceiling-ratio-min', value: 0.5 },
  });
  details.postgres = { ...pg, rate: round(pg.rate) };
  return {
    id: '5',
    title: 'Consumer: prefilled queue drained into the instance database',
    figures,
    details,
    notes: [],
  };
}

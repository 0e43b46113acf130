/**
 * The consumer's own profiling harness (not part of `npm run bench`): one private RabbitMQ node (and a
 * private PostgreSQL when asked), the broker ceiling measured once, then drains of a prefilled queue
 * by consumer worker processes — exactly the way benchmark 5 measures them (bench/consumer.ts), but
 * with the database, the number of consumers, the count, the consumer's environment and repetitions
 * chosen on the command line, and optionally under `node --cpu-prof`.
 *
 *   node dist/bench/consumer-profile/run.js [--db sqlite|postgres|both] [--consumers N] [--count N]
 *       [--repeat N] [--profile DIR] [--env KEY=VALUE]… [--consumer-flags "--trace-gc …"]
 *       [--no-ceiling [--ceiling RATE]]
 *
 * Summarise a profile with `node dist/bench/profile.js DIR/<file>.cpuprofile`.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startRabbitMQ } from '../../src/sandbox';
import { measureCeiling, IN_FLIGHT } from '../ceiling';
import { declareTopology, queueDepth } from '../lib/amqp';
import { BenchContext } from '../lib/context';
import { Worker } from '../lib/ipc';
import type { ConsumerRunResult } from '../workers/consumer';

const INSTANCES = 1000;

/** CPU seconds (user + system) the broker's Erlang VM has used so far. */
function brokerCpuSeconds(dir: string): number {
  try {
    const pid = readFileSync(join(dir, 'rabbitmq.pid'), 'utf8').trim();
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return Number.NaN;
  }
}

function option(args: readonly string[], name: string): string | undefined {
  const index = args.indexOf(name);
  return index >= 0 ? args[index + 1] : undefined;
}

function options(args: readonly string[], name: string): string[] {
  const values: string[] = [];
  args.forEach((arg, index) => {
    if (arg === name && args[index + 1] !== undefined) values.push(args[index + 1] as string);
  });
  return values;
}

/** CPU seconds of a PostgreSQL cluster: the postmaster (with reaped children) and its live children. */
function postgresCpuSeconds(dir: string | undefined): number {
  if (!dir) return Number.NaN;
  try {
    const master = readFileSync(join(dir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0] as string;
    let ticks = 0;
    for (const pid of readdirSync('/proc')) {
      if (!/^\d+$/.test(pid)) continue;
      let fields: string[];
      try {
        fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
      } catch {
        continue;
      }
      if (pid === master)
        ticks += Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]);
      else if (fields[1] === master) ticks += Number(fields[11]) + Number(fields[12]);
    }
    return ticks / 100;
  } catch {
    return Number.NaN;
  }
}

async function drain(
  ctx: BenchContext,
  label: string,
  dbUrl: string,
  consumers: number,
  count: number,
  env: Record<string, string>,
  flags: readonly string[],
  postgresDir?: string,
): Promise<void> {
  const url = await ctx.vhost(`profile-${label}`);
  await declareTopology(url);
  const seeder = ctx.worker('consumer');
  await seeder.call('seed', { amqpUrl: url, dbUrl, count: INSTANCES });
  await seeder.close();
  const publisher = ctx.worker('publisher');
  await publisher.call('lifecycle', { url, count, window: IN_FLIGHT, domains: INSTANCES }, 600_000);
  await publisher.close();
  const workers = Array.from({ length: consumers }, () =>
    flags.length > 0 ? Worker.start('consumer', { execArgv: flags }) : ctx.worker('consumer'),
  );
  const brokerBefore = brokerCpuSeconds(ctx.rabbit.dir);
  const postgresBefore = postgresCpuSeconds(postgresDir);
  await Promise.all(workers.map((w) => w.call('start', { amqpUrl: url, dbUrl, env })));
  const deadline = Date.now() + 600_000;
  let total = 0;
  while (total < count && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    const counts = await Promise.all(workers.map((w) => w.call<{ processed: number }>('count')));
    total = counts.reduce((sum, c) => sum + c.processed, 0);
  }
  const results = await Promise.all(
    workers.map((w) => w.call<ConsumerRunResult>('wait', { count: 0, timeoutMs: 0 })),
  );
  const brokerCpu = brokerCpuSeconds(ctx.rabbit.dir) - brokerBefore;
  const postgresCpu = postgresCpuSeconds(postgresDir) - postgresBefore;
  await Promise.all(workers.map((w) => w.call('stop', {}, 30_000)));
  await Promise.all(workers.map((w) => w.close()));
  const first = Math.min(...results.map((r) => r.firstProcessedAtMs));
  const last = Math.max(...results.map((r) => r.lastProcessedAtMs));
  const processed = results.reduce((sum, r) => sum + r.processed, 0);
  const rate = processed / ((last - first) / 1000);
  const line = {
    label,
    consumers,
    processed,
    seconds: Math.round(last - first) / 1000,
    rate: Math.round(rate),
    ratio: Math.round((rate / ctx.ceiling) * 1000) / 1000,
    left: await queueDepth(url),
    outcomes: results.map((r) => r.outcomes),
    cpu: results.map((r) => r.resources?.cpuPercent),
    // consumer and broker CPU time per message (µs): steadier than rates on a shared machine
    consumerUs: Math.round(
      (results.reduce(
        (sum, r) => sum + ((r.resources?.cpuPercent ?? 0) / 100) * (r.resources?.wallSeconds ?? 0),
        0,
      ) *
        1e6) /
        processed,
    ),
    brokerUs: Math.round((brokerCpu * 1e6) / processed),
    ...(postgresDir ? { postgresUs: Math.round((postgresCpu * 1e6) / processed) } : {}),
    rss: results.map((r) => r.resources?.rssMaxMB),
    commitP50: results.map((r) => r.commitLatencyMs?.p50),
  };
  console.log(JSON.stringify(line));
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const db = option(args, '--db') ?? 'both';
  const consumers = Number(option(args, '--consumers') ?? '0');
  const count = Number(option(args, '--count') ?? '60000');
  const repeat = Number(option(args, '--repeat') ?? '1');
  const profile = option(args, '--profile');
  const flags = option(args, '--consumer-flags')?.split(' ').filter(Boolean) ?? [];
  const env = Object.fromEntries(
    options(args, '--env').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
  );
  const rabbit = await startRabbitMQ({ name: 'virtbus-consumer-profile' });
  const ctx = new BenchContext(rabbit, { quick: false, profileDir: undefined });
  const profiled = new BenchContext(rabbit, {
    quick: false,
    profileDir: profile ? resolve(profile) : undefined,
  });
  try {
    if (args.includes('--no-ceiling')) ctx.ceilingRuns.push(Number(option(args, '--ceiling') ?? '13000'));
    else {
      const url = await ctx.vhost('ceiling');
      await declareTopology(url);
      for (let i = 0; i < 2; i += 1) await measureCeiling(ctx, url, 100_000);
      console.log(JSON.stringify({ ceiling: ctx.ceilingRuns.map(Math.round) }));
    }
    profiled.ceilingRuns.push(ctx.ceiling);
    for (let r = 0; r < repeat; r += 1) {
      if (db === 'sqlite' || db === 'both') {
        const dir = mkdtempSync(join(tmpdir(), 'virtbus-profile-sqlite-'));
        try {
          await drain(
            profiled,
            'sqlite',
            `sqlite:${join(dir, 'instances.db')}`,
            consumers || 1,
            count,
            env,
            flags,
          );
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      }
      if (db === 'postgres' || db === 'both') {
        const postgres = await ctx.postgres();
        await drain(profiled, 'postgres', postgres.url, consumers || 2, count, env, flags, postgres.dir);
      }
    }
  } finally {
    await profiled.cleanup();
    await ctx.cleanup();
    await rabbit.dispose();
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error('consumer-profile failed:', error);
    process.exit(1);
  },
);

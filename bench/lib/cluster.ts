/**
 * What the cluster and fleet benchmarks share: one three-node cluster for the run (started on first
 * use, disposed with the context), a fresh vhost on it per measurement, the broker's CPU time (every
 * node's Erlang VM, from /proc) around a measurement, a raw amqplib drain (the consumer ceiling) and
 * a drain by real consumers (the consumer worker) into a database.
 *
 * Why CPU time from /proc: the capacity model (docs/scaling.md) needs the broker's cost per event,
 * and the VMs are not our processes; utime + stime of each beam.smp is what the node really spent.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, type ConsumeMessage } from 'amqplib';
import { startRabbitCluster, type RabbitCluster, type RabbitSandbox } from '../../src/sandbox';
import { CONSUMER_QUEUE, declareTopology, queueDepth } from './amqp';
import type { BenchContext } from './context';
import { IN_FLIGHT } from '../ceiling';
import { round } from './stats';
import type { ConsumerRunResult } from '../workers/consumer';

let shared: Promise<RabbitCluster> | undefined;
let vhosts = 0;

/** The run's cluster (started once). */
export function benchCluster(ctx: BenchContext): Promise<RabbitCluster> {
  if (!shared) {
    shared = startRabbitCluster({ name: 'virtbus-bench' });
    const started = shared;
    ctx.onCleanup(async () => {
      await (await started).dispose();
      shared = undefined;
    });
  }
  return shared;
}

/** A fresh vhost on the cluster, guest allowed; returns its URL on node `node` (default the first). */
export async function clusterVhost(
  cluster: RabbitCluster,
  name: string,
): Promise<{ url: string; urls: string; vhost: string }> {
  const vhost = `bench-${name}-${(vhosts += 1)}`;
  await cluster.ctl('add_vhost', vhost);
  await cluster.ctl('set_permissions', '-p', vhost, 'guest', '.*', '.*', '.*');
  const urls = cluster.urls({ vhost });
  // A vhost and its permissions reach every node shortly after add_vhost returns, not at once: wait
  // until each node lets guest in (a benchmark's first connection was refused without this).
  for (const url of urls.split(',')) {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const model = await connect(url).catch((error: unknown) => error as Error);
      if (!(model instanceof Error)) {
        await model.close().catch(() => undefined);
        break;
      }
      if (Date.now() > deadline) throw model;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
  return { url: urls.split(',')[0]!, urls, vhost };
}

function pidOf(node: RabbitSandbox): number | undefined {
  try {
    const pid = Number(readFileSync(join(node.dir, 'rabbitmq.pid'), 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** utime + stime of a process in seconds (USER_HZ 100). */
function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}

/** Runs `work` and returns its result with the CPU seconds each node spent meanwhile. */
export async function withBrokerCpu<T>(
  nodes: readonly RabbitSandbox[],
  work: () => Promise<T>,
): Promise<{ result: T; cpuSeconds: number[] }> {
  const pids = nodes.map(pidOf);
  const before = pids.map(cpuSeconds);
  const result = await work();
  return { result, cpuSeconds: pids.map((pid, i) => round(cpuSeconds(pid) - before[i]!, 2)) };
}

/** Prefills the consumer queue of `url` with `count` distinct events about `instances` instances. */
export async function prefill(
  ctx: BenchContext,
  url: string,
  count: number,
  instances: number,
): Promise<void> {
  const publisher = ctx.worker('publisher');
  try {
    await publisher.call('lifecycle', { url, count, window: IN_FLIGHT, domains: instances }, 300_000);
  } finally {
    await publisher.close();
  }
}

/** The consumer ceiling: a raw amqplib consumer acking every message, no parsing, no database. */
export async function rawDrain(url: string, count: number, prefetch = 1000): Promise<number> {
  const model = await connect(url);
  try {
    const channel = await model.createChannel();
    await channel.prefetch(prefetch);
    let done = 0;
    let first = 0;
    const finished = new Promise<number>((resolve) => {
      void channel.consume(CONSUMER_QUEUE, (message: ConsumeMessage | null) => {
        if (!message) return;
        if (done === 0) first = performance.now();
        channel.ack(message);
        done += 1;
        if (done === count) resolve((performance.now() - first) / 1000);
      });
    });
    const seconds = await finished;
    return count / seconds;
  } finally {
    await model.close().catch(() => undefined);
  }
}

export interface DrainFigures {
  readonly rate: number;
  readonly processed: number;
  readonly seconds: number;
  /** CPU of all consumer processes together per event, µs. */
  readonly cpuMicrosPerEvent: number;
  readonly left: number;
  readonly perConsumer: number[];
}

/**
 * Seeds `instances` rows, prefills `count` events and drains them with `consumers` consumer workers
 * (each wired as `virtbus consumer`) into `dbUrl`.
 */
export async function consumerDrain(
  ctx: BenchContext,
  url: string,
  dbUrl: string,
  consumers: number,
  count: number,
  env: Record<string, string> = {},
  instances = 1000,
): Promise<DrainFigures> {
  await declareTopology(url);
  const seeder = ctx.worker('consumer');
  await seeder.call('seed', { amqpUrl: url, dbUrl, count: instances });
  await seeder.close();
  await prefill(ctx, url, count, instances);
  const workers = Array.from({ length: consumers }, () => ctx.worker('consumer'));
  try {
    await Promise.all(workers.map((w) => w.call('start', { amqpUrl: url, dbUrl, env })));
    const deadline = Date.now() + 300_000;
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
    const first = Math.min(...results.map((r) => r.firstProcessedAtMs));
    const last = Math.max(...results.map((r) => r.lastProcessedAtMs));
    const processed = results.reduce((sum, r) => sum + r.processed, 0);
    const cpu = results.reduce(
      (sum, r) => sum + ((r.resources?.cpuPercent ?? 0) / 100) * (r.resources?.wallSeconds ?? 0),
      0,
    );
    return {
      rate: round(processed / ((last - first) / 1000)),
      processed,
      seconds: round((last - first) / 1000, 2),
      // The sampler also covers start-up and idle waiting; start-up CPU is small against the drain.
      cpuMicrosPerEvent: round((cpu * 1e6) / Math.max(1, processed), 1),
      left: await queueDepth(url),
      perConsumer: results.map((r) => r.processed),
    };
  } finally {
    await Promise.all(workers.map((w) => w.close()));
  }
}

/**
 * 11. The fleet on the cluster: throughput against the number of hosts (1…8 bridge processes, each
 * with its own libvirtd holding its own synthetic domains, bursting at once into the three-node
 * cluster) and against the number of consumers (1…3 `virtbus consumer`s sharing the queue and one
 * PostgreSQL database), each as a ratio of the cluster's raw publish or consume ceiling measured in
 * this benchmark on the same cluster. docs/scaling.md charts these figures and checks its capacity
 * model's prediction against them.
 */
import { Client } from 'pg';
import { declareTopology, purgeQueue } from './lib/amqp';
import { benchCluster, clusterVhost, consumerDrain, prefill, rawDrain, withBrokerCpu } from './lib/cluster';
import type { BenchContext, BenchResult, Figure } from './lib/context';
import { round } from './lib/stats';
import { IN_FLIGHT } from './ceiling';
import { syntheticLibvirtd } from './publish-path';
import type { PublishResult } from './workers/publisher';
import type { BridgeRunResult } from './workers/bridge';

const DOMAINS_PER_HOST = 100;

async function freshDatabase(base: string, name: string): Promise<string> {
  const admin = new Client({ connectionString: base });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(base);
  url.pathname = `/${name}`;
  return url.toString();
}

/** `hosts` bridge workers bursting `count` events between them at once; aggregate rate and CPU. */
async function hostsRun(
  ctx: BenchContext,
  urls: string,
  url: string,
  libvirtUris: readonly string[],
  count: number,
): Promise<Record<string, number>> {
  const workers = libvirtUris.map(() => ctx.worker('bridge'));
  try {
    await Promise.all(
      workers.map((w, i) => w.call('start', { amqpUrl: urls, libvirtUri: libvirtUris[i], env: {} })),
    );
    const each = Math.floor(count / workers.length);
    const started = Date.now();
    const results = await Promise.all(
      workers.map((w) =>
        w.call<BridgeRunResult>('burst', { count: each, domains: DOMAINS_PER_HOST }, 300_000),
      ),
    );
    const seconds = (Math.max(...results.map((r) => r.lastConfirmAtMs)) - started) / 1000;
    const events = results.reduce((s, r) => s + r.events, 0);
    const cpu = results.reduce((s, r) => s + (r.resources.cpuPercent / 100) * r.resources.wallSeconds, 0);
    await Promise.all(workers.map((w) => w.call('stop', {}, 30_000)));
    return {
      hosts: workers.length,
      events,
      seconds: round(seconds, 2),
      rate: round(events / seconds),
      bridgeCpuMicrosPerEvent: round((cpu * 1e6) / events, 1),
      dropped: results.reduce((s, r) => s + r.dropped, 0),
    };
  } finally {
    await Promise.all(workers.map((w) => w.close()));
    await purgeQueue(url);
  }
}

export async function run(ctx: BenchContext): Promise<BenchResult> {
  const count = ctx.options.quick ? 8_000 : 32_000;
  const consumed = ctx.options.quick ? 5_000 : 20_000;
  const hostCounts = ctx.options.quick ? [1, 2, 4] : [1, 2, 4, 8];
  const cluster = await benchCluster(ctx);
  const details: Record<string, unknown> = { count, consumed, domainsPerHost: DOMAINS_PER_HOST };

  const { url, urls } = await clusterVhost(cluster, 'fleet');
  await declareTopology(url);
  const publisher = ctx.worker('publisher');
  const ceiling = (await publisher.call<PublishResult>('ceiling', { url, count, window: IN_FLIGHT })).rate;
  await publisher.close();
  await purgeQueue(url);
  details.publishCeiling = round(ceiling);

  const libvirtds: string[] = [];
  for (let i = 0; i < Math.max(...hostCounts); i += 1)
    libvirtds.push((await syntheticLibvirtd(ctx, DOMAINS_PER_HOST)).uri);
  const byHosts: Array<Record<string, number>> = [];
  for (const hosts of hostCounts) {
    const measured = await withBrokerCpu(cluster.nodes, () =>
      hostsRun(ctx, urls, url, libvirtds.slice(0, hosts), count),
    );
    byHosts.push({
      ...measured.result,
      ratio: round(measured.result.rate! / ceiling, 3),
      brokerCpuMicrosPerEvent: round((measured.cpuSeconds.reduce((a, b) => a + b, 0) * 1e6) / count, 1),
    });
  }
  details.byHosts = byHosts;

  await prefill(ctx, url, consumed, 1000);
  const consumeCeiling = await rawDrain(url, consumed);
  details.consumeCeiling = round(consumeCeiling);
  const postgres = await ctx.postgres();
  const byConsumers: Array<Record<string, unknown>> = [];
  for (const consumers of [1, 2, 3]) {
    const target = await clusterVhost(cluster, `fleet-pg-${consumers}`);
    const dbUrl = await freshDatabase(postgres.url, `fleet_${consumers}`);
    const drained = await consumerDrain(ctx, target.url, dbUrl, consumers, consumed);
    byConsumers.push({ consumers, ...drained, ratio: round(drained.rate / consumeCeiling, 3) });
  }
  details.byConsumers = byConsumers;

  const figures: Figure[] = [
    { label: 'fleet: cluster publish ceiling', value: round(ceiling), unit: 'msg/s' },
    ...byHosts.map((h) => ({
      label: `fleet: ${h.hosts} host(s) → cluster, ratio of its ceiling`,
      value: h.ratio!,
      unit: '×',
    })),
    { label: 'fleet: cluster consume ceiling', value: round(consumeCeiling), unit: 'msg/s' },
    ...byConsumers.map((c) => ({
      label: `fleet: ${String(c.consumers)} consumer(s), PostgreSQL, ratio of the consume ceiling`,
      value: c.ratio as number,
      unit: '×',
    })),
    {
      label: 'consumer CPU per event, PostgreSQL + notifications (1 consumer)',
      value: (byConsumers[0] as { cpuMicrosPerEvent: number }).cpuMicrosPerEvent,
      unit: 'µs',
    },
  ];
  return {
    id: '11',
    title: 'Fleet on the cluster: throughput against hosts and consumers',
    figures,
    details,
    notes: [
      `fleet: ${byHosts.map((h) => `${h.hosts} hosts ${h.rate}/s`).join(', ')}; ${byConsumers
        .map((c) => `${String(c.consumers)} consumers ${String(c.rate)}/s`)
        .join(', ')}`,
    ],
  };
}

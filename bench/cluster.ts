/**
 * 10. The three-node cluster: the broker's ceilings on the cluster (a raw amqplib publisher to the
 * replicated quorum queue, a raw amqplib consumer draining it), the bridge and the consumer on the
 * same cluster as a ratio of those ceilings measured in this run, and the CPU each part spends per
 * event — bridge process, broker (single node vs the three nodes together: the cost of quorum
 * replication), consumer on SQLite with and without instance.update notifications — which is what
 * docs/scaling.md builds its capacity model from.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { declareTopology, purgeQueue } from './lib/amqp';
import { benchCluster, clusterVhost, consumerDrain, prefill, rawDrain, withBrokerCpu } from './lib/cluster';
import type { BenchContext, BenchResult, Figure } from './lib/context';
import { round } from './lib/stats';
import { IN_FLIGHT, measureCeiling } from './ceiling';
import { summary, syntheticLibvirtd } from './publish-path';
import type { BridgeRunResult } from './workers/bridge';
import type { PublishResult } from './workers/publisher';

const micros = (cpuSeconds: number, events: number): number => round((cpuSeconds * 1e6) / events, 1);
const sum = (values: readonly number[]): number => values.reduce((a, b) => a + b, 0);

export async function run(ctx: BenchContext): Promise<BenchResult> {
  const count = ctx.options.quick ? 10_000 : 40_000;
  const consumed = ctx.options.quick ? 5_000 : 20_000;
  const cluster = await benchCluster(ctx);
  const details: Record<string, unknown> = { count, consumed, nodes: cluster.nodes.length };

  // Single node: the suite's own node, for the broker's cost per message without replication.
  const single = await ctx.vhost('cluster-single');
  await declareTopology(single);
  const singleRun = await withBrokerCpu([ctx.rabbit], () => measureCeiling(ctx, single, count));
  const singleMicros = micros(sum(singleRun.cpuSeconds), count);
  details.singleNode = { rate: round(singleRun.result.rate), brokerCpuMicrosPerMessage: singleMicros };

  // The cluster's publish ceiling: the same raw publisher into the quorum queue with 3 members.
  const { url, urls, vhost } = await clusterVhost(cluster, 'ceiling');
  await declareTopology(url);
  details.replicas = Object.fromEntries(await cluster.replicas(vhost));
  const publisher = ctx.worker('publisher');
  const ceilingRun = await withBrokerCpu(cluster.nodes, () =>
    publisher.call<PublishResult>('ceiling', { url, count, window: IN_FLIGHT }),
  );
  await publisher.close();
  await purgeQueue(url);
  const ceiling = ceilingRun.result.rate;
  const clusterMicros = micros(sum(ceilingRun.cpuSeconds), count);
  details.publishCeiling = {
    rate: round(ceiling),
    brokerCpuMicrosPerMessage: clusterMicros,
    perNodeCpuSeconds: ceilingRun.cpuSeconds,
    publisherCpuMicrosPerMessage: micros(
      (ceilingRun.result.resources.cpuPercent / 100) * ceilingRun.result.seconds,
      count,
    ),
  };

  // The consumer ceiling on the cluster: a raw consumer acking each message.
  await prefill(ctx, url, consumed, 1000);
  const drained = await withBrokerCpu(cluster.nodes, () => rawDrain(url, consumed));
  const consumerCeiling = drained.result;
  details.consumeCeiling = {
    rate: round(consumerCeiling),
    brokerCpuMicrosPerMessage: micros(sum(drained.cpuSeconds), consumed),
  };

  // The bridge (real Bridge in its own process) publishing to the cluster, given all three URLs.
  const libvirt = await syntheticLibvirtd(ctx, 1000);
  // The worker gets the three URLs; the purge afterwards one of them (amqplib takes a single URL).
  const bridgeWorker = ctx.worker('bridge');
  const bridge = await withBrokerCpu(cluster.nodes, async () => {
    await bridgeWorker.call('start', { amqpUrl: urls, libvirtUri: libvirt.uri, env: {} });
    return bridgeWorker.call<BridgeRunResult>('burst', { count, domains: 1000 }, 300_000);
  }).finally(async () => {
    await bridgeWorker.call('stop', {}, 30_000).catch(() => undefined);
    await bridgeWorker.close();
    await purgeQueue(url);
  });
  const bridgeMicros = micros(
    (bridge.result.resources.cpuPercent / 100) * bridge.result.resources.wallSeconds,
    count,
  );
  details.bridge = {
    ...summary(bridge.result),
    ratio: round(bridge.result.rate / ceiling, 3),
    bridgeCpuMicrosPerEvent: bridgeMicros,
    brokerCpuMicrosPerEvent: micros(sum(bridge.cpuSeconds), count),
  };

  // The consumer (as `virtbus consumer`) on SQLite, with and without instance.update notifications.
  const dir = mkdtempSync(join(tmpdir(), 'virtbus-bench-cluster-'));
  try {
    for (const notify of [true, false]) {
      const target = await clusterVhost(cluster, `consumer-sqlite-${notify ? 'notify' : 'quiet'}`);
      const figures = await withBrokerCpu(cluster.nodes, () =>
        consumerDrain(ctx, target.url, `sqlite:${join(dir, `${notify}.db`)}`, 1, consumed, {
          VIRTBUS_NOTIFICATIONS: String(notify),
        }),
      );
      details[notify ? 'consumerSqliteNotify' : 'consumerSqliteQuiet'] = {
        ...figures.result,
        ratio: round(figures.result.rate / consumerCeiling, 3),
        brokerCpuMicrosPerEvent: micros(sum(figures.cpuSeconds), consumed),
      };
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const notify = details.consumerSqliteNotify as { rate: number; cpuMicrosPerEvent: number };
  const quiet = details.consumerSqliteQuiet as { rate: number; cpuMicrosPerEvent: number };

  const figures: Figure[] = [
    { label: 'cluster publish ceiling (raw amqplib, quorum ×3)', value: round(ceiling), unit: 'msg/s' },
    { label: 'cluster consume ceiling (raw amqplib)', value: round(consumerCeiling), unit: 'msg/s' },
    {
      label: 'bridge → cluster, ratio of the cluster publish ceiling',
      value: round(bridge.result.rate / ceiling, 2),
      unit: '×',
    },
    {
      label: 'consumer SQLite → ratio of the cluster consume ceiling',
      value: round(notify.rate / consumerCeiling, 2),
      unit: '×',
    },
    { label: 'broker CPU per message, single node', value: singleMicros, unit: 'µs' },
    { label: 'broker CPU per message, 3-node cluster (all nodes)', value: clusterMicros, unit: 'µs' },
    { label: 'bridge CPU per event', value: bridgeMicros, unit: 'µs' },
    { label: 'consumer CPU per event, SQLite + notifications', value: notify.cpuMicrosPerEvent, unit: 'µs' },
    { label: 'consumer CPU per event, SQLite, no notifications', value: quiet.cpuMicrosPerEvent, unit: 'µs' },
  ];
  return {
    id: '10',
    title: 'Three-node cluster: ceilings, ratios and CPU per event',
    figures,
    details,
    notes: [
      `cluster ceilings measured in this run: publish ${round(ceiling)} msg/s, consume ${round(consumerCeiling)} msg/s; bridge ${round(bridge.result.rate)} events/s`,
    ],
  };
}

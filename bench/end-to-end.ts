/**
 * 4. End to end with libvirt: a private libvirtd (test driver) with many running domains, driven by
 * several client processes (the addon's client calls on each one's libuv thread pool, 4 concurrent
 * suspend/resume loops per process); a real Bridge (worker process) publishing to the production
 * topology; a consumer (worker process, SQLite) applying every event to the instance database.
 *
 * - flat out: the drivers go as fast as libvirtd lets them; lag = last broker confirm (and last
 *   database commit) after the drivers' last operation returned;
 * - at half the broker ceiling's rate (as far as libvirtd goes): p50/p99 of occurred_at → broker
 *   confirm (measured at the bridge's confirm, as virtbus_event_to_confirm_seconds) and occurred_at
 *   → database commit (measured at the consumer's committed row write, as
 *   virtbus_event_to_sync_seconds);
 * - the same at half the rate this whole pipeline sustained flat out on this machine, where nothing
 *   is saturated; the bridge's RSS at that steady load.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { declareTopology } from './lib/amqp';
import type { BenchContext, BenchResult } from './lib/context';
import type { Worker } from './lib/ipc';
import { driveAll, type DriveOptions } from './lib/drive';
import { round } from './lib/stats';
import { summary } from './publish-path';
import type { BridgeRunResult } from './workers/bridge';
import type { ConsumerRunResult } from './workers/consumer';

const DOMAINS = 200;
const DRIVERS = 2;
const WORKERS_PER_DRIVER = 4;

/** This benchmark's drive: WORKERS_PER_DRIVER clients per driver process. */
function driveOptions(uri: string, uuids: string[], events: number, rate: number): DriveOptions {
  return { uri, uuids, events, rate, workersPerDriver: WORKERS_PER_DRIVER, timeoutMs: 300_000 };
}

/** Waits until the consumer has processed `count` messages since its mark (or the timeout). */
async function consumed(consumer: Worker, count: number, timeoutMs: number): Promise<ConsumerRunResult> {
  return consumer.call<ConsumerRunResult>('wait', { count, timeoutMs }, timeoutMs + 30_000);
}

export async function run(ctx: BenchContext): Promise<BenchResult> {
  const flatOut = ctx.options.quick ? 10_000 : 30_000;
  const pacedSeconds = ctx.options.quick ? 4 : 8;
  const url = await ctx.vhost('e2e');
  await declareTopology(url);
  const libvirtd = await ctx.libvirtd();
  const drivers = Array.from({ length: DRIVERS }, () => ctx.worker('driver'));
  const uuids = (
    await Promise.all(
      drivers.map((d, i) =>
        d.call<string[]>('create', { uri: libvirtd.uri, prefix: `e2e${i}`, count: DOMAINS / DRIVERS }),
      ),
    )
  ).flat();
  const dir = mkdtempSync(join(tmpdir(), 'virtbus-bench-e2e-'));
  const dbUrl = `sqlite:${join(dir, 'instances.db')}`;
  let bridge = ctx.worker('bridge');
  const consumer = ctx.worker('consumer');
  /** A bridge process, up once the consumer has applied its start snapshot (a sync per domain and a sync_end). */
  const startBridge = async (): Promise<void> => {
    await consumer.call('mark');
    await bridge.call('start', { amqpUrl: url, libvirtUri: libvirtd.uri });
    await consumer.call('wait', { count: uuids.length + 1, timeoutMs: 60_000 }, 90_000);
  };
  try {
    await consumer.call('seed', { amqpUrl: url, dbUrl, count: uuids.length, uuids });
    await consumer.call('start', { amqpUrl: url, dbUrl });
    await startBridge();

    // Flat out.
    await consumer.call('mark');
    await bridge.call('begin', { events: flatOut, latency: true });
    const fast = await driveAll(drivers, driveOptions(libvirtd.uri, uuids, flatOut, 0));
    const fastBridge = await bridge.call<BridgeRunResult>(
      'end',
      { timeoutMs: 120_000, events: fast.events },
      180_000,
    );
    const fastConsumer = await consumed(consumer, fast.events, 240_000);

    // Paced: at half the ceiling's rate (as far as libvirtd goes), then at half of what this whole
    // pipeline sustained flat out on this machine (its own operating point, below saturation).
    const pacedRun = async (rate: number) => {
      const events = Math.round(rate * pacedSeconds);
      await consumer.call('mark');
      await bridge.call('begin', { events, latency: true });
      const driven = await driveAll(drivers, driveOptions(libvirtd.uri, uuids, events, rate));
      const atBridge = await bridge.call<BridgeRunResult>(
        'end',
        { timeoutMs: 120_000, events: driven.events },
        180_000,
      );
      const atConsumer = await consumed(consumer, driven.events, 240_000);
      return { asked: rate, driven, bridge: atBridge, consumer: atConsumer };
    };
    // A fresh bridge process, so that its RSS is that of this steady load, not of the flat-out backlog.
    await bridge.call('stop', {}, 30_000);
    await bridge.close();
    bridge = ctx.worker('bridge');
    await startBridge();
    const sustained = Math.min(fast.rate, fastBridge.rate, fastConsumer.rate);
    const atOwn = await pacedRun(Math.round(sustained / 2));
    const half = Math.round(ctx.ceiling / 2);
    const atHalf = await pacedRun(half);
    const paced = atHalf.driven;
    const pacedBridge = atHalf.bridge;
    const pacedConsumer = atHalf.consumer;
    await bridge.call('stop', {}, 30_000);
    await consumer.call('stop', {}, 30_000);

    const own = Math.round(atOwn.driven.rate);
    const lag = (atMs: number): number => round(Math.max(0, atMs - fast.finishedAtMs) / 1000, 2);
    const pacedNote =
      paced.rate < half * 0.9
        ? `at ½ ceiling the drivers reached ${Math.round(paced.rate)}/s of the ${half}/s asked for; flat out the pipeline sustained ${Math.round(sustained)}/s (libvirtd, drivers, bridge, broker and consumer share the CPUs)`
        : undefined;
    return {
      id: '4',
      title: `End to end: libvirtd (${DOMAINS} domains, ${DRIVERS}×${WORKERS_PER_DRIVER} clients) → bridge → broker → consumer (SQLite)`,
      figures: [
        { label: 'libvirt events, flat out', value: round(fast.rate), unit: 'events/s', vsCeiling: true },
        {
          label: 'bridge lag after load stops',
          value: lag(fastBridge.lastConfirmAtMs),
          unit: 's',
          target: { kind: 'max', value: 1 },
        },
        { label: 'consumer lag after load stops', value: lag(fastConsumer.lastProcessedAtMs), unit: 's' },
        {
          label: `event → confirm p50 at ${Math.round(paced.rate)}/s`,
          value: pacedBridge.latencyMs && round(pacedBridge.latencyMs.p50, 2),
          unit: 'ms',
          ...(pacedNote ? { note: pacedNote } : {}),
        },
        {
          label: `event → confirm p99 at ${Math.round(paced.rate)}/s`,
          value: pacedBridge.latencyMs && round(pacedBridge.latencyMs.p99, 2),
          unit: 'ms',
          target: { kind: 'max', value: 25 },
        },
        {
          label: `event → DB commit p50 at ${Math.round(paced.rate)}/s`,
          value: pacedConsumer.commitLatencyMs && round(pacedConsumer.commitLatencyMs.p50, 2),
          unit: 'ms',
        },
        {
          label: `event → DB commit p99 at ${Math.round(paced.rate)}/s`,
          value: pacedConsumer.commitLatencyMs && round(pacedConsumer.commitLatencyMs.p99, 2),
          unit: 'ms',
          target: { kind: 'max', value: 100 },
        },
        {
          label: 'bridge RSS at that load (max)',
          value: pacedBridge.resources.rssMaxMB,
          unit: 'MB',
        },
        ...(['p50', 'p99'] as const).map((q) => ({
          label: `at ${own}/s (½ this pipeline's flat-out rate): event → confirm ${q}`,
          value: atOwn.bridge.latencyMs && round(atOwn.bridge.latencyMs[q], 2),
          unit: 'ms',
        })),
        ...(['p50', 'p99'] as const).map((q) => ({
          label: `at ${own}/s: event → DB commit ${q}`,
          value: atOwn.consumer.commitLatencyMs && round(atOwn.consumer.commitLatencyMs[q], 2),
          unit: 'ms',
        })),
        {
          label: `bridge RSS at ${own}/s (steady load), max`,
          value: atOwn.bridge.resources.rssMaxMB,
          unit: 'MB',
          target: { kind: 'max', value: 100 },
        },
      ],
      details: {
        domains: DOMAINS,
        drivers: DRIVERS,
        workersPerDriver: WORKERS_PER_DRIVER,
        flatOut: { driven: fast, bridge: summary(fastBridge), consumer: fastConsumer },
        atHalfCeiling: { asked: half, driven: paced, bridge: summary(pacedBridge), consumer: pacedConsumer },
        atHalfOwnRate: {
          asked: atOwn.asked,
          driven: atOwn.driven,
          bridge: summary(atOwn.bridge),
          consumer: atOwn.consumer,
        },
      },
      notes: pacedNote ? [pacedNote] : [],
    };
  } finally {
    await Promise.all([bridge.close(), consumer.close(), ...drivers.map((d) => d.close())]);
    rmSync(dir, { recursive: true, force: true });
  }
}

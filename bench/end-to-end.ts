/**
 * 4. End to end with libvirt: a private libvirtd (test driver) with many running domains, driven by
 * several client processes (the addon's client calls on each one's libuv thread pool, 4 concurrent
 * suspend/resume loops per process); a real Bridge (worker process) publishing to the production
 * topology; a consumer (worker process, SQLite) applying every event to the instance database.
 *
 * - flat out: the drivers go as fast as libvirtd lets them; lag = last broker confirm (and last
 *   database commit) after the drivers' last operation returned;
 * - at half the broker ceiling's rate: p50/p99 of occurred_at → broker confirm (measured at the
 *   bridge's confirm, as virtbus_event_to_confirm_seconds) and occurred_at → database commit
 *   (measured at the consumer's committed row write, as virtbus_event_to_sync_seconds); the bridge's
 *   RSS at that steady load.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { declareTopology } from './lib/amqp';
import type { BenchContext, BenchResult } from './lib/context';
import type { Worker } from './lib/ipc';
import { round } from './lib/stats';
import { summary } from './publish-path';
import type { BridgeRunResult } from './workers/bridge';
import type { ConsumerRunResult } from './workers/consumer';

const DOMAINS = 200;
const DRIVERS = 2;
const WORKERS_PER_DRIVER = 4;

interface DriveResult {
  events: number;
  errors: number;
  seconds: number;
  rate: number;
  finishedAtMs: number;
}

/** Every driver process drives its share of `uuids`; resolves with the combined figures. */
async function drive(drivers: Worker[], uri: string, uuids: string[], events: number, rate: number) {
  const per = Math.floor(events / drivers.length);
  const started = Date.now();
  const results = await Promise.all(
    drivers.map((driver, d) =>
      driver.call<DriveResult>(
        'drive',
        {
          uri,
          uuids: uuids.filter((_, i) => i % drivers.length === d),
          workers: WORKERS_PER_DRIVER,
          events: per,
          rate: rate / drivers.length,
        },
        300_000,
      ),
    ),
  );
  const done = results.reduce((sum, r) => sum + r.events, 0);
  const finishedAtMs = Math.max(...results.map((r) => r.finishedAtMs));
  return {
    events: done,
    errors: results.reduce((sum, r) => sum + r.errors, 0),
    seconds: (finishedAtMs - started) / 1000,
    rate: done / ((finishedAtMs - started) / 1000),
    finishedAtMs,
  };
}

/** Waits until the consumer has processed `count` messages since its mark (or the timeout). */
async function consumed(consumer: Worker, count: number, timeoutMs: number): Promise<ConsumerRunResult> {
  return consumer.call<ConsumerRunResult>('wait', { count, timeoutMs }, timeoutMs + 30_000);
}

export async function run(ctx: BenchContext): Promise<BenchResult> {
  const flatOut = ctx.options.quick ? 10_000 : 40_000;
  const pacedSeconds = ctx.options.quick ? 4 : 10;
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
  const bridge = ctx.worker('bridge');
  const consumer = ctx.worker('consumer');
  try {
    await consumer.call('seed', { amqpUrl: url, dbUrl, count: uuids.length, uuids });
    await consumer.call('start', { amqpUrl: url, dbUrl });
    await bridge.call('start', { amqpUrl: url, libvirtUri: libvirtd.uri });
    // The start snapshot (a sync per domain and a sync_end) reaches the consumer first.
    await consumer.call('wait', { count: uuids.length + 1, timeoutMs: 60_000 }, 90_000);

    // Flat out.
    await consumer.call('mark');
    await bridge.call('begin', { events: flatOut, latency: true });
    const fast = await drive(drivers, libvirtd.uri, uuids, flatOut, 0);
    const fastBridge = await bridge.call<BridgeRunResult>(
      'end',
      { timeoutMs: 120_000, events: fast.events },
      180_000,
    );
    const fastConsumer = await consumed(consumer, fast.events, 240_000);

    // At half the ceiling's rate.
    const half = Math.round(ctx.ceiling / 2);
    const pacedEvents = Math.round(half * pacedSeconds);
    await consumer.call('mark');
    await bridge.call('begin', { events: pacedEvents, latency: true });
    const paced = await drive(drivers, libvirtd.uri, uuids, pacedEvents, half);
    const pacedBridge = await bridge.call<BridgeRunResult>(
      'end',
      { timeoutMs: 120_000, events: paced.events },
      180_000,
    );
    const pacedConsumer = await consumed(consumer, paced.events, 240_000);
    await bridge.call('stop', {}, 30_000);
    await consumer.call('stop', {}, 30_000);

    const lag = (atMs: number): number => round(Math.max(0, atMs - fast.finishedAtMs) / 1000, 2);
    const pacedNote =
      paced.rate < half * 0.9
        ? `libvirtd reached only ${Math.round(paced.rate)}/s of the ${half}/s asked for (½ ceiling)`
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
          label: 'bridge RSS at that steady load (max)',
          value: pacedBridge.resources.rssMaxMB,
          unit: 'MB',
          target: { kind: 'max', value: 100 },
        },
      ],
      details: {
        domains: DOMAINS,
        drivers: DRIVERS,
        workersPerDriver: WORKERS_PER_DRIVER,
        flatOut: { driven: fast, bridge: summary(fastBridge), consumer: fastConsumer },
        paced: { asked: half, driven: paced, bridge: summary(pacedBridge), consumer: pacedConsumer },
      },
      notes: pacedNote ? [pacedNote] : [],
    };
  } finally {
    await Promise.all([bridge.close(), consumer.close(), ...drivers.map((d) => d.close())]);
    rmSync(dir, { recursive: true, force: true });
  }
}

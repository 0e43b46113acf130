/**
 * Worker: a real Bridge (src/bridge/bridge.ts) in this process — native event loop, event pump,
 * dispatcher with live state sampling against the bench's libvirtd, outbox and confirmed publisher —
 * with the addon's synthetic injector pushing events from a native thread through the same enqueue
 * path libvirt's callbacks use. The outbox is wrapped to count confirms and time each event from
 * occurred_at to its broker confirm.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getHeapSpaceStatistics } from 'node:v8';
import { Bridge } from '../../src/bridge/bridge';
import { openOutbox } from '../../src/bridge/open-outbox';
import { loadConfig } from '../../src/config/load';
import { loadNativeBinding } from '../../src/native/binding';
import { createLogger } from '../../src/util/log';
import { waitUntil } from '../../src/sandbox';
import { serve } from '../lib/ipc';
import { MeasuredOutbox } from '../lib/measured-outbox';
import { BENCH_HOST } from '../lib/amqp';
import {
  bucketQuantile,
  distribution,
  ResourceSampler,
  type Distribution,
  type ResourceUse,
} from '../lib/stats';

const binding = loadNativeBinding();
let bridge: Bridge | undefined;
let outbox: MeasuredOutbox | undefined;
let journalDir = '';
let droppingInjector: { stop(): Promise<{ injected: number; seconds: number }> } | undefined;

export interface BridgeRunResult {
  /** Events confirmed (of `expected`). */
  readonly events: number;
  readonly expected: number;
  readonly seconds: number;
  readonly rate: number;
  /** How long the injector took to hand all events over (≈ how fast the bridge accepted them). */
  readonly injectSeconds: number;
  readonly bodyBytes: number;
  readonly latencyMs: Distribution | null;
  /** occurred_at → the dispatcher's append() call, and → its resolution (durable for the journal). */
  readonly stagesMs: { toAppend: Distribution | null; toDurable: Distribution | null };
  /** The bridge's own histogram over the same run (bucket-interpolated), for comparison. */
  readonly histogramMs: { p50: number | null; p99: number | null };
  readonly queueHighWater: number;
  readonly dropped: number;
  readonly resources: ResourceUse;
  readonly outboxPeak: number;
  /** Epoch ms of the run's last confirm (or of the deadline). */
  readonly lastConfirmAtMs: number;
}

type Buckets = Array<{ le: number; count: number }>;

async function confirmBuckets(): Promise<Buckets> {
  const { values } = await bridge!.metrics.eventToConfirm.get();
  return values
    .filter((v) => v.metricName?.endsWith('_bucket'))
    .map((v) => ({ le: v.labels.le === '+Inf' ? Infinity : Number(v.labels.le), count: v.value }));
}

function deltaBuckets(after: Buckets, before: Buckets): Buckets {
  return after.map((b) => ({ le: b.le, count: b.count - (before.find((x) => x.le === b.le)?.count ?? 0) }));
}

interface Run {
  readonly events: number;
  readonly target: number;
  readonly bytesBefore: number;
  readonly appendedBefore: number;
  readonly before: Buckets;
  readonly droppedBefore: number;
  readonly sampler: ResourceSampler;
  readonly started: number;
  readonly peakTimer: NodeJS.Timeout;
  outboxPeak: number;
  injected: number;
}

let current: Run | undefined;

/** Starts measuring a run of `events` events (none may be in flight). */
async function begin(events: number, latency: boolean): Promise<void> {
  const box = outbox!;
  await waitUntil('an idle outbox before the run', () => box.depth === 0, 60_000, 10);
  box.latencies.clear();
  box.toAppend.clear();
  box.toDurable.clear();
  box.measureLatency = latency;
  const run: Run = {
    events,
    target: box.confirmed + events,
    bytesBefore: box.bodyBytes,
    appendedBefore: box.appended,
    before: await confirmBuckets(),
    droppedBefore: binding.queueStats().dropped,
    sampler: new ResourceSampler(),
    started: performance.now(),
    peakTimer: setInterval(() => (run.outboxPeak = Math.max(run.outboxPeak, box.depth)), 20),
    outboxPeak: 0,
    injected: 0,
  };
  current = run;
}

/** Waits for the run's last confirm (or the deadline) and reports it. */
async function end(timeoutMs: number, events?: number): Promise<BridgeRunResult> {
  const box = outbox!;
  const begun = current!;
  // The driver may have made fewer events happen than announced (a failed libvirt call).
  const run: Run =
    events === undefined ? begun : { ...begun, events, target: begun.target - begun.events + events };
  if (run.injected === 0) run.injected = performance.now();
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    box.whenConfirmed(run.target),
    new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs))),
  ]);
  clearTimeout(timer);
  const lastConfirmAtMs = Date.now();
  const seconds = (performance.now() - run.started) / 1000;
  const resources = run.sampler.stop();
  clearInterval(run.peakTimer);
  box.measureLatency = false;
  const buckets = deltaBuckets(await confirmBuckets(), run.before);
  const q = (x: number): number | null => {
    const v = bucketQuantile(buckets, x);
    return v === null ? null : Math.round(v * 1e4) / 10;
  };
  const stats = binding.queueStats();
  const confirmed = Math.min(run.events, box.confirmed - (run.target - run.events));
  current = undefined;
  return {
    events: confirmed,
    expected: run.events,
    seconds,
    rate: confirmed / seconds,
    injectSeconds: (run.injected - run.started) / 1000,
    bodyBytes: Math.round((box.bodyBytes - run.bytesBefore) / Math.max(1, box.appended - run.appendedBefore)),
    latencyMs: distribution(box.latencies.values()),
    stagesMs: {
      toAppend: distribution(box.toAppend.values()),
      toDurable: distribution(box.toDurable.values()),
    },
    histogramMs: { p50: q(0.5), p99: q(0.99) },
    queueHighWater: stats.highWater,
    dropped: stats.dropped - run.droppedBefore,
    resources,
    outboxPeak: begun.outboxPeak,
    lastConfirmAtMs,
  };
}

/** Runs `drive` (which makes `events` events happen) and measures until all are confirmed. */
async function measure(
  events: number,
  latency: boolean,
  drive: () => Promise<void>,
): Promise<BridgeRunResult> {
  await begin(events, latency);
  await drive();
  current!.injected = performance.now();
  return end(600_000);
}

serve({
  async start(params: { amqpUrl: string; libvirtUri: string; env?: Record<string, string> }) {
    journalDir = mkdtempSync(join(tmpdir(), 'virtbus-bench-outbox-'));
    const config = loadConfig({
      role: 'bridge',
      skipDefaultFile: true,
      env: {
        VIRTBUS_HOST: BENCH_HOST,
        VIRTBUS_AMQP_URL: params.amqpUrl,
        VIRTBUS_LIBVIRT_URI: params.libvirtUri,
        VIRTBUS_METRICS_PORT: '0',
        VIRTBUS_LOG_LEVEL: 'warn',
        VIRTBUS_RESYNC_INTERVAL: '0',
        VIRTBUS_AMQP_RECONNECT_INITIAL_DELAY_MS: '100',
        VIRTBUS_AMQP_RECONNECT_MAX_DELAY_MS: '500',
        VIRTBUS_OUTBOX_DIR: journalDir,
        ...params.env,
      },
    });
    const logger = createLogger(config.log.level, 'bench-bridge');
    // The outbox bridge.outbox.* configures (default: the durable journal), as `virtbus bridge` opens it.
    const inner = await openOutbox(config, logger);
    outbox = new MeasuredOutbox(inner);
    bridge = new Bridge({ config, binding, logger, outbox });
    await bridge.start();
    const box = outbox;
    const up = bridge;
    // Up when libvirt and the broker are connected and the start snapshot is confirmed.
    await waitUntil(
      'the bridge to connect and publish its start snapshot',
      () => up.libvirtUp && up.amqpUp && box.appended > 0 && box.depth === 0,
      60_000,
      20,
    );
    return { rssMB: Math.round(process.memoryUsage.rss() / 1048576), outbox: config.bridge.outbox.kind };
  },

  /** Measures the next `events` events, made to happen by someone else (a libvirt driver). */
  async begin(params: { events: number; latency?: boolean }) {
    await begin(params.events, params.latency ?? true);
    return {};
  },

  end(params: { timeoutMs: number; events?: number }) {
    return end(params.timeoutMs, params.events);
  },

  /** V8 heap spaces (MB, committed/used) and external memory: where the RSS goes. */
  heap() {
    const spaces = Object.fromEntries(
      getHeapSpaceStatistics().map((space) => [
        space.space_name,
        {
          committedMB: Math.round((space.physical_space_size / 1048576) * 10) / 10,
          usedMB: Math.round((space.space_used_size / 1048576) * 10) / 10,
        },
      ]),
    );
    const usage = process.memoryUsage();
    return Promise.resolve({
      rssMB: Math.round((usage.rss / 1048576) * 10) / 10,
      externalMB: Math.round((usage.external / 1048576) * 10) / 10,
      arrayBuffersMB: Math.round((usage.arrayBuffers / 1048576) * 10) / 10,
      spaces,
    });
  },

  /** Outbox and process figures right now (for memory while the broker is away). */
  status() {
    const box = outbox!;
    return Promise.resolve({
      depth: box.depth,
      appended: box.appended,
      confirmed: box.confirmed,
      rssMB: Math.round((process.memoryUsage.rss() / 1048576) * 10) / 10,
      heapUsedMB: Math.round((process.memoryUsage().heapUsed / 1048576) * 10) / 10,
      journalBytes: box.inner.bytes,
      amqpUp: bridge!.amqpUp,
    });
  },

  /**
   * What intake did since start: events libvirt delivered into JavaScript (virtbus_events_received),
   * the native queue's counters, overflow snapshots (virtbus_resyncs{reason="overflow"}), and the
   * outbox now (bench/overload.ts).
   */
  async intake() {
    const sum = async (
      metric: { get(): Promise<{ values: Array<{ value: number; labels: Record<string, unknown> }> }> },
      reason?: string,
    ) =>
      (await metric.get()).values
        .filter((v) => reason === undefined || v.labels.reason === reason)
        .reduce((total, v) => total + v.value, 0);
    const stats = binding.queueStats();
    return {
      received: await sum(bridge!.metrics.eventsReceived),
      overflowSnapshots: await sum(bridge!.metrics.resyncs, 'overflow'),
      dropped: stats.dropped,
      queueDepth: stats.depth,
      queueHighWater: stats.highWater,
      queueCapacity: stats.capacity,
      outboxDepth: outbox!.depth,
      appended: outbox!.appended,
      confirmed: outbox!.confirmed,
    };
  },

  /**
   * Starts injecting `rate` synthetic events/s (small batches every 2 ms) with libvirt's callback
   * policy: when the native queue is full the event is dropped and counted, never waited for. Runs
   * until stopDroppingInjector() (bench/overload.ts adds it on top of real libvirt load).
   */
  startDroppingInjector(params: { rate: number; domains: number }) {
    const started = performance.now();
    let injected = 0;
    let stop = false;
    const done = (async () => {
      while (!stop) {
        const due = Math.floor(((performance.now() - started) / 1000) * params.rate) - injected;
        if (due > 0) {
          void binding.injectSyntheticEvents(due, Math.min(params.domains, due), { waitWhenFull: false });
          injected += due;
        }
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
      return { injected, seconds: (performance.now() - started) / 1000 };
    })();
    droppingInjector = {
      stop: () => {
        stop = true;
        return done;
      },
    };
    return Promise.resolve({});
  },

  async stopDroppingInjector() {
    const result = await droppingInjector?.stop();
    droppingInjector = undefined;
    return result ?? { injected: 0, seconds: 0 };
  },

  /** Injects without waiting for confirms (resolves when the injector thread is done). */
  async inject(params: { count: number; domains: number }) {
    const started = performance.now();
    await binding.injectSyntheticEvents(params.count, params.domains, { waitWhenFull: true });
    return { seconds: (performance.now() - started) / 1000 };
  },

  /** `count` events as fast as the injector can push them (it waits when the native queue is full). */
  async burst(params: { count: number; domains: number; latency?: boolean }) {
    return measure(params.count, params.latency ?? false, () =>
      binding.injectSyntheticEvents(params.count, params.domains, { waitWhenFull: true }),
    );
  },

  /** `rate` events/s for `seconds`, injected in small batches every few milliseconds. */
  async paced(params: { rate: number; seconds: number; domains: number }) {
    const total = Math.round(params.rate * params.seconds);
    return measure(total, true, async () => {
      const started = performance.now();
      let injected = 0;
      const pending: Array<Promise<void>> = [];
      while (injected < total) {
        const due =
          Math.min(total, Math.floor(((performance.now() - started) / 1000) * params.rate)) - injected;
        if (due > 0) {
          pending.push(
            binding.injectSyntheticEvents(due, Math.min(params.domains, due), { waitWhenFull: true }),
          );
          injected += due;
        }
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
      await Promise.all(pending);
    });
  },

  async stop() {
    await bridge?.stop();
    if (journalDir) rmSync(journalDir, { recursive: true, force: true });
    return { confirmed: outbox?.confirmed ?? 0 };
  },
});

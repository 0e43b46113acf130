/**
 * Micro-benchmark of the durable outbox (src/bridge/journal-outbox.ts). Results: docs/outbox.md.
 *
 *   npx tsc -p tsconfig.json && node --expose-gc dist/bench/outbox.bench.js [--dir DIR] [--quick]
 *       [--only steady|saturation|backlog] [--intervals memory,0,5,20]
 *
 * 1. steady load: 15,000 messages/s of ~600-byte bodies for 10 s, appended
 *    - "dispatcher": one serial producer (like the bridge's dispatcher lane) that appends whatever
 *      arrived while its previous append was committing;
 *    - "concurrent": batches of 1–500 (uniform) appended as they arrive without waiting;
 *    reporting CPU (user+system, % of one core), commits (= fdatasyncs of the active segment) per
 *    second, and the arrival → append-resolved latency;
 * 2. saturation: a serial producer with fixed batch sizes, as fast as the disk allows;
 * 3. backlog: 1,000,000 messages accumulated (nothing confirmed, as while the broker is down), then
 *    close + reopen (recovery) and a publisher-like drain (readAfter(cursor, 512) + confirm), with RSS.
 * The directory defaults to a fresh one under the OS temp dir (put it on the disk you care about).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { JournalOutbox } from '../src/bridge/journal-outbox';
import { MemoryOutbox, type Outbox, type OutboxInput } from '../src/bridge/outbox';

const args = process.argv.slice(2);
const option = (name: string): string | undefined =>
  args.includes(name) ? args[args.indexOf(name) + 1] : undefined;
const quick = args.includes('--quick');
const base = option('--dir') ?? mkdtempSync(join(tmpdir(), 'virtbus-outbox-bench-'));
let runs = 0;
const freshDir = (): string => join(base, `run${(runs += 1)}`);
const gc = (globalThis as { gc?: () => void }).gc ?? (() => undefined);

const BODY = Buffer.from(
  JSON.stringify({
    schema: 'virtbus.lifecycle/1',
    event_id: '0b6f9c1e-5d3a-4f7e-9a51-6f2d2b0c8e11',
    host: 'cmp-01.example.org',
    instance_uuid: '6695eb01-f6a4-8304-79aa-97f2502e193f',
    domain_name: 'instance-0000002a',
    transition: 'stopped',
    nova_transition: 'Stopped',
    libvirt: { event: 'STOPPED', detail: 'DESTROYED', event_code: 5, detail_code: 1 },
    power_state: 4,
    power_state_name: 'shutdown',
    occurred_at: '2026-11-27T08:50:27.745123Z',
    published_at: '2026-11-27T08:50:42.746001Z',
    delayed_ms: 15000,
    seq: 4711,
    boot_id: 'c3a1d2e4-0000-4000-8000-000000000000',
    padding: 'x'.repeat(120),
  }),
);

let seq = 0;
function message(): OutboxInput {
  seq += 1;
  return {
    exchange: 'virtbus.lifecycle',
    routingKey: 'cmp-01_example_org.stopped',
    messageId: `00000000-0000-4000-8000-${String(seq).padStart(12, '0')}`,
    type: 'virtbus.lifecycle.v1',
    occurredMicros: Date.now() * 1000,
    transition: 'stopped',
    body: BODY,
  };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const mib = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(0)} MiB`;
const percentile = (sorted: number[], p: number): number =>
  sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))]!;

/** Confirms everything appended, as a broker keeping up would (so the journal stays small). */
function confirmAll(outbox: Outbox): () => void {
  let cursor = 0;
  let stopped = false;
  const pump = (): void => {
    if (stopped) return;
    for (;;) {
      const records = outbox.readAfter(cursor, 512);
      if (records.length === 0) break;
      for (const record of records) outbox.confirm(record.id);
      cursor = records[records.length - 1]!.id;
    }
  };
  outbox.onAppend(pump);
  return () => {
    stopped = true;
  };
}

/** fsyncIntervalMs undefined: the same load on a MemoryOutbox, the harness's own cost. */
async function steady(
  mode: 'dispatcher' | 'concurrent',
  fsyncIntervalMs: number | undefined,
  rate: number,
  seconds: number,
): Promise<void> {
  const dir = freshDir();
  const journal =
    fsyncIntervalMs === undefined ? undefined : await JournalOutbox.open({ dir, fsyncIntervalMs });
  const outbox: Outbox = journal ?? new MemoryOutbox(1_000_000);
  const stop = confirmAll(outbox);
  const latencies: number[] = [];
  const arrivals: number[] = []; // arrival times of events not yet appended (dispatcher mode)
  const pendingAppends: Array<Promise<void>> = [];
  let random = 12345;
  const nextRandom = (bound: number): number => {
    random = (random * 48271) % 2147483647;
    return random % bound;
  };
  const startCommits = journal?.stats.commits ?? 0;
  const startCpu = process.cpuUsage();
  const started = performance.now();
  let generated = 0;
  let running = true;

  // Dispatcher lane: append what arrived meanwhile, one append at a time.
  const lane = (async () => {
    while (running || arrivals.length > 0) {
      if (mode !== 'dispatcher' || arrivals.length === 0) {
        await sleep(1);
        continue;
      }
      const batch = arrivals.splice(0, 4096);
      await outbox.append(batch.map(() => message()));
      const now = performance.now();
      for (const at of batch) latencies.push(now - at);
    }
  })();

  let nextBatch = 1 + nextRandom(500);
  while (performance.now() - started < seconds * 1000) {
    const due = Math.floor(((performance.now() - started) / 1000) * rate);
    while (generated + (mode === 'concurrent' ? nextBatch : 1) <= due) {
      if (mode === 'dispatcher') {
        arrivals.push(performance.now());
        generated += 1;
      } else {
        const at = performance.now();
        const inputs = Array.from({ length: nextBatch }, () => message());
        generated += nextBatch;
        pendingAppends.push(
          outbox.append(inputs).then(() => {
            const latency = performance.now() - at;
            for (let i = 0; i < inputs.length; i += 1) latencies.push(latency);
          }),
        );
        nextBatch = 1 + nextRandom(500);
      }
    }
    await sleep(1);
  }
  running = false;
  await lane;
  await Promise.all(pendingAppends);
  const wall = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(startCpu);
  const commits = (journal?.stats.commits ?? 0) - startCommits;
  stop();
  await outbox.close();
  rmSync(dir, { recursive: true, force: true });
  latencies.sort((a, b) => a - b);
  const what = journal ? `fsyncIntervalMs=${fsyncIntervalMs}` : 'MemoryOutbox (harness baseline)';
  console.log(
    `steady ${mode.padEnd(10)} ${what}: ${Math.round(generated / wall)} msg/s, ` +
      `CPU ${(((cpu.user + cpu.system) / 1e6 / wall) * 100).toFixed(1)}% of a core ` +
      `[user ${((cpu.user / 1e6 / wall) * 100).toFixed(1)}% sys ${((cpu.system / 1e6 / wall) * 100).toFixed(1)}%] ` +
      `(${((cpu.user + cpu.system) / generated).toFixed(1)} µs/msg), ${Math.round(commits / wall)} commits/s ` +
      `(${(generated / Math.max(1, commits)).toFixed(0)} msg/commit), latency p50 ${percentile(latencies, 50).toFixed(1)} ms ` +
      `p99 ${percentile(latencies, 99).toFixed(1)} ms max ${percentile(latencies, 100).toFixed(1)} ms`,
  );
}

async function saturation(batch: number, seconds: number, fsyncIntervalMs: number): Promise<void> {
  const dir = freshDir();
  const outbox = await JournalOutbox.open({ dir, fsyncIntervalMs });
  const stop = confirmAll(outbox);
  const startCpu = process.cpuUsage();
  const started = performance.now();
  let count = 0;
  while (performance.now() - started < seconds * 1000) {
    await outbox.append(Array.from({ length: batch }, () => message()));
    count += batch;
  }
  const wall = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(startCpu);
  const commits = outbox.stats.commits;
  stop();
  await outbox.close();
  rmSync(dir, { recursive: true, force: true });
  console.log(
    `saturation batch=${String(batch).padEnd(3)} fsyncIntervalMs=${fsyncIntervalMs}: ${Math.round(count / wall)} msg/s, ` +
      `${Math.round(commits / wall)} commits/s, CPU ${(((cpu.user + cpu.system) / 1e6 / wall) * 100).toFixed(0)}% ` +
      `(${((cpu.user + cpu.system) / count).toFixed(1)} µs/msg)`,
  );
}

async function backlog(total: number): Promise<void> {
  const dir = freshDir();
  gc();
  const rss0 = process.memoryUsage().rss;
  let outbox = await JournalOutbox.open({ dir });
  let started = performance.now();
  let cpu = process.cpuUsage();
  let peak = 0;
  for (let done = 0; done < total; done += 500) {
    await outbox.append(Array.from({ length: 500 }, () => message()));
    if (done % 50_000 === 0) peak = Math.max(peak, process.memoryUsage().rss);
  }
  let wall = (performance.now() - started) / 1000;
  let used = process.cpuUsage(cpu);
  gc();
  const rssFull = process.memoryUsage().rss;
  console.log(
    `backlog: ${total} appended in ${wall.toFixed(1)} s (${Math.round(total / wall)} msg/s, ` +
      `${((used.user + used.system) / total).toFixed(1)} µs/msg CPU), journal ${mib(outbox.bytes)} in ` +
      `${outbox.segmentCount} segments; rss ${mib(rss0)} → peak ${mib(Math.max(peak, rssFull))}, ${mib(rssFull)} after gc`,
  );
  await outbox.close();
  gc();
  started = performance.now();
  outbox = await JournalOutbox.open({ dir });
  console.log(
    `backlog: reopen (scan + CRC check of ${outbox.recovery.records} records) ${Math.round(performance.now() - started)} ms, ` +
      `depth ${outbox.depth}`,
  );
  started = performance.now();
  cpu = process.cpuUsage();
  peak = 0;
  let cursor = 0;
  let drained = 0;
  for (;;) {
    const records = outbox.readAfter(cursor, 512);
    if (records.length === 0) break;
    for (const record of records) outbox.confirm(record.id);
    cursor = records[records.length - 1]!.id;
    drained += records.length;
    if (drained % 51_200 === 0) peak = Math.max(peak, process.memoryUsage().rss);
  }
  wall = (performance.now() - started) / 1000;
  used = process.cpuUsage(cpu);
  console.log(
    `backlog: drained ${drained} (readAfter 512 + confirm each) in ${wall.toFixed(1)} s = ${Math.round(drained / wall)} msg/s ` +
      `(${((used.user + used.system) / drained).toFixed(2)} µs/msg CPU), ${outbox.stats.diskReads} disk reads; ` +
      `peak rss ${mib(peak)}; segments left ${outbox.segmentCount}`,
  );
  await outbox.close();
  rmSync(dir, { recursive: true, force: true });
}

async function main(): Promise<void> {
  console.log(`outbox bench in ${base} (node ${process.version})`);
  const only = option('--only'); // steady | saturation | backlog
  const intervals = (option('--intervals') ?? 'memory,0,5,20')
    .split(',')
    .map((value) => (value === 'memory' ? undefined : Number(value)));
  const seconds = quick ? 3 : 10;
  if (!only || only === 'steady') {
    for (const interval of intervals) {
      await steady('dispatcher', interval, 15_000, seconds);
      await steady('concurrent', interval, 15_000, seconds);
    }
  }
  if (!only || only === 'saturation') {
    for (const batch of [1, 10, 100, 500]) await saturation(batch, quick ? 1 : 3, 0);
    for (const batch of [1, 100, 500]) await saturation(batch, quick ? 1 : 3, 5);
  }
  if (!only || only === 'backlog') await backlog(quick ? 200_000 : 1_000_000);
  if (!args.includes('--dir')) rmSync(base, { recursive: true, force: true });
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});

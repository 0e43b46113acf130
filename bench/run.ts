/**
 * The benchmark suite (`npm run bench`): starts a private RabbitMQ node, measures the broker's own
 * ceiling for the bridge's messages, then every benchmark in its own worker processes against private
 * libvirtd/PostgreSQL instances, and prints a table where every rate stands next to that ceiling.
 *
 *   node dist/bench/run.js [--only 1,2,…] [--quick] [--out FILE] [--json] [--profile DIR]
 *                          [--bridge-flags "--max-semi-space-size=2 …"]
 *
 * --out writes the JSON results (default dist/bench/results.json); --json prints them on stdout
 * instead of the table (the table then goes to stderr); --profile runs every worker under
 * `node --cpu-prof` into DIR (summarise with `node dist/bench/profile.js DIR/<file>`); --bridge-flags
 * passes node flags to every bridge process (to try deployment settings).
 * VIRTBUS_BENCH_VERBOSE=1 echoes the workers' output.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { startRabbitMQ } from '../src/sandbox';
import { BenchContext, type BenchResult, type Figure } from './lib/context';
import * as ceiling from './ceiling';
import * as publishPath from './publish-path';
import * as handoff from './handoff';
import * as endToEnd from './end-to-end';
import * as consumer from './consumer';
import * as memory from './memory';
import * as scale from './scale';
import * as overload from './overload';
import * as cluster from './cluster';
import * as fleet from './fleet';

interface Benchmark {
  readonly id: string;
  readonly name: string;
  run(ctx: BenchContext): Promise<BenchResult>;
}

const BENCHMARKS: readonly Benchmark[] = [
  { id: '1', name: 'ceiling', run: ceiling.run },
  { id: '2', name: 'publish-path', run: publishPath.run },
  { id: '3', name: 'handoff', run: handoff.run },
  { id: '4', name: 'end-to-end', run: endToEnd.run },
  { id: '5', name: 'consumer', run: consumer.run },
  { id: '6', name: 'memory', run: memory.run },
  { id: '7', name: 'scale', run: scale.run },
  { id: '8', name: 'overload', run: overload.run },
  { id: '10', name: 'cluster', run: cluster.run },
  { id: '11', name: 'fleet', run: fleet.run },
];

function option(args: readonly string[], name: string): string | undefined {
  const index = args.indexOf(name);
  return index >= 0 ? args[index + 1] : undefined;
}

function version(command: string, args: string[]): string {
  try {
    return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return 'unknown';
  }
}

function machine(): Record<string, unknown> {
  const cpu = cpus();
  return {
    nproc: cpu.length,
    cpuModel: cpu[0]?.model ?? 'unknown',
    ramMB: Math.round(totalmem() / 1048576),
    node: process.version,
    rabbitmq: version('dpkg-query', ['-W', '-f=${Version}', 'rabbitmq-server']),
    libvirt: version('dpkg-query', ['-W', '-f=${Version}', 'libvirt-daemon']),
    postgresql: version('dpkg-query', ['-W', '-f=${Version}', 'postgresql']),
    commit: version('git', ['rev-parse', '--short', 'HEAD']),
  };
}

function targetText(figure: Figure): string {
  const t = figure.target;
  if (!t) return '';
  if (t.kind === 'ceiling-ratio-min') return `≥ ${t.value}× ceiling`;
  return `${t.kind === 'max' ? '<' : '≥'} ${t.value} ${figure.unit}`;
}

function met(figure: Figure, ceilingRate: number): boolean | null {
  const t = figure.target;
  if (!t || figure.value === null) return null;
  if (t.kind === 'ceiling-ratio-min') return figure.value / ceilingRate >= t.value;
  return t.kind === 'max' ? figure.value < t.value : figure.value >= t.value;
}

function formatNumber(value: number | null): string {
  if (value === null) return 'n/a';
  return Math.abs(value) >= 1000 ? Math.round(value).toLocaleString('en-US') : String(value);
}

function table(results: readonly BenchResult[], ceilingRate: number): string {
  const rows: string[][] = [['#', 'figure', 'value', 'unit', 'vs ceiling', 'target', 'met']];
  for (const result of results) {
    for (const figure of result.figures) {
      const ok = met(figure, ceilingRate);
      rows.push([
        result.id,
        figure.label,
        formatNumber(figure.value),
        figure.unit,
        figure.vsCeiling && figure.value !== null ? `${(figure.value / ceilingRate).toFixed(2)}×` : '',
        targetText(figure),
        ok === null ? '' : ok ? 'yes' : 'NO',
      ]);
    }
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  const line = (r: string[]): string => `| ${r.map((cell, c) => cell.padEnd(widths[c]!)).join(' | ')} |`;
  return [
    line(rows[0]!),
    `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`,
    ...rows.slice(1).map(line),
  ].join('\n');
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const only = option(args, '--only')?.split(',');
  const out = resolve(option(args, '--out') ?? join(__dirname, 'results.json'));
  const profile = option(args, '--profile');
  const asJson = args.includes('--json');
  const print = (text: string): boolean => (asJson ? process.stderr : process.stdout).write(`${text}\n`);
  const selected = BENCHMARKS.filter(
    (b) => b.id === '1' || !only || only.includes(b.id) || only.includes(b.name),
  );
  const started = Date.now();
  print(`bench: starting a private RabbitMQ node…`);
  const rabbit = await startRabbitMQ({ name: 'virtbus-bench' });
  const ctx = new BenchContext(rabbit, {
    quick: args.includes('--quick'),
    profileDir: profile ? resolve(profile) : undefined,
    bridgeFlags: option(args, '--bridge-flags')?.split(' ').filter(Boolean) ?? [],
  });
  const results: BenchResult[] = [];
  const failures: Array<{ id: string; error: string }> = [];
  try {
    for (const benchmark of selected) {
      const t0 = Date.now();
      print(`bench: ${benchmark.id} ${benchmark.name}…`);
      try {
        const result = await benchmark.run(ctx);
        results.push(result);
        print(`bench: ${benchmark.id} ${benchmark.name} done in ${Math.round((Date.now() - t0) / 1000)} s`);
      } catch (error) {
        const message = error instanceof Error ? (error.stack ?? error.message) : String(error);
        failures.push({ id: benchmark.id, error: message });
        print(`bench: ${benchmark.id} ${benchmark.name} FAILED: ${message}`);
        if (benchmark.id === '1') break;
      }
    }
  } finally {
    await ctx.cleanup();
    await rabbit.dispose();
  }
  const ceilingRate = ctx.ceilingRuns.length > 0 ? ctx.ceiling : NaN;
  // Every ratio uses the best ceiling run of the whole suite (later benchmarks measure it again).
  const first = results.find((r) => r.id === '1')?.figures[0];
  if (first)
    results[0] = {
      ...results[0]!,
      figures: [{ ...first, value: Math.round(ceilingRate) }, ...results[0]!.figures.slice(1)],
    };
  const report = {
    date: new Date().toISOString(),
    command: `node dist/bench/run.js ${args.join(' ')}`.trim(),
    durationSeconds: Math.round((Date.now() - started) / 1000),
    machine: machine(),
    ceiling: { rate: Math.round(ceilingRate), runs: ctx.ceilingRuns.map((r) => Math.round(r)) },
    results: results.map((r) => ({
      ...r,
      figures: r.figures.map((f) => ({
        ...f,
        ...(f.vsCeiling && f.value !== null
          ? { ratio: Math.round((f.value / ceilingRate) * 1000) / 1000 }
          : {}),
        ...(f.target ? { met: met(f, ceilingRate) } : {}),
      })),
    })),
    failures,
  };
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify(report, null, 2) + '\n');
  if (asJson) process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  print('');
  print(table(results, ceilingRate));
  print('');
  for (const result of results) for (const note of result.notes) print(`note (${result.id}): ${note}`);
  print(
    `bench: ${report.durationSeconds} s; ceiling runs ${report.ceiling.runs.join(', ')} msg/s; JSON: ${out}`,
  );
  return failures.length > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error('bench failed:', error);
    process.exit(1);
  },
);

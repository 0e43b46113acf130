/**
 * Summarises a V8 .cpuprofile (node --cpu-prof; `node dist/bench/run.js --profile DIR` writes one
 * per worker): the hottest functions by self time, and time by file (inclusive of callees within
 * the file only where they are the leaf), so a profile can be read without a flame-graph viewer.
 *
 *   node dist/bench/profile.js FILE.cpuprofile [--top N]
 */
import { readFileSync } from 'node:fs';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

function shortUrl(url: string): string {
  if (!url) return '(native)';
  const cut = url.replace(/^file:\/\//, '');
  const nm = cut.lastIndexOf('node_modules/');
  if (nm >= 0) return cut.slice(nm + 'node_modules/'.length);
  const dist = cut.indexOf('/dist/');
  return dist >= 0 ? cut.slice(dist + '/dist/'.length) : cut;
}

/** Self and inclusive milliseconds per function, and self milliseconds per file/package. */
export function summarise(profile: CpuProfile, top = 25): string {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const selfMs = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i += 1) {
    const id = profile.samples[i]!;
    selfMs.set(id, (selfMs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000);
  }
  const key = (f: CallFrame): string =>
    `${f.functionName || '(anonymous)'} ${shortUrl(f.url)}:${f.lineNumber + 1}`;
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  const files = new Map<string, number>();
  let total = 0;
  for (const [id, ms] of selfMs) {
    const node = byId.get(id)!;
    total += ms;
    const k = key(node.callFrame);
    self.set(k, (self.get(k) ?? 0) + ms);
    const file = shortUrl(node.callFrame.url).split('/').slice(0, 2).join('/');
    files.set(file, (files.get(file) ?? 0) + ms);
    // Inclusive: once per distinct function on the stack.
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const frame = byId.get(at)!.callFrame;
      const fk = key(frame);
      if (seen.has(fk)) continue;
      seen.add(fk);
      inclusive.set(fk, (inclusive.get(fk) ?? 0) + ms);
    }
  }
  const pct = (ms: number): string => `${((ms / total) * 100).toFixed(1).padStart(5)} %`;
  const list = (map: Map<string, number>, n: number): string[] =>
    [...map.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([k, ms]) => `${pct(ms)} ${ms.toFixed(0).padStart(7)} ms  ${k}`);
  return [
    `total sampled: ${total.toFixed(0)} ms over ${((profile.endTime - profile.startTime) / 1000).toFixed(0)} ms`,
    '',
    'self time by function:',
    ...list(self, top),
    '',
    'self time by file / package:',
    ...list(files, top),
    '',
    'inclusive time by function:',
    ...list(inclusive, top),
  ].join('\n');
}

if (require.main === module) {
  const file = process.argv[2];
  if (!file) {
    console.error('usage: node dist/bench/profile.js FILE.cpuprofile [--top N]');
    process.exit(2);
  }
  const topIndex = process.argv.indexOf('--top');
  const top = topIndex > 0 ? Number(process.argv[topIndex + 1]) : 25;
  console.log(summarise(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile, top));
}

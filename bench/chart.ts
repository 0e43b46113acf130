/**
 * Draws docs/scaling-throughput.png from a benchmark JSON (`npm run bench -- --only cluster,fleet`): events/s
 * into the three-node cluster against the number of hosts (bench 11 `details.byHosts`), and events/s
 * applied against the number of PostgreSQL consumers (`details.byConsumers`), each next to the
 * cluster's raw ceiling measured in the same run. Uses gnuplot (Debian `gnuplot-nox`), because the
 * npm canvas packages cannot fetch their prebuilt binaries here; only the docs need it.
 *
 *   node dist/bench/chart.js [results.json] [out.png]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

interface Fleet {
  readonly details: {
    readonly publishCeiling: number;
    readonly consumeCeiling: number;
    readonly byHosts: Array<{ hosts: number; rate: number }>;
    readonly byConsumers: Array<{ consumers: number; rate: number }>;
  };
}

function main(): void {
  const input = resolve(process.argv[2] ?? join(__dirname, 'results.json'));
  const output = resolve(process.argv[3] ?? join(__dirname, '..', '..', 'docs', 'scaling-throughput.png'));
  const report = JSON.parse(readFileSync(input, 'utf8')) as { results: Array<{ id: string } & Fleet> };
  const fleet = report.results.find((r) => r.id === '11');
  if (!fleet) throw new Error(`${input} has no result of benchmark 11 (fleet)`);
  const { byHosts, byConsumers, publishCeiling, consumeCeiling } = fleet.details;
  const dir = mkdtempSync(join(tmpdir(), 'virtbus-chart-'));
  try {
    writeFileSync(join(dir, 'hosts.dat'), byHosts.map((h) => `${h.hosts} ${h.rate}`).join('\n') + '\n');
    writeFileSync(
      join(dir, 'consumers.dat'),
      byConsumers.map((c) => `${c.consumers} ${c.rate}`).join('\n') + '\n',
    );
    const script = `
set terminal pngcairo size 1100,420 font 'sans,10'
set output '${output}'
set multiplot layout 1,2 title 'virtbus on a three-node RabbitMQ cluster (2 cores, everything on one machine)'
set grid
set key bottom right
set yrange [0:*]
set title 'bridges publishing (events/s) by number of hosts'
set xlabel 'hosts (bridge processes)'
set ylabel 'events/s confirmed by the cluster'
plot '${join(dir, 'hosts.dat')}' using 1:2 with linespoints lw 2 pt 7 title 'bridges, all hosts together', \\
     ${publishCeiling} with lines dt 2 lw 2 title 'raw amqplib publisher (ceiling)'
set title 'consumers applying (events/s) by number of consumers'
set xlabel 'consumers sharing the queue and one PostgreSQL database'
set ylabel 'events/s committed'
set xtics 1
plot '${join(dir, 'consumers.dat')}' using 1:2 with linespoints lw 2 pt 7 title 'virtbus consumer, PostgreSQL', \\
     ${consumeCeiling} with lines dt 2 lw 2 title 'raw amqplib consumer (ceiling)'
unset multiplot
`;
    writeFileSync(join(dir, 'chart.gp'), script);
    execFileSync('gnuplot', [join(dir, 'chart.gp')], { stdio: 'inherit' });
    console.log(`chart: ${output}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main();

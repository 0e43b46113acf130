/**
 * 7. Scale of cost: the publish-path figure with 10, 1,000 and 10,000 domains (each with its own
 * libvirtd holding exactly those synthetic domains, so live state sampling is real), to show the cost
 * per event does not grow with the number of domains.
 */
import { declareTopology } from './lib/amqp';
import type { BenchContext, BenchResult, Figure } from './lib/context';
import { round } from './lib/stats';
import { bridgeRun, summary, syntheticLibvirtd } from './publish-path';

export async function run(ctx: BenchContext): Promise<BenchResult> {
  const count = ctx.options.quick ? 20_000 : 60_000;
  const url = await ctx.vhost('scale');
  await declareTopology(url);
  const figures: Figure[] = [];
  const details: Record<string, unknown> = { count };
  for (const domains of [10, 1000, 10_000]) {
    const libvirt = await syntheticLibvirtd(ctx, domains);
    const result = await bridgeRun(ctx, url, libvirt.uri, 'burst', { count, domains });
    const cpuMicros = round(((result.resources.cpuPercent / 100) * result.seconds * 1e6) / count, 1);
    figures.push(
      {
        label: `publish path, ${domains.toLocaleString('en-US')} domains`,
        value: round(result.rate),
        unit: 'events/s',
        vsCeiling: true,
      },
      {
        label: `bridge process CPU per event, ${domains.toLocaleString('en-US')} domains`,
        value: cpuMicros,
        unit: 'µs',
        note: 'all threads of the bridge process (JS, libvirt loop, thread pool), over the whole run',
      },
    );
    details[`domains${domains}`] = {
      ...summary(result),
      cpuMicrosPerEvent: cpuMicros,
      libvirtdSetupSeconds: round(libvirt.createSeconds, 1),
    };
  }
  return { id: '7', title: 'Scale of cost: publish path by number of domains', figures, details, notes: [] };
}

/** `virtbus demo [--hypervisor test|qemu] [--cluster] [--keep] [--stop-delay-ms N]`: the whole pipeline on a private sandbox. */
import { Demo } from '../../demo/story';
import { QemuDemo } from '../../demo/qemu-story';
import { describeMissing, missingForDemo } from '../../demo/requirements';
import { parseArgs, UsageError } from '../usage';

const HELP = `Usage: virtbus demo [--hypervisor test|qemu] [--cluster] [--keep] [--stop-delay-ms N] [--no-color]

Starts a private libvirtd (test driver) and RabbitMQ node, the bridge and the consumer on SQLite,
imports three instances and plays a short story — boot, pause, resume, reboot, a guest destroyed
behind the system's back, a domain started while its row says stopped — showing each message as it
crosses the bus and the instance table converging, with the action Nova takes. Needs root (the
private libvirtd runs in its own mount namespace). \`npm run demo\` installs what is missing first.

With --hypervisor qemu the story runs on real QEMU guests (TCG) under two private qemu libvirtds,
each with its own bridge: a real boot, a reboot the guest does itself, a live migration from one host
to the other and a guest panic. About two minutes; needs qemu-system-x86 and the guest image that
\`npm run setup\` builds (built on first use otherwise).

With --cluster (test driver only) the broker is a three-node RabbitMQ cluster (joined with
rabbitmqctl join_cluster, quorum queues on every node) loaded with the definitions \`virtbus broker
definitions\` generates: the bridge and the consumer log in as their own users and are given the three
node URLs; a last scene SIGKILLs the node the bridge publishes to. About a minute more.

Options:
  --hypervisor H      test (default: libvirt's test driver, fast, no QEMU) or qemu (real guests)
  --cluster           a three-node RabbitMQ cluster with per-host broker users instead of one node
  --keep              leave everything running at the end, until Ctrl-C
  --stop-delay-ms N   the delayed-STOPPED window (default 3000 here; Nova's and virtbus' default is 15000)
  --no-color          plain output
Ctrl-C at any time stops and removes everything the demo started.
`;

export async function run(argv: readonly string[]): Promise<number> {
  const args = parseArgs(argv, {
    keep: { value: false },
    cluster: { value: false },
    hypervisor: { value: true },
    'stop-delay-ms': { value: true },
    'no-color': { value: false },
  });
  if (args.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (args.positionals.length > 0) throw new UsageError(`unexpected argument ${args.positionals[0]}`);
  const delay = Number(args.flags.get('stop-delay-ms')?.[0] ?? 3000);
  if (!Number.isInteger(delay) || delay < 0)
    throw new UsageError('--stop-delay-ms must be a whole number of milliseconds');
  const hypervisor = args.flags.get('hypervisor')?.[0] ?? 'test';
  if (hypervisor !== 'test' && hypervisor !== 'qemu')
    throw new UsageError('--hypervisor must be test or qemu');
  if (hypervisor === 'qemu' && args.flags.has('cluster'))
    throw new UsageError('--cluster runs with the test driver only (leave out --hypervisor qemu)');
  const missing = missingForDemo(hypervisor);
  if (missing.length > 0) {
    process.stderr.write(`${describeMissing(missing)}\n`);
    return 1;
  }
  const Story = hypervisor === 'qemu' ? QemuDemo : Demo;
  const demo = new Story({
    keep: args.flags.has('keep'),
    cluster: args.flags.has('cluster'),
    stopDelayMs: delay,
    colour: !args.flags.has('no-color') && process.stdout.isTTY === true,
    out: (line) => process.stdout.write(`${line}\n`),
  });
  let interrupted = false;
  const signal = new Promise<void>((resolve) => {
    const stop = (): void => {
      interrupted = true;
      resolve();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  try {
    await Promise.race([demo.play(), signal]);
    if (!interrupted && args.flags.has('keep')) await demo.keep(signal);
    return 0;
  } finally {
    await demo.cleanup();
  }
}

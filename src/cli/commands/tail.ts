/**
 * `virtbus tail [--bind PATTERN]... [--json]`: prints bus events live, one line each, like
 * `virsh event --loop --timestamp`, from an exclusive auto-delete queue of its own (it never takes
 * messages from the consumer's queue).
 */
import { connect } from 'amqplib';
import { loadConfig } from '../../config/load';
import { splitUrls } from '../../amqp/connection';
import { unwrapLifecycleBody, type LifecycleMessage } from '../../messages/lifecycle';
import { CONFIG_FLAGS, parseArgs, UsageError } from '../usage';

const HELP = `Usage: virtbus tail [--bind PATTERN]... [--json] [config flags]

Prints lifecycle events as they cross the bus, one line each:
  time  host  domain  transition  libvirt event/detail  power state

Options:
  --bind PATTERN   binding pattern on the lifecycle exchange (repeatable; default '#'),
                   e.g. 'cmp-01.*' (one host), '*.stopped' (one transition)
  --json           print each message body as one JSON line instead (for scripts)
  --color / --no-color   force colour on or off (default: on when stdout is a terminal)

Connects with amqp.url and reads amqp.exchange (VIRTBUS_AMQP_URL, VIRTBUS_EXCHANGE, --amqp-url,
--exchange). Stops on Ctrl-C.
`;

const COLOURS: Record<string, string> = {
  started: '32',
  resumed: '32',
  stopped: '31',
  crashed: '31',
  shutdown: '33',
  paused: '33',
  pmsuspended: '33',
  postcopy_started: '35',
  migration_completed: '35',
  sync: '36',
  sync_end: '36',
};

/** One human line for a lifecycle message. */
export function formatLine(message: LifecycleMessage, colour: boolean): string {
  const libvirt = message.libvirt ? `${message.libvirt.event}/${message.libvirt.detail ?? '-'}` : '-';
  const power =
    message.power_state_name ?? (message.power_state === null ? '-' : String(message.power_state));
  const transition = message.transition.padEnd(19);
  const painted =
    colour && COLOURS[message.transition]
      ? `\u001b[${COLOURS[message.transition]}m${transition}\u001b[0m`
      : transition;
  const extra =
    message.transition === 'sync_end'
      ? ` snapshot=${message.snapshot?.reason ?? '?'} domains=${message.instance_uuids?.length ?? 0}`
      : message.delayed_ms > 0
        ? ` delayed=${message.delayed_ms}ms`
        : '';
  return `${message.occurred_at} ${message.host} ${message.domain_name ?? '-'} ${painted} ${libvirt} power=${power}${extra}`;
}

export async function run(argv: readonly string[]): Promise<number> {
  const args = parseArgs(
    argv,
    {
      bind: { value: true, repeat: true },
      json: { value: false },
      color: { value: false },
      'no-color': { value: false },
    },
    CONFIG_FLAGS,
  );
  if (args.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (args.positionals.length > 0) throw new UsageError(`unexpected argument ${args.positionals[0]}`);
  const config = loadConfig({ role: 'consumer', args: args.configArgs });
  const patterns = args.flags.get('bind') ?? ['#'];
  const json = args.flags.has('json');
  const colour = args.flags.has('color') || (!args.flags.has('no-color') && process.stdout.isTTY === true);
  const url = splitUrls(config.amqp.url)[0] ?? config.amqp.url;
  const model = await connect(url);
  const channel = await model.createChannel();
  // Passive: tail never creates or changes the exchange an operator's bridge declares.
  await channel.checkExchange(config.amqp.exchange);
  const { queue } = await channel.assertQueue('', { exclusive: true, autoDelete: true, durable: false });
  for (const pattern of patterns) await channel.bindQueue(queue, config.amqp.exchange, pattern);
  await channel.consume(
    queue,
    (delivery) => {
      if (!delivery) return;
      const text = delivery.content.toString('utf8');
      let body: unknown;
      try {
        body = unwrapLifecycleBody(JSON.parse(text));
      } catch {
        process.stdout.write(`${delivery.fields.routingKey} (not JSON: ${text.slice(0, 120)})\n`);
        return;
      }
      if (json) process.stdout.write(`${JSON.stringify(body)}\n`);
      else process.stdout.write(`${formatLine(body as LifecycleMessage, colour)}\n`);
    },
    { noAck: true },
  );
  process.stderr.write(
    `virtbus tail: listening on ${config.amqp.exchange} with ${patterns.join(', ')} (Ctrl-C to stop)\n`,
  );
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
    model.once('close', resolve);
  });
  await model.close().catch(() => undefined);
  return 0;
}

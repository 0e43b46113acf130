/**
 * `virtbus tail [--bind PATTERN]... [--json]`: prints bus events live, one line each, like
 * `virsh event --loop --timestamp`, from an exclusive auto-delete queue of its own (it never takes
 * messages from the consumer's queue).
 */
import { connect } from 'amqplib';
import { loadConfig } from '../../config/load';
import { isTlsUrl, socketOptions, splitUrls } from '../../amqp/connection';
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

Connects with amqp.url (and amqp.tls.* for amqps://, as the services do) and reads amqp.exchange
(VIRTBUS_AMQP_URL, VIRTBUS_EXCHANGE, --amqp-url, --exchange). Everything printed from a message is
escaped: control characters in a domain name cannot drive the terminal. Stops on Ctrl-C.
`;

/**
 * Characters a hostile or broken message must not send to a terminal: C0 and C1 controls (ESC
 * sequences, carriage returns that overwrite a line), DEL, the line/paragraph separators and the
 * bidirectional overrides that reorder what is shown.
 */
// eslint-disable-next-line no-control-regex
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

function escapeChar(char: string): string {
  const code = char.charCodeAt(0);
  return code < 0x100
    ? `\\x${code.toString(16).padStart(2, '0')}`
    : `\\u${code.toString(16).padStart(4, '0')}`;
}

/** Any field of a message as safe terminal text (non-strings are shown as JSON). */
export function printable(value: unknown): string {
  const text = typeof value === 'string' ? value : (JSON.stringify(value) ?? String(value));
  return text.replace(UNPRINTABLE, escapeChar);
}

/** A --json line: JSON already escapes C0 controls; the others are escaped as \uXXXX (still JSON). */
export function printableJson(body: unknown): string {
  return JSON.stringify(body).replace(
    UNPRINTABLE,
    (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

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

/** One human line for a lifecycle message; every field from the message is escaped. */
export function formatLine(message: LifecycleMessage, colour: boolean): string {
  const libvirt = message.libvirt
    ? `${printable(message.libvirt.event)}/${printable(message.libvirt.detail ?? '-')}`
    : '-';
  const power = printable(
    message.power_state_name ?? (message.power_state === null ? '-' : message.power_state),
  );
  const name = printable(message.transition);
  const transition = name.padEnd(19);
  const code = typeof message.transition === 'string' ? COLOURS[message.transition] : undefined;
  const painted = colour && code ? `\u001b[${code}m${transition}\u001b[0m` : transition;
  const extra =
    message.transition === 'sync_end'
      ? ` snapshot=${printable(message.snapshot?.reason ?? '?')} domains=${Array.isArray(message.instance_uuids) ? message.instance_uuids.length : 0}`
      : typeof message.delayed_ms === 'number' && message.delayed_ms > 0
        ? ` delayed=${message.delayed_ms}ms`
        : '';
  return `${printable(message.occurred_at)} ${printable(message.host)} ${printable(message.domain_name ?? '-')} ${painted} ${libvirt} power=${power}${extra}`;
}

/** The line printed for one delivery (never throws: a hostile body is shown, not obeyed). */
export function deliveryLine(routingKey: string, content: Buffer, json: boolean, colour: boolean): string {
  const text = content.toString('utf8');
  let body: unknown;
  try {
    body = unwrapLifecycleBody(JSON.parse(text));
  } catch {
    return `${printable(routingKey)} (not JSON: ${printable(text.slice(0, 120))})`;
  }
  if (json) return printableJson(body);
  if (body === null || typeof body !== 'object' || Array.isArray(body))
    return `${printable(routingKey)} (not an object: ${printable(text.slice(0, 120))})`;
  try {
    return formatLine(body as LifecycleMessage, colour);
  } catch {
    return `${printable(routingKey)} (unreadable: ${printable(text.slice(0, 120))})`;
  }
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
  if (!config.amqp.tls.verify)
    process.stderr.write(
      `virtbus tail: amqp.tls.verify is false${isTlsUrl(url) ? '' : ' (and this URL does not use TLS)'}: the broker is NOT verified\n`,
    );
  const model = await connect(url, socketOptions(url, config.amqp.tls, 'virtbus-tail'));
  const channel = await model.createChannel();
  // Passive: tail never creates or changes the exchange an operator's bridge declares.
  await channel.checkExchange(config.amqp.exchange);
  const { queue } = await channel.assertQueue('', { exclusive: true, autoDelete: true, durable: false });
  for (const pattern of patterns) await channel.bindQueue(queue, config.amqp.exchange, pattern);
  await channel.consume(
    queue,
    (delivery) => {
      if (!delivery) return;
      process.stdout.write(`${deliveryLine(delivery.fields.routingKey, delivery.content, json, colour)}\n`);
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

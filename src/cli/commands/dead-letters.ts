/**
 * `virtbus dead-letters list|replay|purge`: the consumer's dead-letter queue for operators — what
 * is in it and why, handing messages back to the consumer after a fix, dropping them. Runs with the
 * consumer's configuration and broker credentials: replays must be published as the consumer's
 * own user (src/consumer/dead-letters-origin.ts), and only the consumer may read that queue.
 */
import { connect, type ChannelModel } from 'amqplib';
import { createInterface } from 'node:readline';
import { brokerUser, isTlsUrl, socketOptions, splitUrls } from '../../amqp/connection';
import { loadConfig, type VirtbusConfig } from '../../config/load';
import {
  listDeadLetters,
  purgeDeadLetters,
  replayDeadLetters,
  type DeadLetterEntry,
  type DeadLetterQueues,
  type Selection,
} from '../../consumer/dead-letters';
import { CONFIG_FLAGS, parseArgs, UsageError } from '../usage';
import { printable, printableJson } from './tail';

const HELP = `Usage: virtbus dead-letters list [--json] [--reason TEXT] [--limit N] [config flags]
       virtbus dead-letters replay [--reason TEXT] [--limit N] [config flags]
       virtbus dead-letters purge [--reason TEXT] [--limit N] [--yes] [config flags]

The consumer's dead-letter queue (consumer.deadLetterQueue, default virtbus.dead-letter):

  list     each message with its reason (header x-virtbus-reason, or the broker's x-death),
           routing key, when it was dead-lettered, whether it can be replayed, and a body
           excerpt; nothing leaves the queue. --json: one JSON object per line.
  replay   hands the selected messages back to the consumer queue they came from (after a
           fix: configuration, database, a consumer upgrade). The consumer checks each one's
           original sender as it checked the original message; a message the consumer itself
           did not dead-letter, or whose body was cut (oversized), is left in the queue.
           Replaying twice is harmless: what is not newer than the instance row is ignored.
  purge    drops the selected messages, after asking (--yes: without asking, for scripts).

Options:
  --reason TEXT   only messages whose reason contains TEXT (case-insensitive)
  --limit N       at most N messages
  --json          (list) JSON lines
  --yes           (purge) do not ask

Connects with the consumer's configuration (amqp.url, amqp.user, amqp.tls.*, consumer.*; e.g.
VIRTBUS_CONFIG=/etc/virtbus/consumer.json) and must use the consumer's broker credentials.
Exit codes: 0 done, 1 purge not confirmed or a broker failure, 2 bad usage or configuration.
`;

const SUBCOMMANDS = ['list', 'replay', 'purge'] as const;
type Subcommand = (typeof SUBCOMMANDS)[number];

function positiveInteger(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value) || Number(value) < 1)
    throw new UsageError(`--${name} must be a whole number >= 1`);
  return Number(value);
}

export function entryLines(entry: DeadLetterEntry): string {
  const status = entry.unreplayable === null ? 'replayable' : `not replayable: ${entry.unreplayable}`;
  return (
    `${printable(entry.deadLetteredAt ?? '(time unknown)')}  ${printable(entry.routingKey)}  ${entry.source}  ` +
    `${printable(entry.reason)}\n` +
    `    message ${printable(entry.messageId ?? '-')}, ${entry.bytes} bytes${entry.truncated ? ' (cut)' : ''}, ` +
    `from ${printable(entry.queue ?? '?')} published by ${printable(entry.originalUser ?? '?')}; ${printable(status)}\n` +
    `    ${printable(entry.excerpt)}\n`
  );
}

async function confirmed(question: string): Promise<boolean> {
  process.stderr.write(question);
  const lines = createInterface({ input: process.stdin, terminal: false });
  try {
    for await (const line of lines) return /^(y|yes)$/i.test(line.trim());
    return false;
  } finally {
    lines.close();
  }
}

function queuesOf(config: VirtbusConfig, url: string): DeadLetterQueues {
  return {
    deadLetterQueue: config.consumer.deadLetterQueue,
    consumerQueues: [config.consumer.queue, config.consumer.resultQueue],
    selfUser: brokerUser(url, config.amqp.user, config.amqp.tls.certFile !== ''),
  };
}

export async function run(argv: readonly string[]): Promise<number> {
  const args = parseArgs(
    argv,
    {
      json: { value: false },
      reason: { value: true },
      limit: { value: true },
      yes: { value: false },
    },
    CONFIG_FLAGS,
  );
  if (args.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const [sub, extra] = args.positionals;
  if (sub === undefined) throw new UsageError(`say what to do: ${SUBCOMMANDS.join(', ')} (see --help)`);
  if (!(SUBCOMMANDS as readonly string[]).includes(sub))
    throw new UsageError(`unknown subcommand ${sub}: ${SUBCOMMANDS.join(', ')}`);
  if (extra !== undefined) throw new UsageError(`unexpected argument ${extra}`);
  const subcommand = sub as Subcommand;
  if (args.flags.has('json') && subcommand !== 'list') throw new UsageError('--json is for list');
  if (args.flags.has('yes') && subcommand !== 'purge') throw new UsageError('--yes is for purge');
  const selection: Selection = {
    reason: args.flags.get('reason')?.[0],
    limit: positiveInteger('limit', args.flags.get('limit')?.[0]),
  };
  const config = loadConfig({ role: 'consumer', args: args.configArgs });
  const url = splitUrls(config.amqp.url)[0] ?? config.amqp.url;
  if (!config.amqp.tls.verify && isTlsUrl(url))
    process.stderr.write('virtbus dead-letters: amqp.tls.verify is false: the broker is NOT verified\n');
  const queues = queuesOf(config, url);
  const model: ChannelModel = await connect(url, socketOptions(url, config.amqp.tls, 'virtbus-dead-letters'));
  model.on('error', () => undefined);
  try {
    if (subcommand === 'list') {
      const entries = await listDeadLetters(model, queues, selection);
      for (const entry of entries)
        process.stdout.write(args.flags.has('json') ? `${printableJson(entry)}\n` : entryLines(entry));
      if (!args.flags.has('json'))
        process.stderr.write(`${entries.length} dead letter(s) in ${queues.deadLetterQueue}\n`);
      return 0;
    }
    if (subcommand === 'replay') {
      const report = await replayDeadLetters(model, queues, selection);
      for (const entry of report.skipped)
        process.stderr.write(
          `skipped ${printable(entry.messageId ?? entry.routingKey)}: ${printable(entry.unreplayable ?? '')}\n`,
        );
      process.stdout.write(
        `replayed ${report.replayed.length} dead letter(s)${report.skipped.length > 0 ? `, skipped ${report.skipped.length} (left in ${queues.deadLetterQueue})` : ''}\n`,
      );
      return 0;
    }
    if (!args.flags.has('yes')) {
      const entries = await listDeadLetters(model, queues, selection);
      const what = selection.reason === undefined && selection.limit === undefined ? 'all' : 'the selected';
      if (
        !(await confirmed(
          `Purge ${what} ${entries.length} message(s) from ${queues.deadLetterQueue}? They cannot be replayed afterwards. [y/N] `,
        ))
      ) {
        process.stderr.write('not purged\n');
        return 1;
      }
    }
    const purged = await purgeDeadLetters(model, queues, selection);
    process.stdout.write(`purged ${purged} dead letter(s) from ${queues.deadLetterQueue}\n`);
    return 0;
  } finally {
    await model.close().catch(() => undefined);
  }
}

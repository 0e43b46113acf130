/**
 * The dead-letter queue as something an operator can work with: read it without losing anything
 * (basic.get, then every message handed back unless it was replayed or purged), describe each
 * message (dead-letters-origin.ts), hand selected ones back to the consumer, or drop them.
 *
 * Replay publishes a copy of the dead letter to the consumer queue it came from, through the default
 * exchange, as the consumer's broker user, with the original routing key and user_id in headers; the
 * consumer checks that recorded sender as it checked the original (dead-letters-origin.ts explains
 * why a host cannot forge one). Each replay is confirmed — and routed: published `mandatory`, one at
 * a time — before its dead letter is acknowledged, so a crash in between replays a message twice at
 * worst, which the consumer's ordering guard absorbs (nothing older than the row is applied again).
 */
import type { Channel, ChannelModel, ConfirmChannel, GetMessage, Message, Options } from 'amqplib';
import { copyMessageProperties } from './publishing';
import { isoMicros, nowMicros } from '../util/time';
import {
  deadLetterOrigin,
  ORIGINAL_EXCHANGE_HEADER,
  ORIGINAL_ROUTING_KEY_HEADER,
  ORIGINAL_USER_HEADER,
  REPLAY_HEADER,
  type DeadLetterOrigin,
} from './dead-letters-origin';

/** How much of a body `list` shows. */
export const EXCERPT_CHARS = 160;

export interface DeadLetterQueues {
  /** consumer.deadLetterQueue */
  readonly deadLetterQueue: string;
  /** The consumer's queues a replay may go to: consumer.queue and consumer.resultQueue. */
  readonly consumerQueues: readonly string[];
  /** The consumer's broker user (amqp.user, or the URL's user). */
  readonly selfUser: string;
}

/** One dead letter, described (what `list --json` prints). */
export interface DeadLetterEntry {
  readonly reason: string;
  readonly source: DeadLetterOrigin['source'];
  readonly routingKey: string;
  readonly deadLetteredAt: string | null;
  readonly queue: string | null;
  readonly messageId: string | null;
  /** The original publisher, when the dead letter's origin can be believed. */
  readonly originalUser: string | null;
  readonly bytes: number;
  readonly truncated: boolean;
  /** Why `replay` would skip it; null when it would replay it. */
  readonly unreplayable: string | null;
  readonly excerpt: string;
}

export interface Selection {
  /** Case-insensitive substring of the reason. */
  readonly reason?: string | undefined;
  /** At most this many selected messages. */
  readonly limit?: number | undefined;
}

export function describeDeadLetter(message: Message, queues: DeadLetterQueues): DeadLetterEntry {
  const origin = deadLetterOrigin(message, queues.selfUser);
  const messageId = message.properties.messageId as unknown;
  const text = message.content.toString('utf8');
  const unreplayable =
    origin.unreplayable ??
    (origin.queue !== undefined && !queues.consumerQueues.includes(origin.queue)
      ? `taken from queue ${JSON.stringify(origin.queue)}, not one of this consumer's (${queues.consumerQueues.join(', ')})`
      : origin.queue === undefined
        ? 'the queue it was taken from is not recorded'
        : undefined);
  return {
    reason: origin.reason,
    source: origin.source,
    routingKey: origin.routingKey,
    deadLetteredAt: origin.deadLetteredAt ?? null,
    queue: origin.queue ?? null,
    messageId: typeof messageId === 'string' ? messageId : null,
    originalUser: origin.userId ?? null,
    bytes: message.content.length,
    truncated: origin.truncated,
    unreplayable: unreplayable ?? null,
    excerpt: text.length > EXCERPT_CHARS ? `${text.slice(0, EXCERPT_CHARS)}…` : text,
  };
}

function selected(entry: DeadLetterEntry, selection: Selection): boolean {
  return (
    selection.reason === undefined || entry.reason.toLowerCase().includes(selection.reason.toLowerCase())
  );
}

/**
 * Takes every message now in the dead-letter queue (unacknowledged: they stay the queue's) and
 * passes each to `visit`, which says what to do with it; those it does not take (`keep`) are handed
 * back, in order, when it is done. Reads at most the count the queue had when it started, so a
 * message handed back or arriving meanwhile is not read twice.
 */
async function sweep(
  model: ChannelModel,
  queue: string,
  visit: (message: GetMessage) => Promise<'ack' | 'keep'>,
): Promise<void> {
  const channel: Channel = await model.createChannel();
  channel.on('error', () => undefined);
  try {
    const { messageCount } = await channel.checkQueue(queue);
    const kept: GetMessage[] = [];
    for (let read = 0; read < messageCount; read += 1) {
      const message = await channel.get(queue, { noAck: false });
      if (!message) break;
      if ((await visit(message)) === 'ack') channel.ack(message);
      else kept.push(message);
    }
    for (const message of kept) channel.nack(message, false, true);
  } finally {
    // Closing the channel hands back anything still unacknowledged (an error mid-way included).
    await channel.close().catch(() => undefined);
  }
}

/** Every dead letter (or those selected), described; nothing leaves the queue. */
export async function listDeadLetters(
  model: ChannelModel,
  queues: DeadLetterQueues,
  selection: Selection = {},
): Promise<DeadLetterEntry[]> {
  const entries: DeadLetterEntry[] = [];
  await sweep(model, queues.deadLetterQueue, (message) => {
    const entry = describeDeadLetter(message, queues);
    if (selected(entry, selection) && (selection.limit === undefined || entries.length < selection.limit))
      entries.push(entry);
    return Promise.resolve('keep');
  });
  return entries;
}

export interface ReplayReport {
  readonly replayed: DeadLetterEntry[];
  /** Selected but not replayable (left in the queue), with why. */
  readonly skipped: DeadLetterEntry[];
}

/** The replay of a dead letter: its body and properties, the recorded origin, as the consumer. */
export function replayMessage(
  message: Message,
  entry: DeadLetterEntry,
  selfUser: string,
): { content: Buffer; options: Options.Publish } {
  const properties = message.properties;
  const headers: Record<string, unknown> = {
    [REPLAY_HEADER]: isoMicros(nowMicros()),
    [ORIGINAL_ROUTING_KEY_HEADER]: entry.routingKey,
    [ORIGINAL_EXCHANGE_HEADER]: (properties.headers?.[ORIGINAL_EXCHANGE_HEADER] as unknown) ?? null,
    'x-virtbus-replayed-reason': entry.reason,
  };
  if (entry.originalUser !== null) headers[ORIGINAL_USER_HEADER] = entry.originalUser;
  const options: Options.Publish = { headers, persistent: true, mandatory: true, userId: selfUser };
  copyMessageProperties(properties, options);
  return { content: message.content, options };
}

/** Publishes one message mandatory and resolves once it is confirmed; rejects when returned or nacked. */
async function publishRouted(
  channel: ConfirmChannel,
  queue: string,
  content: Buffer,
  options: Options.Publish,
): Promise<void> {
  let returned = false;
  const onReturn = (): void => {
    returned = true;
  };
  channel.once('return', onReturn);
  try {
    await new Promise<void>((resolve, reject) => {
      channel.publish('', queue, content, options, (error: unknown) =>
        error ? reject(new Error(`replay to ${queue} nacked by the broker`)) : resolve(),
      );
    });
  } finally {
    channel.removeListener('return', onReturn);
  }
  // The broker sends basic.return before the confirm of the same message.
  if (returned) throw new Error(`replay returned by the broker: no queue ${queue}`);
}

/**
 * Hands the selected, replayable dead letters back to the consumer queues they came from; the rest
 * stay in the dead-letter queue. A replay that fails (not routed, nacked, channel closed) stops the
 * run with its dead letter still in the queue.
 */
export async function replayDeadLetters(
  model: ChannelModel,
  queues: DeadLetterQueues,
  selection: Selection = {},
): Promise<ReplayReport> {
  const publisher = await model.createConfirmChannel();
  publisher.on('error', () => undefined);
  const replayed: DeadLetterEntry[] = [];
  const skipped: DeadLetterEntry[] = [];
  try {
    await sweep(model, queues.deadLetterQueue, async (message) => {
      const entry = describeDeadLetter(message, queues);
      if (!selected(entry, selection)) return 'keep';
      if (selection.limit !== undefined && replayed.length + skipped.length >= selection.limit) return 'keep';
      if (entry.unreplayable !== null || entry.queue === null) {
        skipped.push(entry);
        return 'keep';
      }
      const { content, options } = replayMessage(message, entry, queues.selfUser);
      await publishRouted(publisher, entry.queue, content, options);
      replayed.push(entry);
      return 'ack';
    });
  } finally {
    await publisher.close().catch(() => undefined);
  }
  return { replayed, skipped };
}

/** Drops the selected dead letters (all of them: one queue.purge); returns how many. */
export async function purgeDeadLetters(
  model: ChannelModel,
  queues: DeadLetterQueues,
  selection: Selection = {},
): Promise<number> {
  if (selection.reason === undefined && selection.limit === undefined) {
    const channel = await model.createChannel();
    try {
      return (await channel.purgeQueue(queues.deadLetterQueue)).messageCount;
    } finally {
      await channel.close().catch(() => undefined);
    }
  }
  let purged = 0;
  await sweep(model, queues.deadLetterQueue, (message) => {
    const entry = describeDeadLetter(message, queues);
    const take = selected(entry, selection) && (selection.limit === undefined || purged < selection.limit);
    if (take) purged += 1;
    return Promise.resolve(take ? 'ack' : 'keep');
  });
  return purged;
}

/**
 * Who originally sent a message, across dead-lettering and replay — the part of `virtbus
 * dead-letters replay` that the sender checks (senders.ts) rest on, kept apart so it can be read and
 * tested on its own.
 *
 * The sender checks believe a lifecycle message or stop result only from the broker-verified
 * `user_id` of the host its routing key names. A dead-lettered message loses both facts when it is
 * re-published: the consumer publishes the copy as itself, and a replay goes to the consumer's own
 * queue through the default exchange (routing key = queue name). So:
 *
 * 1. When the consumer dead-letters, it records the original routing key (already) and the original
 *    `user_id` (ORIGINAL_USER_HEADER) in headers, and publishes the copy with `user_id` = its own
 *    broker user. RabbitMQ refuses a `user_id` other than the connection's user, so a copy carrying
 *    the consumer's user was written by the consumer (or by something holding its credentials,
 *    which can send stop commands anyway) — never by a host.
 * 2. `dead-letters replay` (run with the consumer's credentials) believes a dead letter's recorded
 *    origin only when that copy came from the consumer (1.), or, for one the broker dead-lettered
 *    itself (`x-death`: delivery limit), from the message's own preserved `user_id` and routing key.
 *    Anything else in the queue (a host publishing to the dead-letter exchange directly, forged
 *    headers and all) has no believable origin and is not replayed.
 * 3. The replay is published to the consumer's queue with `user_id` = the consumer's user and the
 *    origin in headers (REPLAY_HEADER set). The consumer takes the recorded origin only from such a
 *    message — REPLAY_HEADER, default exchange, `user_id` its own — and runs the usual sender check
 *    on it: the replay is accepted only when the original sender was itself valid for its routing
 *    key. A host that sets REPLAY_HEADER (on the lifecycle exchange or by publishing to the queue
 *    directly) cannot set the consumer's `user_id`: its message is dead-lettered as a forged replay.
 *
 * Replaying therefore gives no one more than the original publish had; and replay never duplicates
 * an effect, because the consumer's ordering guard drops what is not newer than the row (and a stop
 * result whose command is no longer pending changes nothing).
 */
import type { Message } from 'amqplib';

export const REASON_HEADER = 'x-virtbus-reason';
export const ORIGINAL_ROUTING_KEY_HEADER = 'x-virtbus-original-routing-key';
export const ORIGINAL_EXCHANGE_HEADER = 'x-virtbus-original-exchange';
/** The broker-verified `user_id` the message was first published with (absent: it had none). */
export const ORIGINAL_USER_HEADER = 'x-virtbus-original-user-id';
/** Which consumer queue it was taken from. */
export const QUEUE_HEADER = 'x-virtbus-queue';
export const DEAD_LETTERED_AT_HEADER = 'x-virtbus-dead-lettered-at';
export const ORIGINAL_BYTES_HEADER = 'x-virtbus-original-bytes';
/** Set on a replay: when it was replayed (ISO time); the consumer then reads the origin headers. */
export const REPLAY_HEADER = 'x-virtbus-replayed-at';

/** Where a message really came from, as far as the sender checks are concerned. */
export interface Origin {
  readonly routingKey: string;
  /** The broker-verified publishing user; undefined when the message carried none. */
  readonly userId: string | undefined;
  /** It arrived as a replay of a dead letter (the origin was read from its headers). */
  readonly replay: boolean;
}

function header(message: Pick<Message, 'properties'>, name: string): unknown {
  const headers = message.properties.headers;
  return headers?.[name];
}

function optionalString(value: unknown): string | undefined {
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  return typeof value === 'string' && value !== '' ? value : undefined;
}

function userIdOf(message: Pick<Message, 'properties'>): string | undefined {
  return optionalString(message.properties.userId as unknown);
}

/**
 * The origin of a delivery on the consumer's queues: its own routing key and user, or — for a
 * replay the consumer's own user published to its queue — the recorded ones. A message that claims
 * to be a replay without coming from the consumer's user is refused (`forged`).
 * @param selfUser the consumer's broker user (amqp.user / the URL's user); '' when unknown
 */
export function deliveryOrigin(
  message: Pick<Message, 'fields' | 'properties'>,
  selfUser: string,
): Origin | { readonly forged: string } {
  const own: Origin = {
    routingKey: message.fields.routingKey,
    userId: userIdOf(message),
    replay: false,
  };
  if (header(message, REPLAY_HEADER) === undefined) return own;
  const sender = userIdOf(message);
  if (selfUser === '' || sender !== selfUser || message.fields.exchange !== '')
    return {
      forged: `forged replay: header ${REPLAY_HEADER} on a message published by ${JSON.stringify(sender ?? null)} via exchange ${JSON.stringify(message.fields.exchange)}; only the consumer's own broker user replays, to its queue`,
    };
  const routingKey = optionalString(header(message, ORIGINAL_ROUTING_KEY_HEADER));
  if (routingKey === undefined) return { forged: `replay without header ${ORIGINAL_ROUTING_KEY_HEADER}` };
  return { routingKey, userId: optionalString(header(message, ORIGINAL_USER_HEADER)), replay: true };
}

/** One `x-death` entry as RabbitMQ writes it (the fields virtbus reads). */
interface XDeath {
  readonly queue?: unknown;
  readonly reason?: unknown;
  readonly time?: unknown;
  readonly 'routing-keys'?: unknown;
  readonly count?: unknown;
}

export function firstDeath(message: Pick<Message, 'properties'>): XDeath | undefined {
  const deaths = header(message, 'x-death');
  if (!Array.isArray(deaths) || deaths.length === 0) return undefined;
  const first = deaths[0] as unknown;
  return typeof first === 'object' && first !== null ? first : undefined;
}

/** What a dead letter says about itself and how far that can be believed. */
export interface DeadLetterOrigin {
  /** consumer: dead-lettered by a virtbus consumer (x-virtbus-reason); broker: by RabbitMQ (x-death). */
  readonly source: 'consumer' | 'broker' | 'unknown';
  readonly reason: string;
  /** The routing key it was first published with. */
  readonly routingKey: string;
  /** The consumer queue it was taken from (its name), when known. */
  readonly queue: string | undefined;
  /** The original publisher (broker-verified), when known and believable. */
  readonly userId: string | undefined;
  /** When it was dead-lettered (ISO-8601), when known. */
  readonly deadLetteredAt: string | undefined;
  /** Only a prefix of the body was kept (oversized): it can never be replayed. */
  readonly truncated: boolean;
  /** Why it cannot be replayed; undefined when it can. */
  readonly unreplayable: string | undefined;
}

/** x-death's time: an AMQP timestamp (seconds), which amqplib decodes to a number. */
function deathTime(value: unknown): string | undefined {
  if (typeof value === 'number' && Number.isFinite(value)) return new Date(value * 1000).toISOString();
  if (value instanceof Date) return value.toISOString();
  return undefined;
}

/**
 * Reads a message from the dead-letter queue.
 * @param selfUser the consumer's broker user: a consumer-written dead letter is believed only when
 *   its `user_id` is this user (so a host cannot plant one with a made-up origin)
 */
export function deadLetterOrigin(
  message: Pick<Message, 'fields' | 'properties'>,
  selfUser: string,
): DeadLetterOrigin {
  const reason = optionalString(header(message, REASON_HEADER));
  const truncated = header(message, ORIGINAL_BYTES_HEADER) !== undefined;
  if (reason !== undefined) {
    const writer = userIdOf(message);
    const believable = selfUser !== '' && writer === selfUser;
    return {
      source: 'consumer',
      reason,
      routingKey: optionalString(header(message, ORIGINAL_ROUTING_KEY_HEADER)) ?? message.fields.routingKey,
      queue: optionalString(header(message, QUEUE_HEADER)),
      userId: believable ? optionalString(header(message, ORIGINAL_USER_HEADER)) : undefined,
      deadLetteredAt: optionalString(header(message, DEAD_LETTERED_AT_HEADER)),
      truncated,
      unreplayable: truncated
        ? 'only a prefix of the body was kept (oversized)'
        : believable
          ? undefined
          : `not written by the consumer's broker user ${JSON.stringify(selfUser)} (user_id ${JSON.stringify(writer ?? null)}): its recorded origin cannot be believed`,
    };
  }
  const death = firstDeath(message);
  if (death && header(message, REPLAY_HEADER) !== undefined) {
    // A replay the broker dead-lettered in turn (delivery limit): its origin is in its headers,
    // believable when the replay came from the consumer's user (RabbitMQ keeps user_id).
    const writer = userIdOf(message);
    const believable = selfUser !== '' && writer === selfUser;
    return {
      source: 'broker',
      reason: `broker: ${optionalString(death.reason) ?? 'dead-lettered'} (a replay)`,
      routingKey: optionalString(header(message, ORIGINAL_ROUTING_KEY_HEADER)) ?? message.fields.routingKey,
      queue: optionalString(death.queue),
      userId: believable ? optionalString(header(message, ORIGINAL_USER_HEADER)) : undefined,
      deadLetteredAt: deathTime(death.time),
      truncated: false,
      unreplayable: believable ? undefined : "a replay not published by the consumer's broker user",
    };
  }
  if (death) {
    const keys = Array.isArray(death['routing-keys']) ? (death['routing-keys'] as unknown[]) : [];
    const queue = optionalString(death.queue);
    return {
      source: 'broker',
      reason: `broker: ${optionalString(death.reason) ?? 'dead-lettered'}${typeof death.count === 'number' ? ` (count ${death.count})` : ''}`,
      routingKey: optionalString(keys[0]) ?? message.fields.routingKey,
      queue,
      // RabbitMQ keeps the properties of a message it dead-letters: user_id is the original's.
      userId: userIdOf(message),
      deadLetteredAt: deathTime(death.time),
      truncated: false,
      unreplayable: queue === undefined ? 'x-death names no queue' : undefined,
    };
  }
  return {
    source: 'unknown',
    reason: 'unknown (no x-virtbus-reason or x-death header)',
    routingKey: message.fields.routingKey,
    queue: undefined,
    userId: undefined,
    deadLetteredAt: undefined,
    truncated,
    unreplayable:
      'neither a consumer nor a broker dead letter: published to the dead-letter exchange directly',
  };
}

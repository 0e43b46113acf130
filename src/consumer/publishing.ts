/**
 * What the consumer publishes, apart from the service's message flow: one confirmed publish on the
 * current confirm channel, the properties a dead-lettered message carries (the original's, plus the
 * reason and where it came from), and the shape of a stop command on the wire. Kept apart so the
 * service reads as the pipeline it is, and so the command's wire properties have one home.
 */
import type { ConfirmChannel, ConsumeMessage, Message, MessageProperties, Options } from 'amqplib';
import { commandRoutingKey, type StopCommand } from '../messages/command';
import { APP_ID } from '../messages/lifecycle';
import { isoMicros, nowMicros } from '../util/time';
import type { Channels } from './acks';
import {
  DEAD_LETTERED_AT_HEADER,
  deliveryOrigin,
  ORIGINAL_BYTES_HEADER,
  ORIGINAL_EXCHANGE_HEADER,
  ORIGINAL_ROUTING_KEY_HEADER,
  ORIGINAL_USER_HEADER,
  QUEUE_HEADER,
  REASON_HEADER,
} from './dead-letters-origin';
import { traceHeaders } from '../tracing/consumer';

export { REASON_HEADER } from './dead-letters-origin';

/** Publishes on the confirm channel; resolves when the broker confirms, rejects on a nack or when closed. */
export function publishConfirmed(
  channels: Channels | undefined,
  exchange: string,
  routingKey: string,
  content: Buffer,
  options: Options.Publish,
): Promise<void> {
  if (!channels?.open) return Promise.reject(new Error('not connected to the broker'));
  return new Promise<void>((resolve, reject) => {
    try {
      channels.publish.publish(exchange, routingKey, content, options, (error: unknown) =>
        error
          ? reject(error instanceof Error ? error : new Error('publish nacked by the broker'))
          : resolve(),
      );
    } catch (error) {
      reject(error instanceof Error ? error : new Error(String(error)));
    }
  });
}

/**
 * The properties of a message re-published to the dead-letter exchange: the original's, with the
 * reason and the message's origin in headers — its routing key and its broker-verified user_id (for
 * a replay, the ones it carried: dead-letters-origin.ts) — published as `selfUser`, the consumer's
 * broker user, which is what makes that recorded origin believable to `dead-letters replay`.
 */
export function deadLetterOptions(
  message: ConsumeMessage,
  reason: string,
  queueName: string,
  selfUser = '',
): Options.Publish {
  const properties = message.properties;
  const found = deliveryOrigin(message, selfUser);
  const origin =
    'forged' in found
      ? { routingKey: message.fields.routingKey, userId: properties.userId as string | undefined }
      : found;
  const headers: Record<string, unknown> = {
    ...properties.headers,
    [REASON_HEADER]: reason,
    [QUEUE_HEADER]: queueName,
    [ORIGINAL_EXCHANGE_HEADER]: message.fields.exchange,
    [ORIGINAL_ROUTING_KEY_HEADER]: origin.routingKey,
    [DEAD_LETTERED_AT_HEADER]: isoMicros(nowMicros()),
  };
  // A forged "origin" header on the original must not survive into the copy (the copy is believed).
  delete headers[ORIGINAL_USER_HEADER];
  if (typeof origin.userId === 'string' && origin.userId !== '')
    headers[ORIGINAL_USER_HEADER] = origin.userId;
  const options: Options.Publish = { headers, persistent: true };
  if (selfUser) options.userId = selfUser;
  copyMessageProperties(properties, options);
  return options;
}

/**
 * A message's own AMQP properties (content type and encoding, id, type, app, timestamp, correlation)
 * onto the options it is published again with (a dead letter, a replay): unchanged, so readers see
 * the message as its sender sent it.
 */
export function copyMessageProperties(properties: MessageProperties, options: Options.Publish): void {
  if (properties.contentType) options.contentType = properties.contentType as string;
  if (properties.contentEncoding) options.contentEncoding = properties.contentEncoding as string;
  if (properties.messageId) options.messageId = properties.messageId as string;
  if (properties.type) options.type = properties.type as string;
  if (properties.appId) options.appId = properties.appId as string;
  if (properties.timestamp) options.timestamp = properties.timestamp as number;
  if (properties.correlationId) options.correlationId = properties.correlationId as string;
}

/** How much of an oversized body goes to the dead-letter queue (enough to see what it was). */
export const DEAD_LETTER_PREFIX_BYTES = 1024;

/**
 * A dead-letter copy: the original body and properties plus the reason headers — or, for an
 * oversized body (`truncate`), only its first DEAD_LETTER_PREFIX_BYTES and its size in
 * x-virtbus-original-bytes, because the dead-letter queue must stay bounded too.
 */
export function deadLetterMessage(
  message: ConsumeMessage,
  reason: string,
  queueName: string,
  truncate: boolean,
  selfUser = '',
): { content: Buffer; options: Options.Publish; routingKey: string } {
  const options = deadLetterOptions(message, reason, queueName, selfUser);
  // Published with the original routing key (for a replay, the one it carried), so the dead-letter
  // exchange routes and `dead-letters list` shows what the sender meant.
  const routingKey = (options.headers as Record<string, string>)[ORIGINAL_ROUTING_KEY_HEADER] as string;
  if (!truncate || message.content.length <= DEAD_LETTER_PREFIX_BYTES)
    return { content: message.content, options, routingKey };
  options.headers = {
    ...(options.headers as Record<string, unknown>),
    [ORIGINAL_BYTES_HEADER]: message.content.length,
  };
  return { content: message.content.subarray(0, DEAD_LETTER_PREFIX_BYTES), options, routingKey };
}

/**
 * A stop command on the wire: routing key, body and properties (expiring after ttlMs). `userId` is
 * the consumer's broker user: the broker refuses any other value, so a bridge can trust it names the
 * consumer. `mandatory`: a command no queue takes comes back (basic.return) instead of vanishing.
 */
export function commandMessage(
  command: StopCommand,
  ttlMs: number,
  userId = '',
): { routingKey: string; content: Buffer; options: Options.Publish } {
  return {
    routingKey: commandRoutingKey(command.host),
    content: Buffer.from(JSON.stringify(command)),
    options: {
      ...(userId ? { userId } : {}),
      mandatory: true,
      persistent: true,
      contentType: 'application/json',
      messageId: command.command_id,
      appId: APP_ID,
      type: command.schema,
      timestamp: Math.floor(Date.now() / 1000),
      expiration: String(ttlMs),
      ...traceHeaders(), // the traceparent of the message that caused the command
    },
  };
}

/** A stop command the broker could not route to any queue (no bridge queue bound for its host). */
export class CommandReturnedError extends Error {
  override readonly name = 'CommandReturnedError';
}

/** Message ids returned by the broker on each confirm channel, until their confirm arrives. */
const returnedIds = new WeakMap<ConfirmChannel, Set<string>>();

/**
 * Records what the broker returns on this channel. The broker sends basic.return before the
 * basic.ack of the same message, so when a command's confirm arrives its return (if any) is known.
 */
export function watchReturns(channel: ConfirmChannel, onReturn: (message: Message) => void): void {
  const ids = new Set<string>();
  returnedIds.set(channel, ids);
  channel.on('return', (message: Message) => {
    const id = message.properties.messageId as unknown;
    if (typeof id === 'string') ids.add(id);
    onReturn(message);
  });
}

/**
 * Publishes a stop command and resolves once the broker confirmed it AND routed it: a returned
 * (unroutable) command rejects with CommandReturnedError, so the caller's publish-failure path runs
 * instead of the command timing out unseen.
 */
export async function publishCommand(
  channels: Channels | undefined,
  exchange: string,
  command: StopCommand,
  ttlMs: number,
  userId: string,
): Promise<void> {
  const { routingKey, content, options } = commandMessage(command, ttlMs, userId);
  const ids = channels ? returnedIds.get(channels.publish) : undefined;
  let failure: Error | undefined;
  try {
    await publishConfirmed(channels, exchange, routingKey, content, options);
  } catch (error) {
    failure = error instanceof Error ? error : new Error(String(error));
  }
  // A return outranks whatever else happened to the publish.
  if (ids?.delete(command.command_id))
    throw new CommandReturnedError(
      `stop command returned by the broker: no queue bound for routing key ${routingKey} on ${exchange}`,
    );
  if (failure !== undefined) throw failure;
}

/**
 * What the consumer publishes, apart from the service's message flow: one confirmed publish on the
 * current confirm channel, the properties a dead-lettered message carries (the original's, plus the
 * reason and where it came from), and the shape of a stop command on the wire. Kept apart so the
 * service reads as the pipeline it is, and so the command's wire properties have one home.
 */
import type { ConsumeMessage, Options } from 'amqplib';
import { commandRoutingKey, type StopCommand } from '../messages/command';
import { APP_ID } from '../messages/lifecycle';
import { isoMicros, nowMicros } from '../util/time';
import type { Channels } from './acks';

export const REASON_HEADER = 'x-virtbus-reason';

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
 * reason and the message's origin in headers.
 */
export function deadLetterOptions(
  message: ConsumeMessage,
  reason: string,
  queueName: string,
): Options.Publish {
  const properties = message.properties;
  const headers: Record<string, unknown> = {
    ...properties.headers,
    [REASON_HEADER]: reason,
    'x-virtbus-queue': queueName,
    'x-virtbus-original-exchange': message.fields.exchange,
    'x-virtbus-original-routing-key': message.fields.routingKey,
    'x-virtbus-dead-lettered-at': isoMicros(nowMicros()),
  };
  const options: Options.Publish = { headers, persistent: true };
  if (properties.contentType) options.contentType = properties.contentType as string;
  if (properties.contentEncoding) options.contentEncoding = properties.contentEncoding as string;
  if (properties.messageId) options.messageId = properties.messageId as string;
  if (properties.type) options.type = properties.type as string;
  if (properties.appId) options.appId = properties.appId as string;
  if (properties.timestamp) options.timestamp = properties.timestamp as number;
  if (properties.correlationId) options.correlationId = properties.correlationId as string;
  return options;
}

/** A stop command on the wire: routing key, body and properties (expiring after ttlMs). */
export function commandMessage(
  command: StopCommand,
  ttlMs: number,
): { routingKey: string; content: Buffer; options: Options.Publish } {
  return {
    routingKey: commandRoutingKey(command.host),
    content: Buffer.from(JSON.stringify(command)),
    options: {
      persistent: true,
      contentType: 'application/json',
      messageId: command.command_id,
      appId: APP_ID,
      type: command.schema,
      timestamp: Math.floor(Date.now() / 1000),
      expiration: String(ttlMs),
    },
  };
}

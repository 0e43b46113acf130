/**
 * The bridge's lifecycle output formats (amqp.format), in one place: what the dispatcher puts in the
 * body, and what the publisher adds on the wire (content type, headers). The consumer reads every
 * format whatever a bridge is configured with (src/consumer/validate.ts), so bridges can be moved
 * from one format to another one host at a time.
 *
 * - json: the virtbus.lifecycle/1 object (the default);
 * - oslo: that object as the payload of an oslo.messaging v2 envelope;
 * - cloudevents: a binary-mode CloudEvent, the object as the body and the attributes in `ce-` headers;
 * - cloudevents-structured: a structured-mode CloudEvent (application/cloudevents+json).
 */
import {
  binaryCloudEventHeaders,
  CLOUDEVENTS_DATA_CONTENT_TYPE,
  CLOUDEVENTS_STRUCTURED_CONTENT_TYPE,
  structuredCloudEvent,
} from './cloudevents';
import { osloEnvelope, type LifecycleMessage } from './lifecycle';

export const LIFECYCLE_FORMATS = ['json', 'oslo', 'cloudevents', 'cloudevents-structured'] as const;
export type LifecycleFormat = (typeof LIFECYCLE_FORMATS)[number];

/** The body object of a lifecycle message in a format (serialised by the caller). */
export function encodeLifecycleBody(
  format: LifecycleFormat,
  message: LifecycleMessage,
  publishedMicros: number,
): object {
  switch (format) {
    case 'oslo':
      return osloEnvelope(message, publishedMicros);
    case 'cloudevents-structured':
      return structuredCloudEvent(message);
    case 'json':
    case 'cloudevents':
      return message;
  }
}

export function lifecycleContentType(format: LifecycleFormat): string {
  return format === 'cloudevents-structured'
    ? CLOUDEVENTS_STRUCTURED_CONTENT_TYPE
    : CLOUDEVENTS_DATA_CONTENT_TYPE;
}

/**
 * The format's headers for a body as the dispatcher encoded it. Only binary CloudEvents has any: the
 * outbox journal keeps bodies, not headers, so they are derived from the body when it is published
 * (a republish after a restart carries the same ones).
 */
export function lifecycleFormatHeaders(
  format: LifecycleFormat,
  body: Buffer,
): Record<string, string> | undefined {
  if (format !== 'cloudevents') return undefined;
  return binaryCloudEventHeaders(JSON.parse(body.toString('utf8')) as LifecycleMessage);
}

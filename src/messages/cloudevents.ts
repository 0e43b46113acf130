/**
 * Lifecycle messages as CloudEvents 1.0 (amqp.format `cloudevents` and `cloudevents-structured`), so
 * tools that speak CloudEvents can take the stream as it is. AMQP 0-9-1 has no CloudEvents protocol
 * binding (the AMQP binding is for AMQP 1.0, whose application properties 0-9-1 lacks); binary mode
 * follows the HTTP and Kafka bindings instead: every attribute is a header named `ce-<attribute>`,
 * the data (the virtbus.lifecycle/1 object, unchanged) is the body and the message's content_type is
 * its datacontenttype. Structured mode is the JSON event format: the whole event, data inside, with
 * content_type `application/cloudevents+json`. docs/message-format.md shows both.
 *
 * The attributes are all derived from the data, so the consumer, which reads the data as it reads
 * every other format, refuses an event whose attributes say something else (a reader that trusts the
 * attributes must not be told another story than the consumer acts on).
 */
import type { LifecycleMessage } from './lifecycle';

export const CLOUDEVENTS_SPEC_VERSION = '1.0';
export const CLOUDEVENTS_STRUCTURED_CONTENT_TYPE = 'application/cloudevents+json';
export const CLOUDEVENTS_DATA_CONTENT_TYPE = 'application/json';
/** Binary mode's header prefix (the HTTP and Kafka bindings' own). */
export const CE_HEADER_PREFIX = 'ce-';
/** Digits of the `sequence` extension: Number.MAX_SAFE_INTEGER has 16, so text order is seq order. */
export const SEQUENCE_DIGITS = 16;

/** The fields of a lifecycle message the attributes are made of. */
type AttributeSource = Pick<
  LifecycleMessage,
  'event_id' | 'host' | 'transition' | 'instance_uuid' | 'occurred_at' | 'seq' | 'boot_id'
>;

/** `source`: the host, as an absolute URI (a URN; the host name percent-encoded where it must be). */
export function cloudEventSource(host: string): string {
  return `urn:virtbus:host:${encodeURIComponent(host)}`;
}

/** `type`: the transition, under virtbus's prefix (virtbus.lifecycle.started, …sync_end). */
export function cloudEventType(transition: string): string {
  return `virtbus.lifecycle.${transition}`;
}

export function cloudEventSequence(seq: number): string {
  return String(seq).padStart(SEQUENCE_DIGITS, '0');
}

/**
 * The context attributes, in the order they are written: id = event_id, source = the host, type =
 * the transition, subject = the instance (absent for sync_end, which has none), time = occurred_at,
 * and the extensions `sequence` (seq, zero-padded so it sorts as text; it counts per bridge process)
 * and `bootid` (that process's boot_id: sequences compare only within one).
 */
export function cloudEventAttributes(message: AttributeSource): Record<string, string> {
  const attributes: Record<string, string> = {
    specversion: CLOUDEVENTS_SPEC_VERSION,
    id: message.event_id,
    source: cloudEventSource(message.host),
    type: cloudEventType(message.transition),
  };
  if (message.instance_uuid !== null) attributes.subject = message.instance_uuid;
  attributes.time = message.occurred_at;
  attributes.sequence = cloudEventSequence(message.seq);
  attributes.bootid = message.boot_id;
  return attributes;
}

/** Structured mode: the JSON event format, the lifecycle message as its data. */
export function structuredCloudEvent(message: LifecycleMessage): Record<string, unknown> {
  return { ...cloudEventAttributes(message), datacontenttype: CLOUDEVENTS_DATA_CONTENT_TYPE, data: message };
}

/** Binary mode: the attributes as `ce-` headers (the body is the message itself). */
export function binaryCloudEventHeaders(message: AttributeSource): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(cloudEventAttributes(message)))
    headers[CE_HEADER_PREFIX + name] = value;
  return headers;
}

// ---- reading (the consumer) ---------------------------------------------------------------------

/** A CloudEvent the consumer refuses (the reason goes with it to the dead-letter queue). */
export class CloudEventError extends Error {
  override readonly name = 'CloudEventError';
}

/** Whether a parsed body is a structured CloudEvent (it has specversion). */
export function isStructuredCloudEvent(record: Record<string, unknown>): boolean {
  return 'specversion' in record;
}

/**
 * The data of a structured CloudEvent, after checking what virtbus produces: spec version 1.0, JSON
 * data inline (data_base64 is not a lifecycle message), and attributes that agree with the data.
 */
export function structuredCloudEventData(event: Record<string, unknown>): unknown {
  if (event.specversion !== CLOUDEVENTS_SPEC_VERSION)
    throw new CloudEventError(`unsupported CloudEvents specversion ${JSON.stringify(event.specversion)}`);
  const contentType = event.datacontenttype;
  if (
    contentType !== undefined &&
    (typeof contentType !== 'string' || !/^application\/json\b/i.test(contentType))
  )
    throw new CloudEventError(
      `CloudEvent datacontenttype ${JSON.stringify(contentType)} is not application/json`,
    );
  const data = event.data;
  if (data === null || typeof data !== 'object' || Array.isArray(data))
    throw new CloudEventError('CloudEvent without a JSON object as its data');
  const record = data as Record<string, unknown>;
  const mismatch = attributeMismatch(event, {
    eventId: record.event_id,
    host: record.host,
    transition: record.transition,
    instanceUuid: record.instance_uuid,
    seq: record.seq,
  });
  if (mismatch) throw new CloudEventError(mismatch);
  return data;
}

/** What the derived attributes are checked against (the data, or the consumer's reading of it). */
interface Described {
  readonly eventId: unknown;
  readonly host: unknown;
  readonly transition: unknown;
  readonly instanceUuid: unknown;
  readonly seq: unknown;
}

/**
 * Binary mode, after the data was validated: a reason when the `ce-` headers contradict it,
 * undefined when they agree or are absent (a message in another format: nothing is read then).
 */
export function binaryCloudEventMismatch(
  headers: Readonly<Record<string, unknown>> | undefined,
  data: Described,
): string | undefined {
  if (!headers || headers[`${CE_HEADER_PREFIX}specversion`] === undefined) return undefined;
  const attributes: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(headers))
    if (name.startsWith(CE_HEADER_PREFIX))
      attributes[name.slice(CE_HEADER_PREFIX.length)] = Buffer.isBuffer(value)
        ? value.toString('utf8')
        : value;
  if (attributes.specversion !== CLOUDEVENTS_SPEC_VERSION)
    return `unsupported CloudEvents specversion ${JSON.stringify(attributes.specversion)}`;
  return attributeMismatch(attributes, data);
}

/**
 * The first attribute that does not say what the data says (only those virtbus derives). UUIDs are
 * compared case-insensitively: the consumer reads them lower-cased.
 */
function attributeMismatch(attributes: Record<string, unknown>, data: Described): string | undefined {
  const lower = (value: unknown): unknown => (typeof value === 'string' ? value.toLowerCase() : value);
  const expected: Array<[string, unknown, string | undefined]> = [
    ['id', attributes.id, typeof data.eventId === 'string' ? data.eventId : undefined],
    ['source', attributes.source, typeof data.host === 'string' ? cloudEventSource(data.host) : undefined],
    [
      'type',
      attributes.type,
      typeof data.transition === 'string' ? cloudEventType(data.transition) : undefined,
    ],
    [
      'subject',
      lower(attributes.subject),
      typeof data.instanceUuid === 'string' ? data.instanceUuid.toLowerCase() : undefined,
    ],
    [
      'sequence',
      attributes.sequence,
      typeof data.seq === 'number' ? cloudEventSequence(data.seq) : undefined,
    ],
  ];
  for (const [name, actual, value] of expected) {
    // A required attribute must be there; subject and sequence only when the data implies them.
    if (actual === undefined && (name === 'subject' || name === 'sequence')) continue;
    if (actual !== value)
      return `CloudEvent attribute ${name} ${JSON.stringify(actual)} does not match its data (${JSON.stringify(value)})`;
  }
  return undefined;
}

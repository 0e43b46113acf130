/**
 * W3C Trace Context (`traceparent`) for virtbus messages, without OpenTelemetry: every lifecycle
 * message carries one whether or not anything exports spans, so the consumer can pass it on to the
 * stop command and the instance.update notification it causes.
 *
 * The bridge derives a message's trace context from its event_id instead of storing one: event_id is
 * a random (version 4) UUID, i.e. 122 random bits in 32 hex digits, exactly a trace-id. Derived, it
 * survives the durable outbox (whose journal format has no room for headers) and a republish after a
 * reconnect carries the same traceparent; and an operator finds an event's trace by its event_id.
 * The bridge's two span ids are the UUID's halves: both always contain a non-zero digit (the version
 * nibble `4` in the first half, the variant nibble 8–b in the second), as W3C requires.
 */

/** The header name (W3C Trace Context; also what OpenTelemetry's propagator reads). */
export const TRACEPARENT = 'traceparent';

export interface TraceParent {
  /** 32 lower-case hex digits, not all zero. */
  readonly traceId: string;
  /** The caller's span: 16 lower-case hex digits, not all zero. */
  readonly spanId: string;
  /** The caller may have recorded this trace (trace-flags bit 0). */
  readonly sampled: boolean;
}

/** The ids of the bridge's spans for one lifecycle message (see the module comment). */
export interface BridgeSpanIds {
  readonly traceId: string;
  /** The event's span: received → confirmed. */
  readonly eventSpanId: string;
  /** The publish span (published → confirmed): the parent the message's traceparent names. */
  readonly publishSpanId: string;
}

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** The bridge's span ids for an event_id; undefined when it is not a version-4 UUID. */
export function bridgeSpanIds(eventId: string): BridgeSpanIds | undefined {
  if (!UUID_V4.test(eventId)) return undefined;
  const hex =
    eventId.slice(0, 8) +
    eventId.slice(9, 13) +
    eventId.slice(14, 18) +
    eventId.slice(19, 23) +
    eventId.slice(24);
  return { traceId: hex, eventSpanId: hex.slice(0, 16), publishSpanId: hex.slice(16) };
}

/** `00-<trace-id>-<parent-id>-<flags>` (version 00, the only one defined). */
export function formatTraceparent(parent: TraceParent): string {
  return `00-${parent.traceId}-${parent.spanId}-${parent.sampled ? '01' : '00'}`;
}

/** The traceparent a lifecycle message carries: its publish span, derived from its event_id. */
export function bridgeTraceparent(eventId: string, sampled: boolean): string | undefined {
  const ids = bridgeSpanIds(eventId);
  return ids && formatTraceparent({ traceId: ids.traceId, spanId: ids.publishSpanId, sampled });
}

const TRACEPARENT_PATTERN = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const ZERO_TRACE = '0'.repeat(32);
const ZERO_SPAN = '0'.repeat(16);

/**
 * A received traceparent header (an AMQP header value: a string, or a Buffer from some clients), or
 * undefined when absent or invalid. An invalid one is ignored, not refused: trace context is advice,
 * and a message is judged by its body and sender alone. Per W3C, versions above 00 are read as 00
 * (their first four fields), version ff is invalid, and so are all-zero ids.
 */
export function parseTraceparent(value: unknown): TraceParent | undefined {
  const text =
    typeof value === 'string' ? value : Buffer.isBuffer(value) ? value.toString('latin1') : undefined;
  if (text === undefined || text.length > 512) return undefined;
  const match = TRACEPARENT_PATTERN.exec(text.trim());
  if (!match) return undefined;
  const [, version, traceId, spanId, flags, rest] = match as unknown as [
    string,
    string,
    string,
    string,
    string,
    string?,
  ];
  if (version === 'ff' || (version === '00' && rest !== undefined)) return undefined;
  if (traceId === ZERO_TRACE || spanId === ZERO_SPAN) return undefined;
  return { traceId, spanId, sampled: (Number.parseInt(flags, 16) & 1) === 1 };
}

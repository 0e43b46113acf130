/**
 * Trace context through the consumer: a lifecycle message's traceparent is carried onto the stop
 * command and the instance.update notifications its processing causes, and, when span export is on
 * (src/tracing/otel.ts), the consumer's part of the trace is recorded when the message is acked:
 *
 *   process <routing key>   consumed → acknowledged (child of the bridge's publish span)
 *   ├─ commit               consumed → its store round committed
 *   └─ notify               committed → what it published (notifications, command) confirmed
 *
 * The hooks sit where the message passes anyway: the intake (startMessageTrace), the store rounds,
 * which run a decision's effects right after its commit (effectsWithTrace), the publishes inside
 * those effects (traceHeaders) and the acknowledgement (finishMessageTraces). The effects publish
 * synchronously (each publish is written to the channel before its confirm is awaited), so the
 * message whose effects are running is kept in a plain variable for that synchronous stretch rather
 * than in an AsyncLocalStorage, which would slow every promise of the process down.
 *
 * Without span export and without a traceparent on the message nothing is allocated; without span
 * export the received traceparent is passed on unchanged (the consumer adds no span of its own).
 */
import { randomBytes } from 'node:crypto';
import type { ConsumeMessage } from 'amqplib';
import { nowMicros } from '../util/time';
import { activeTracing, type SpanRecord } from './otel';
import { formatTraceparent, parseTraceparent, TRACEPARENT, type TraceParent } from './trace-context';

/** One consumed lifecycle message's trace. */
export interface MessageTrace {
  readonly traceId: string;
  /** The consumer's process span, when it records spans. */
  readonly spanId: string | undefined;
  /** The received traceparent (the bridge's publish span), if any. */
  readonly parent: TraceParent | undefined;
  /** The traceparent of what this message causes. */
  readonly outgoing: string;
  readonly receivedUs: number;
  committedUs: number | undefined;
  notifiedUs: number | undefined;
}

/** Traces of the messages in hand, by delivery, until they are acknowledged. */
const inHand = new WeakMap<ConsumeMessage, MessageTrace>();

/** The message whose effects are running (see the module comment). */
let current: MessageTrace | undefined;

/** At intake: the message's trace, or undefined when there is nothing to carry or record. */
export function startMessageTrace(message: ConsumeMessage): MessageTrace | undefined {
  const parent = parseTraceparent(message.properties.headers?.[TRACEPARENT]);
  const recording = activeTracing() !== undefined;
  if (!parent && !recording) return undefined;
  let trace: MessageTrace;
  if (recording) {
    const traceId = parent?.traceId ?? randomBytes(16).toString('hex');
    const spanId = randomBytes(8).toString('hex');
    trace = {
      traceId,
      spanId,
      parent,
      outgoing: formatTraceparent({ traceId, spanId, sampled: true }),
      receivedUs: nowMicros(),
      committedUs: undefined,
      notifiedUs: undefined,
    };
    inHand.set(message, trace);
  } else {
    const received = parent as TraceParent;
    trace = {
      traceId: received.traceId,
      spanId: undefined,
      parent: received,
      outgoing: formatTraceparent(received),
      receivedUs: 0,
      committedUs: undefined,
      notifiedUs: undefined,
    };
  }
  return trace;
}

/**
 * Runs a committed decision's effects as the message's (their publishes carry its traceparent) and
 * notes when it was committed and when what it published was confirmed.
 */
export function effectsWithTrace(
  trace: MessageTrace | undefined,
  effects: (() => Promise<void> | undefined) | undefined,
): Promise<void> | undefined {
  if (!trace) return effects?.();
  if (trace.spanId) trace.committedUs = nowMicros();
  if (!effects) return undefined;
  const outer = current;
  current = trace;
  let published: Promise<void> | undefined;
  try {
    published = effects();
  } finally {
    current = outer;
  }
  if (published && trace.spanId) {
    const settled = (): void => {
      trace.notifiedUs = nowMicros();
    };
    published.then(settled, settled);
  }
  return published;
}

/** Headers for a publish made by the running effects: their message's traceparent, if any. */
export function traceHeaders(): { headers?: Record<string, string> } {
  return current ? { headers: { [TRACEPARENT]: current.outgoing } } : {};
}

/** What the span needs to know of a message's end (the service's ProcessedInfo). */
export interface TraceOutcome {
  readonly outcome: string;
  readonly reason?: string;
}

/** At acknowledgement: records the consumer's spans of these messages (when span export is on). */
export function finishMessageTraces(
  deliveries: ReadonlyArray<{ readonly message: ConsumeMessage; readonly info: TraceOutcome | undefined }>,
): void {
  const tracing = activeTracing();
  if (!tracing) return;
  const ackedUs = nowMicros();
  const spans: SpanRecord[] = [];
  for (const { message, info } of deliveries) {
    const trace = inHand.get(message);
    if (!trace?.spanId) continue;
    inHand.delete(message);
    const { traceId, spanId, receivedUs, committedUs, notifiedUs } = trace;
    const attributes = {
      'messaging.system': 'rabbitmq',
      'messaging.operation.type': 'process',
      'messaging.destination.name': message.fields.exchange,
      'messaging.rabbitmq.destination.routing_key': message.fields.routingKey,
      ...(typeof message.properties.messageId === 'string'
        ? { 'messaging.message.id': message.properties.messageId }
        : {}),
      'virtbus.outcome': info?.outcome ?? 'unknown',
    };
    spans.push({
      name: `process ${message.fields.routingKey}`,
      kind: 'consumer',
      traceId,
      spanId,
      ...(trace.parent ? { parentSpanId: trace.parent.spanId, remoteParent: true } : {}),
      startUs: receivedUs,
      endUs: ackedUs,
      attributes,
      ...(info?.reason !== undefined ? { error: info.reason } : {}),
    });
    if (committedUs !== undefined) {
      spans.push({
        name: 'commit',
        kind: 'internal',
        traceId,
        parentSpanId: spanId,
        startUs: receivedUs,
        endUs: committedUs,
      });
      if (notifiedUs !== undefined)
        spans.push({
          name: 'notify',
          kind: 'internal',
          traceId,
          parentSpanId: spanId,
          startUs: committedUs,
          endUs: notifiedUs,
        });
    }
  }
  if (spans.length > 0) tracing.record(spans);
}

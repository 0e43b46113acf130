/**
 * What the bridge's publisher adds to each lifecycle publish beyond the outbox record — the content
 * type and headers of the output format (src/messages/formats.ts) and the W3C traceparent — and the
 * bridge's spans when tracing is on (src/tracing/otel.ts): for each event, one trace whose id is the
 * event_id, with
 *
 *   lifecycle <transition>   received (libvirt's callback) → confirmed by the broker
 *   ├─ dispatch              received → published (translation, Nova's delayed STOPPED, the
 *   │                        power-state sample, the outbox and any broker outage)
 *   └─ publish <exchange>    published → confirmed; the span the message's traceparent names
 *
 * Kept out of the publisher so that its job stays moving records and confirms; it calls these hooks.
 */
import type { Tracing } from '../tracing/otel';
import { bridgeSpanIds, bridgeTraceparent, TRACEPARENT } from '../tracing/trace-context';
import { lifecycleContentType, lifecycleFormatHeaders, type LifecycleFormat } from '../messages/formats';
import type { Logger } from '../util/log';
import { nowMicros } from '../util/time';
import type { OutboxRecord } from './outbox';

export interface PublishProperties {
  readonly contentType: string;
  readonly headers: Record<string, string>;
}

/** The publisher's hooks (all synchronous and cheap; called once per publish or confirm). */
export interface PublishHooks {
  /** The content type and headers of this record's publish. */
  properties(record: OutboxRecord): PublishProperties;
  /** The record was written to the channel (again, after a reconnect). */
  published(record: OutboxRecord): void;
  /** The broker confirmed it. */
  confirmed(record: OutboxRecord): void;
}

export interface PublishHooksOptions {
  readonly format: LifecycleFormat;
  readonly host: string;
  /** The process's span export, when OTEL_EXPORTER_OTLP_ENDPOINT is set. */
  readonly tracing: Tracing | undefined;
  readonly logger: Logger;
}

export function lifecyclePublishHooks(options: PublishHooksOptions): PublishHooks {
  const { format, host, tracing, logger } = options;
  const contentType = lifecycleContentType(format);
  /** When each unconfirmed record was last published (µs), while tracing. */
  const publishedAt = new Map<number, number>();
  return {
    properties(record) {
      let headers: Record<string, string> = {};
      try {
        headers = lifecycleFormatHeaders(format, record.body) ?? headers;
      } catch (error) {
        // Only a body this bridge did not write could fail here; it goes out without attributes.
        logger.warn(
          { err: error, id: record.messageId },
          'cannot derive the CloudEvents headers of a record',
        );
      }
      // The sampled flag says whether this bridge records the trace (W3C's meaning of it).
      const traceparent = bridgeTraceparent(record.messageId, tracing !== undefined);
      if (traceparent) headers[TRACEPARENT] = traceparent;
      return { contentType, headers };
    },
    published(record) {
      if (tracing) publishedAt.set(record.id, nowMicros());
    },
    confirmed(record) {
      if (!tracing) return;
      const confirmedUs = nowMicros();
      const sentUs = publishedAt.get(record.id) ?? confirmedUs;
      publishedAt.delete(record.id);
      const ids = bridgeSpanIds(record.messageId);
      if (!ids) return;
      const receivedUs = Math.min(record.occurredMicros, sentUs);
      const common = { 'virtbus.event_id': record.messageId, 'virtbus.host': host };
      tracing.record([
        {
          name: `lifecycle ${record.transition}`,
          kind: 'internal',
          traceId: ids.traceId,
          spanId: ids.eventSpanId,
          startUs: receivedUs,
          endUs: confirmedUs,
          attributes: { ...common, 'virtbus.transition': record.transition },
        },
        {
          name: 'dispatch',
          kind: 'internal',
          traceId: ids.traceId,
          parentSpanId: ids.eventSpanId,
          startUs: receivedUs,
          endUs: sentUs,
          attributes: common,
        },
        {
          name: `publish ${record.exchange}`,
          kind: 'producer',
          traceId: ids.traceId,
          spanId: ids.publishSpanId,
          parentSpanId: ids.eventSpanId,
          startUs: sentUs,
          endUs: confirmedUs,
          attributes: {
            ...common,
            'messaging.system': 'rabbitmq',
            'messaging.operation.type': 'send',
            'messaging.destination.name': record.exchange,
            'messaging.rabbitmq.destination.routing_key': record.routingKey,
            'messaging.message.id': record.messageId,
          },
        },
      ]);
    },
  };
}

/**
 * The OpenTelemetry side of tracing, loaded only when OTEL_EXPORTER_OTLP_ENDPOINT (or
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set: then the SDK and the OTLP/HTTP exporter are required
 * and every finished message is exported as spans; otherwise nothing here is loaded, and the per
 * message hooks find `activeTracing()` undefined and do nothing.
 *
 * Spans are recorded when a message's story is over (the bridge: the broker's confirm; the consumer:
 * the ack), each with the start and end times noted along the way. So no span object lives while a
 * message waits in the outbox or in a database outage, nothing is held for a message that never
 * finishes (its retry, after a restart or a redelivery, is recorded instead), and no context manager
 * (AsyncLocalStorage, which costs every promise of the process) is needed: parents are passed
 * explicitly. The span ids are chosen before the spans exist — the bridge derives them from the
 * event_id, the consumer draws them at intake — because they travel in traceparent headers published
 * earlier; the SDK is handed them through its IdGenerator, set for the one synchronous startSpan.
 */
import type * as Api from '@opentelemetry/api';
import type * as SdkTraceBase from '@opentelemetry/sdk-trace-base';
import type * as Resources from '@opentelemetry/resources';
import type * as Exporter from '@opentelemetry/exporter-trace-otlp-http';
import type { Logger } from '../util/log';

/** One finished span, as the hooks describe it; times in microseconds since the epoch. */
export interface SpanRecord {
  readonly name: string;
  readonly kind: 'internal' | 'producer' | 'consumer';
  readonly traceId: string;
  /** Chosen beforehand when a header names it; random when omitted. */
  readonly spanId?: string;
  /** The parent span; `remoteParent` when it is another process's (the bridge's, for the consumer). */
  readonly parentSpanId?: string;
  readonly remoteParent?: boolean;
  readonly startUs: number;
  readonly endUs: number;
  readonly attributes?: Readonly<Record<string, string | number | boolean>>;
  /** A failure (the span's status becomes ERROR with this message). */
  readonly error?: string;
  /** Named moments inside the span. */
  readonly events?: ReadonlyArray<{ readonly name: string; readonly atUs: number }>;
}

export interface Tracing {
  record(spans: readonly SpanRecord[]): void;
  /** Exports what is buffered and stops; later records are dropped. */
  shutdown(): Promise<void>;
}

let active: Tracing | undefined;

/** The process's tracing, or undefined when no OTLP endpoint is configured (the normal case). */
export function activeTracing(): Tracing | undefined {
  return active;
}

/** Whether the environment asks for span export (the standard OpenTelemetry variables). */
export function tracingRequested(env: NodeJS.ProcessEnv = process.env): boolean {
  return Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
}

/**
 * Starts span export for this process when the environment asks for it (idempotent). Synchronous, so
 * the first message's spans are not lost to a load still in progress. A broken installation (the
 * packages missing) is logged and tracing stays off: the service itself must not depend on it.
 */
export function startTracing(serviceName: string, host: string, logger: Logger): Tracing | undefined {
  if (active || !tracingRequested()) return active;
  try {
    active = openOtel(process.env.OTEL_SERVICE_NAME || serviceName, host);
    logger.info(
      {
        endpoint: process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? process.env.OTEL_EXPORTER_OTLP_ENDPOINT,
        service: process.env.OTEL_SERVICE_NAME || serviceName,
      },
      'exporting trace spans over OTLP/HTTP',
    );
  } catch (error) {
    logger.error({ err: error }, 'cannot load OpenTelemetry: spans are not exported');
  }
  return active;
}

/** Flushes and stops span export (a no-op when it never started). */
export async function stopTracing(): Promise<void> {
  const tracing = active;
  active = undefined;
  await tracing?.shutdown().catch(() => undefined);
}

/* eslint-disable @typescript-eslint/no-require-imports -- loaded only when asked for (module comment) */
function openOtel(serviceName: string, host: string): Tracing {
  const api = require('@opentelemetry/api') as typeof Api;
  const sdk = require('@opentelemetry/sdk-trace-base') as typeof SdkTraceBase;
  const resources = require('@opentelemetry/resources') as typeof Resources;
  const exporter = require('@opentelemetry/exporter-trace-otlp-http') as typeof Exporter;
  /* eslint-enable @typescript-eslint/no-require-imports */

  // The ids of the span being started (module comment); random ones for anything else.
  const random = new sdk.RandomIdGenerator();
  let preset: { traceId: string; spanId: string | undefined } | undefined;
  const idGenerator: SdkTraceBase.IdGenerator = {
    generateTraceId: () => preset?.traceId ?? random.generateTraceId(),
    generateSpanId: () => preset?.spanId ?? random.generateSpanId(),
  };
  const provider = new sdk.BasicTracerProvider({
    resource: resources
      .defaultResource()
      .merge(resources.resourceFromAttributes({ 'service.name': serviceName, 'host.name': host })),
    idGenerator,
    // Every lifecycle message is traced: they come at the pace of guests changing state.
    sampler: new sdk.AlwaysOnSampler(),
    spanProcessors: [new sdk.BatchSpanProcessor(new exporter.OTLPTraceExporter())],
  });
  const tracer = provider.getTracer('virtbus');
  const kinds = {
    internal: api.SpanKind.INTERNAL,
    producer: api.SpanKind.PRODUCER,
    consumer: api.SpanKind.CONSUMER,
  };
  const time = (us: number): Api.HrTime => {
    const seconds = Math.floor(us / 1e6);
    return [seconds, Math.round((us - seconds * 1e6) * 1000)];
  };
  let closed = false;
  return {
    record(spans) {
      if (closed) return;
      for (const spec of spans) {
        const parent = spec.parentSpanId
          ? api.trace.setSpanContext(api.ROOT_CONTEXT, {
              traceId: spec.traceId,
              spanId: spec.parentSpanId,
              traceFlags: api.TraceFlags.SAMPLED,
              isRemote: spec.remoteParent === true,
            })
          : api.ROOT_CONTEXT;
        preset = { traceId: spec.traceId, spanId: spec.spanId };
        let span: Api.Span;
        try {
          span = tracer.startSpan(
            spec.name,
            { kind: kinds[spec.kind], startTime: time(spec.startUs), attributes: spec.attributes },
            parent,
          );
        } finally {
          preset = undefined;
        }
        for (const event of spec.events ?? []) span.addEvent(event.name, time(event.atUs));
        if (spec.error !== undefined) span.setStatus({ code: api.SpanStatusCode.ERROR, message: spec.error });
        span.end(time(Math.max(spec.endUs, spec.startUs)));
      }
    },
    async shutdown() {
      closed = true;
      await provider.shutdown();
    },
  };
}

/**
 * The bridge's Prometheus metrics (listed in docs/operations.md, Metrics), on a registry of its own. Native queue
 * gauges are read from the addon at scrape time. No UUIDs or domain names as label values.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { collectProcessMetrics } from '../metrics/process-metrics';
import type { QueueStats } from '../native/contract';

export interface BridgeMetricSources {
  queueStats(): QueueStats;
  unconfirmed(): number;
  delayedStopsPending(): number;
  outboxDepth(): number;
  outboxOldestMicros(): number | undefined;
  outboxBytes?(): number;
  libvirtUp(): boolean;
  amqpUp(): boolean;
}

export function createBridgeMetrics(sources: BridgeMetricSources, registry = new Registry()) {
  collectProcessMetrics(registry);
  const gauge = (name: string, help: string, read: () => number): Gauge =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(read());
      },
    });
  // Queue depth first: the one number an operator looks at.
  gauge(
    'virtbus_native_queue_depth',
    "Events waiting in the native queue between libvirt's loop thread and JavaScript.",
    () => sources.queueStats().depth,
  );
  gauge(
    'virtbus_native_queue_capacity',
    'Capacity of the native event queue.',
    () => sources.queueStats().capacity,
  );
  gauge(
    'virtbus_native_queue_high_water',
    'Highest native queue depth since start.',
    () => sources.queueStats().highWater,
  );
  new Counter({
    name: 'virtbus_native_queue_dropped_total',
    help: 'Events dropped because the native queue was full (each overflow triggers a resync).',
    registers: [registry],
    collect() {
      // The addon owns the count; mirror it at scrape time (reset + inc keeps counter semantics).
      this.reset();
      this.inc(sources.queueStats().dropped);
    },
  });
  gauge('virtbus_unconfirmed_publishes', 'Publishes awaiting a broker confirm.', () => sources.unconfirmed());
  gauge('virtbus_delayed_stops_pending', 'STOPPED events held for the stop delay.', () =>
    sources.delayedStopsPending(),
  );
  gauge('virtbus_outbox_depth', 'Messages accepted but not yet confirmed by the broker.', () =>
    sources.outboxDepth(),
  );
  gauge(
    'virtbus_outbox_oldest_age_seconds',
    'Age of the oldest unconfirmed message in the outbox (0 when empty).',
    () => {
      const oldest = sources.outboxOldestMicros();
      return oldest === undefined ? 0 : Math.max(0, (Date.now() * 1000 - oldest) / 1e6);
    },
  );
  gauge(
    'virtbus_outbox_bytes',
    'Bytes the durable outbox journal holds on disk (0 for the memory outbox).',
    () => sources.outboxBytes?.() ?? 0,
  );
  gauge('virtbus_libvirt_up', '1 while the libvirt connection is open.', () => (sources.libvirtUp() ? 1 : 0));
  gauge('virtbus_amqp_up', '1 while the broker connection is open.', () => (sources.amqpUp() ? 1 : 0));
  return {
    registry,
    eventsReceived: new Counter({
      name: 'virtbus_events_received_total',
      help: 'Domain events taken from the native queue, by libvirt event (numbers for codes newer than virtbus).',
      labelNames: ['event'],
      registers: [registry],
    }),
    eventsPublished: new Counter({
      name: 'virtbus_events_published_total',
      help: 'Messages confirmed by the broker, by transition.',
      labelNames: ['transition'],
      registers: [registry],
    }),
    publishFailures: new Counter({
      name: 'virtbus_publish_failures_total',
      help: 'Publishes that must be retried or were returned: nack, channel_closed, unroutable.',
      labelNames: ['reason'],
      registers: [registry],
    }),
    delayedStops: new Counter({
      name: 'virtbus_delayed_stops_total',
      help: 'Delayed STOPPED events by outcome: published, cancelled (a later event came), dropped_at_shutdown, flushed_at_shutdown.',
      labelNames: ['outcome'],
      registers: [registry],
    }),
    eventToConfirm: new Histogram({
      name: 'virtbus_event_to_confirm_seconds',
      help: 'From the libvirt callback (occurred_at) to the broker confirm, including any stop delay.',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60],
      registers: [registry],
    }),
    libvirtReconnects: new Counter({
      name: 'virtbus_libvirt_reconnects_total',
      help: 'Successful libvirt reconnects after a lost connection.',
      registers: [registry],
    }),
    resyncs: new Counter({
      name: 'virtbus_resyncs_total',
      help: 'State snapshots published, by reason: start, reconnect, periodic, overflow.',
      labelNames: ['reason'],
      registers: [registry],
    }),
    commands: new Counter({
      name: 'virtbus_commands_total',
      help: 'Stop commands handled, by action and outcome.',
      labelNames: ['action', 'outcome'],
      registers: [registry],
    }),
  };
}

export type BridgeMetrics = ReturnType<typeof createBridgeMetrics>;

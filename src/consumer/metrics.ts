/**
 * The consumer's metrics, on its own prom-client Registry (docs/consumer.md#metrics-and-readiness,
 * docs/operations.md). Label values are small
 * fixed sets (outcomes, actions): never a UUID, host or domain name.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { collectProcessMetrics } from '../metrics/process-metrics';
import { createHostMetrics, type HostMetrics } from './host-metrics';

/** What happened to a lifecycle or command-result message. */
export type MessageOutcome =
  /** reached _sync_instance_power_state and was applied (row written, actions taken) */
  | 'synced'
  /** Nova's staleness guard: the live power_state sampled by the bridge differs from the transition's */
  | 'stale'
  /** older than (or the same as) the event the row already reflects: redelivery, reordering */
  | 'out_of_order'
  /** unknown instance (Nova's InstanceNotFound), acknowledged */
  | 'not_found'
  /** the row belongs to another host (migration, evacuation) */
  | 'skipped_host'
  /** a task is in progress on the row */
  | 'skipped_task'
  /** a transition Nova does nothing with (defined, undefined, shutdown, pmsuspended, crashed, rebooted) */
  | 'ignored'
  /** a sync_end snapshot marker, applied */
  | 'sync_end'
  /** a stop-command result, applied */
  | 'command_result'
  /** one host's word about a live migration recorded; the row waits for the other host's */
  | 'migrating'
  /** both hosts agreed on a live migration: the row moved to the destination */
  | 'migrated'
  /** a stop-command result for a command no longer pending (timed out, superseded) */
  | 'late_result'
  /** published to the dead-letter exchange with its reason */
  | 'dead_lettered';

/** What the sync did or decided (one message may count several). */
export type SyncAction =
  | 'power_state_updated'
  | 'stop'
  | 'force_stop'
  | 'would_stop'
  | 'would_force_stop'
  | 'stop_not_allowed'
  | 'warn_paused'
  | 'warn_not_found'
  | 'warn_not_deleted'
  | 'vanished'
  | 'stop_completed'
  | 'stop_failed'
  | 'stop_not_found'
  | 'migration_followed'
  | 'migration_stop_withheld'
  | 'maintenance_stop_withheld'
  | 'stop_timeout'
  | 'command_publish_failed';

export interface ConsumerMetrics {
  readonly registry: Registry;
  readonly messages: Counter<'outcome'>;
  readonly syncActions: Counter<'action'>;
  readonly eventToSync: Histogram<string>;
  readonly queueDepth: Gauge<string>;
  readonly deadLetterDepth: Gauge<string>;
  readonly dbUp: Gauge<string>;
  readonly amqpUp: Gauge<string>;
  readonly paused: Gauge<string>;
  readonly inFlight: Gauge<string>;
  readonly dbErrors: Counter<string>;
  readonly casRetries: Counter<string>;
  readonly notifications: Counter<'outcome'>;
  readonly commandsPublished: Counter<'action'>;
  readonly commandsReturned: Counter<string>;
  readonly senderRejections: Counter<'reason'>;
  readonly oversized: Counter<string>;
  /** The hosts view's per-host gauges (host-metrics.ts). */
  readonly hosts: HostMetrics;
}

export function createConsumerMetrics(registry = new Registry()): ConsumerMetrics {
  // Unprefixed, like the bridge's: Prometheus tells the processes apart by their job label.
  collectProcessMetrics(registry);
  const registers = [registry];
  return {
    registry,
    messages: new Counter({
      name: 'virtbus_consumer_messages_total',
      help: 'Messages taken from the consumer queues, by outcome.',
      labelNames: ['outcome'],
      registers,
    }),
    syncActions: new Counter({
      name: 'virtbus_sync_actions_total',
      help: "What Nova's power-state sync did (or, in observe mode, would have done), by action.",
      labelNames: ['action'],
      registers,
    }),
    eventToSync: new Histogram({
      name: 'virtbus_event_to_sync_seconds',
      help: 'From occurred_at (libvirt callback on the bridge) to the database commit of its sync.',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 20, 30, 60, 120],
      registers,
    }),
    queueDepth: new Gauge({
      name: 'virtbus_consumer_queue_depth',
      help: 'Messages ready in the consumer queue, as the broker reports it.',
      registers,
    }),
    deadLetterDepth: new Gauge({
      name: 'virtbus_consumer_dead_letter_depth',
      help: 'Messages waiting in the dead-letter queue, as the broker reports it.',
      registers,
    }),
    dbUp: new Gauge({
      name: 'virtbus_db_up',
      help: '1 when the instance database answers, 0 while it is unavailable (consumption paused).',
      registers,
    }),
    amqpUp: new Gauge({
      name: 'virtbus_amqp_up',
      help: '1 while connected to the broker and consuming.',
      registers,
    }),
    paused: new Gauge({
      name: 'virtbus_consumer_paused',
      help: '1 while consumption is paused because the database is unavailable.',
      registers,
    }),
    inFlight: new Gauge({
      name: 'virtbus_consumer_in_flight',
      help: 'Messages delivered and not yet acknowledged.',
      registers,
    }),
    dbErrors: new Counter({
      name: 'virtbus_consumer_db_errors_total',
      help: 'Database operations that failed because the database was unavailable.',
      registers,
    }),
    casRetries: new Counter({
      name: 'virtbus_consumer_cas_retries_total',
      help: 'Compare-and-swap updates that lost a race and were decided again on a fresh row.',
      registers,
    }),
    notifications: new Counter({
      name: 'virtbus_notifications_total',
      help: 'instance.update notifications, by outcome (published, failed).',
      labelNames: ['outcome'],
      registers,
    }),
    commandsPublished: new Counter({
      name: 'virtbus_stop_commands_total',
      help: 'Stop commands published to the bridges, by action (stop, force_stop).',
      labelNames: ['action'],
      registers,
    }),
    commandsReturned: new Counter({
      name: 'virtbus_stop_commands_returned_total',
      help: "Stop commands the broker returned as unroutable (no queue for that host's bridge): each is a publish failure.",
      registers,
    }),
    senderRejections: new Counter({
      name: 'virtbus_consumer_sender_rejections_total',
      help: "Messages dead-lettered because their sender was not verified, by reason (routing_key_mismatch, no_user_id, user_mismatch, forged_replay: a dead-letter replay not published by the consumer's own user).",
      labelNames: ['reason'],
      registers,
    }),
    oversized: new Counter({
      name: 'virtbus_consumer_oversized_messages_total',
      help: 'Messages dead-lettered unread because their body exceeded consumer.maxMessageBytes.',
      registers,
    }),
    hosts: createHostMetrics(registers),
  };
}

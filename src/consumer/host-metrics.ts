/**
 * The per-host gauges of the hosts view. They break the rule that label values are small fixed sets
 * on purpose: an alert per host needs the host, and a fleet has hundreds of hosts, not millions.
 * Every consumer exports the same values (read from the shared hosts table), so dashboards and the
 * VirtbusHostSilent alert aggregate them with max by (host).
 */
import { Gauge, type Registry } from 'prom-client';

export interface HostMetrics {
  readonly lastSnapshot: Gauge<'host'>;
  readonly lastEvent: Gauge<'host'>;
  readonly snapshotInterval: Gauge<'host'>;
  readonly instances: Gauge<'host' | 'power_state'>;
  readonly maintenance: Gauge<'host'>;
}

export function createHostMetrics(registers: Registry[]): HostMetrics {
  return {
    lastSnapshot: new Gauge({
      name: 'virtbus_host_last_snapshot_timestamp_seconds',
      help: 'When the newest complete snapshot (sync_end) of each host that the consumers applied was taken (the bridge clock, Unix seconds).',
      labelNames: ['host'],
      registers,
    }),
    lastEvent: new Gauge({
      name: 'virtbus_host_last_event_timestamp_seconds',
      help: 'occurred_at of the newest lifecycle message of each host the consumers received (Unix seconds).',
      labelNames: ['host'],
      registers,
    }),
    snapshotInterval: new Gauge({
      name: 'virtbus_host_snapshot_interval_seconds',
      help: "Each host's periodic snapshot interval as its bridge announces it (0: periodic snapshots off).",
      labelNames: ['host'],
      registers,
    }),
    instances: new Gauge({
      name: 'virtbus_host_instances',
      help: 'Non-deleted instance rows of each host, by the power_state the database holds.',
      labelNames: ['host', 'power_state'],
      registers,
    }),
    maintenance: new Gauge({
      name: 'virtbus_host_maintenance',
      help: '1 while a host is in maintenance (virtbus hosts disable: no stop commands for its instances).',
      labelNames: ['host'],
      registers,
    }),
  };
}

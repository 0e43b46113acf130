/**
 * Maintenance mode per host: Nova's `[workarounds] handle_virt_lifecycle_events = False`, scoped to
 * one host and with an expiry so it cannot be forgotten. While a host is in maintenance the
 * consumer still records the power states its bridge reports, but sends no stop or force_stop for
 * its instances and so changes no vm_state; the row records what was withheld (last_action
 * `maintenance_stop` / `maintenance_force_stop`), and the first snapshot after maintenance ends
 * applies Nova's table as usual (the row's vm_state × power_state is decided again).
 *
 * The switch lives in the hosts table (`virtbus hosts disable|enable`); each consumer keeps a copy
 * in memory, re-read every consumer.hostsIntervalMs, because the decision is taken synchronously
 * inside a store round.
 */
import type { HostRecord, Maintenance } from '../store/hosts-types';

/** Whether a maintenance switch is on at `nowUs` (an expired one is off). */
export function maintenanceActive(maintenance: Maintenance | null | undefined, nowUs: number): boolean {
  return !!maintenance && (maintenance.untilUs === null || nowUs < maintenance.untilUs);
}

/** What the handler asks before it sends a stop: the host's maintenance switch if it is on. */
export type MaintenanceCheck = (host: string | null, nowUs: number) => Maintenance | undefined;

/** The consumer's in-memory copy of the maintenance switches. */
export class MaintenanceView {
  #byHost = new Map<string, Maintenance>();

  /** Replaces the copy with what the hosts table says now. */
  update(records: readonly HostRecord[]): void {
    const next = new Map<string, Maintenance>();
    for (const record of records) if (record.maintenance) next.set(record.host, record.maintenance);
    this.#byHost = next;
  }

  /** The switch of `host` if it is on at `nowUs`. */
  readonly check: MaintenanceCheck = (host, nowUs) => {
    if (host === null) return undefined;
    const maintenance = this.#byHost.get(host);
    return maintenance && maintenanceActive(maintenance, nowUs) ? maintenance : undefined;
  };
}

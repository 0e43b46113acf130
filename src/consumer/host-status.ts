/**
 * A host's state as the hosts view judges it, shared by `virtbus hosts list` and the tests: whether
 * its snapshots are overdue — more than two periodic intervals since the last complete one, the
 * bound of the VirtbusHostSilent alert — and whether that matters (its rows say guests run).
 */
import { POWER_STATE_NAMES } from '../libvirt/constants';
import { isPowerStateCode } from '../store/types';
import type { HostRecord, PowerCount } from '../store/hosts-types';
import { maintenanceActive } from './maintenance';

/**
 * ok: snapshots on time; silent: overdue while its rows say guests are running (what the alert
 * reports); overdue: overdue but nothing running; unknown: no complete snapshot yet, or its bridge
 * did not say its interval (an older bridge) or takes no periodic snapshots.
 */
export type HostState = 'ok' | 'silent' | 'overdue' | 'unknown';

export interface HostView {
  readonly host: string;
  readonly state: HostState;
  readonly lastEventUs: number | null;
  readonly snapshotUs: number | null;
  readonly snapshotAgeSeconds: number | null;
  readonly intervalSeconds: number | null;
  readonly bootId: string | null;
  /** Rows by power-state name (running, shutdown, …). */
  readonly rows: Readonly<Record<string, number>>;
  readonly maintenance: {
    readonly active: boolean;
    readonly reason: string;
    readonly sinceUs: number;
    readonly untilUs: number | null;
    readonly by: string | null;
  } | null;
}

/** A power_state code's notification name (running, shutdown, pending, …) for a label or a column. */
export function powerLabel(code: number): string {
  return isPowerStateCode(code) ? POWER_STATE_NAMES[code] : `code_${code}`;
}

/** The overdue bound: two periodic intervals (seconds), or null when there is none to judge by. */
export function overdueAfterSeconds(intervalSeconds: number | null | undefined): number | null {
  return intervalSeconds ? 2 * intervalSeconds : null;
}

export function hostState(record: HostRecord | undefined, running: number, nowUs: number): HostState {
  const snapshot = record?.snapshot;
  const bound = overdueAfterSeconds(snapshot?.intervalSeconds);
  if (!snapshot || bound === null) return 'unknown';
  if ((nowUs - snapshot.takenUs) / 1e6 <= bound) return 'ok';
  return running > 0 ? 'silent' : 'overdue';
}

/** Every host with a hosts-table row or instance rows, ordered by name. */
export function hostViews(
  records: readonly HostRecord[],
  counts: readonly PowerCount[],
  nowUs: number,
): HostView[] {
  const byHost = new Map(records.map((record) => [record.host, record]));
  const rows = new Map<string, Record<string, number>>();
  for (const count of counts) {
    const entry = rows.get(count.host) ?? {};
    const name = powerLabel(count.powerState);
    entry[name] = (entry[name] ?? 0) + count.count;
    rows.set(count.host, entry);
  }
  const hosts = [...new Set([...byHost.keys(), ...rows.keys()])].sort();
  return hosts.map((host): HostView => {
    const record = byHost.get(host);
    const hostRows = rows.get(host) ?? {};
    const running = hostRows.running ?? 0;
    const snapshot = record?.snapshot ?? null;
    const maintenance = record?.maintenance ?? null;
    return {
      host,
      state: hostState(record, running, nowUs),
      lastEventUs: record?.lastEventUs ?? null,
      snapshotUs: snapshot?.takenUs ?? null,
      snapshotAgeSeconds: snapshot ? Math.max(0, Math.round((nowUs - snapshot.takenUs) / 1e6)) : null,
      intervalSeconds: snapshot?.intervalSeconds ?? null,
      bootId: snapshot?.bootId ?? record?.bootId ?? null,
      rows: hostRows,
      maintenance: maintenance && { active: maintenanceActive(maintenance, nowUs), ...maintenance },
    };
  });
}

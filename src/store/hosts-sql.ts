/**
 * The hosts table's statements and row mapping, shared by both dialects: the merge statements take
 * each field forward only (so consumers flushing in any order converge on the newest values), and
 * differ between SQLite and PostgreSQL only in the name of the two-argument maximum.
 */
import type { HostRecord, Maintenance, SnapshotObservation } from './hosts-types';

type Dialect = 'sqlite' | 'postgres';

/** Placeholders $1…$n for PostgreSQL, ? for SQLite. */
function params(dialect: Dialect, count: number): string[] {
  return Array.from({ length: count }, (_, index) => (dialect === 'postgres' ? `$${index + 1}` : '?'));
}

/**
 * host, last_event_at_us, last_seen_at_us, boot_id: every field moves forward only. `rows` (PostgreSQL)
 * is a set-returning expression of such tuples, one per host, instead of one VALUES tuple.
 */
export function recordEventSql(dialect: Dialect, rows?: string): string {
  const max = dialect === 'postgres' ? 'GREATEST' : 'MAX';
  const source = rows
    ? `SELECT * FROM ${rows} AS v(host, e, s, b) ORDER BY host`
    : `VALUES (${params(dialect, 4).join(', ')})`;
  return `INSERT INTO hosts (host, last_event_at_us, last_seen_at_us, boot_id) ${source}
    ON CONFLICT (host) DO UPDATE SET
      boot_id = CASE WHEN hosts.last_event_at_us IS NULL OR excluded.last_event_at_us >= hosts.last_event_at_us
        THEN excluded.boot_id ELSE hosts.boot_id END,
      last_event_at_us = ${max}(excluded.last_event_at_us, COALESCE(hosts.last_event_at_us, excluded.last_event_at_us)),
      last_seen_at_us = ${max}(excluded.last_seen_at_us, COALESCE(hosts.last_seen_at_us, excluded.last_seen_at_us))`;
}

/** The snapshot columns, replaced only by a snapshot taken later than the stored one. */
export function recordSnapshotSql(dialect: Dialect, rows?: string): string {
  const source = rows
    ? `SELECT * FROM ${rows} AS v(host, i, t, s, b, n) ORDER BY host`
    : `VALUES (${params(dialect, 6).join(', ')})`;
  return `INSERT INTO hosts (host, snapshot_id, snapshot_at_us, snapshot_seen_at_us, snapshot_boot_id, snapshot_interval_s)
    ${source}
    ON CONFLICT (host) DO UPDATE SET snapshot_id = excluded.snapshot_id, snapshot_at_us = excluded.snapshot_at_us,
      snapshot_seen_at_us = excluded.snapshot_seen_at_us, snapshot_boot_id = excluded.snapshot_boot_id,
      snapshot_interval_s = excluded.snapshot_interval_s
    WHERE hosts.snapshot_at_us IS NULL OR excluded.snapshot_at_us > hosts.snapshot_at_us`;
}

/** Switches maintenance on: host, reason, since, until, by (the row is created when missing). */
export function enableMaintenanceSql(dialect: Dialect): string {
  const p = params(dialect, 5);
  return `INSERT INTO hosts (host, maintenance_reason, maintenance_since_us, maintenance_until_us, maintenance_by)
    VALUES (${p.join(', ')})
    ON CONFLICT (host) DO UPDATE SET maintenance_reason = excluded.maintenance_reason,
      maintenance_since_us = excluded.maintenance_since_us, maintenance_until_us = excluded.maintenance_until_us,
      maintenance_by = excluded.maintenance_by`;
}

export function disableMaintenanceSql(dialect: Dialect): string {
  const [host] = params(dialect, 1);
  return `UPDATE hosts SET maintenance_reason = NULL, maintenance_since_us = NULL, maintenance_until_us = NULL,
    maintenance_by = NULL WHERE host = ${host}`;
}

export const HOST_EXISTS_SQL = {
  sqlite: 'SELECT 1 AS one FROM hosts WHERE host = ?',
  postgres: 'SELECT 1 AS one FROM hosts WHERE host = $1',
} as const;

export const LIST_HOSTS_SQL = 'SELECT * FROM hosts ORDER BY host';

export const POWER_COUNTS_SQL = `SELECT host, power_state, COUNT(*) AS count FROM instances
  WHERE host IS NOT NULL AND vm_state <> 'deleted' GROUP BY host, power_state ORDER BY host, power_state`;

type Raw = Record<string, string | number | bigint | null>;

function num(value: Raw[string] | undefined): number | null {
  return value === null || value === undefined ? null : Number(value);
}

function str(value: Raw[string] | undefined): string | null {
  return value === null || value === undefined ? null : String(value);
}

/** A hosts-table row (PostgreSQL returns BIGINTs as strings). */
export function hostFromDb(raw: Raw): HostRecord {
  const takenUs = num(raw.snapshot_at_us);
  const snapshot: SnapshotObservation | null =
    takenUs === null
      ? null
      : {
          id: str(raw.snapshot_id) ?? '',
          takenUs,
          seenUs: num(raw.snapshot_seen_at_us) ?? takenUs,
          bootId: str(raw.snapshot_boot_id) ?? '',
          intervalSeconds: num(raw.snapshot_interval_s),
        };
  const reason = str(raw.maintenance_reason);
  const maintenance: Maintenance | null =
    reason === null
      ? null
      : {
          reason,
          sinceUs: num(raw.maintenance_since_us) ?? 0,
          untilUs: num(raw.maintenance_until_us),
          by: str(raw.maintenance_by),
        };
  return {
    host: str(raw.host) ?? '',
    lastEventUs: num(raw.last_event_at_us),
    lastSeenUs: num(raw.last_seen_at_us),
    bootId: str(raw.boot_id),
    snapshot,
    maintenance,
  };
}

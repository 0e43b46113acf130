/**
 * The hosts view on PostgreSQL, through the instance store's pool (never a checked-out client: a
 * server that goes away then would make the client emit an error nobody listens to). The merge
 * statements only move fields forward, so consumers flushing concurrently converge.
 */
import type { Pool } from 'pg';
import {
  HOST_EXISTS_SQL,
  LIST_HOSTS_SQL,
  POWER_COUNTS_SQL,
  disableMaintenanceSql,
  enableMaintenanceSql,
  hostFromDb,
  recordEventSql,
  recordSnapshotSql,
} from './hosts-sql';
import type { HostObservation, HostRecord, HostStore, Maintenance, PowerCount } from './hosts-types';

type Raw = Record<string, string | number | null>;

const RECORD_EVENTS = recordEventSql(
  'postgres',
  'unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[])',
);
const RECORD_SNAPSHOTS = recordSnapshotSql(
  'postgres',
  'unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::bigint[])',
);

export class PostgresHostStore implements HostStore {
  readonly #pool: Pool;
  /** The instance store's error classification (an unavailable database is a StoreUnavailableError). */
  readonly #classify: (error: unknown) => unknown;

  constructor(pool: Pool, classify: (error: unknown) => unknown) {
    this.#pool = pool;
    this.#classify = classify;
  }

  /**
   * Two statements through the pool, each for every host at once (arrays unnested, hosts in a fixed
   * order so concurrent flushes lock rows alike). No client is checked out: a server going away
   * mid-flush fails the query, not the process. The two need not commit together — every field only
   * moves forward on its own.
   */
  async record(observations: readonly HostObservation[]): Promise<void> {
    if (observations.length === 0) return;
    const sorted = [...observations].sort((a, b) => (a.host < b.host ? -1 : a.host > b.host ? 1 : 0));
    await this.#query(RECORD_EVENTS, [
      sorted.map((seen) => seen.host),
      sorted.map((seen) => seen.lastEventUs),
      sorted.map((seen) => seen.lastSeenUs),
      sorted.map((seen) => seen.bootId),
    ]);
    const snapshots = sorted.filter((seen) => seen.snapshot);
    if (snapshots.length === 0) return;
    const snap = (seen: HostObservation) => seen.snapshot as NonNullable<HostObservation['snapshot']>;
    await this.#query(RECORD_SNAPSHOTS, [
      snapshots.map((seen) => seen.host),
      snapshots.map((seen) => snap(seen).id),
      snapshots.map((seen) => snap(seen).takenUs),
      snapshots.map((seen) => snap(seen).seenUs),
      snapshots.map((seen) => snap(seen).bootId),
      snapshots.map((seen) => snap(seen).intervalSeconds),
    ]);
  }

  async list(): Promise<HostRecord[]> {
    return (await this.#query(LIST_HOSTS_SQL, [])).map(hostFromDb);
  }

  async powerCounts(): Promise<PowerCount[]> {
    return (await this.#query(POWER_COUNTS_SQL, [])).map((raw) => ({
      host: String(raw.host),
      powerState: Number(raw.power_state),
      count: Number(raw.count),
    }));
  }

  async setMaintenance(host: string, maintenance: Maintenance | null): Promise<boolean> {
    const existed = (await this.#query(HOST_EXISTS_SQL.postgres, [host])).length > 0;
    if (maintenance)
      await this.#query(enableMaintenanceSql('postgres'), [
        host,
        maintenance.reason,
        maintenance.sinceUs,
        maintenance.untilUs,
        maintenance.by,
      ]);
    else await this.#query(disableMaintenanceSql('postgres'), [host]);
    return existed;
  }

  async #query(text: string, values: unknown[]): Promise<Raw[]> {
    try {
      return (await this.#pool.query<Raw>(text, values)).rows;
    } catch (error) {
      throw this.#classify(error);
    }
  }
}

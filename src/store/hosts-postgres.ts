/**
 * The hosts view on PostgreSQL, through the instance store's pool. A flush is one transaction; the
 * merge statements only move fields forward, so consumers flushing concurrently converge.
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

const RECORD_EVENT = recordEventSql('postgres');
const RECORD_SNAPSHOT = recordSnapshotSql('postgres');

export class PostgresHostStore implements HostStore {
  readonly #pool: Pool;
  /** The instance store's error classification (an unavailable database is a StoreUnavailableError). */
  readonly #classify: (error: unknown) => unknown;

  constructor(pool: Pool, classify: (error: unknown) => unknown) {
    this.#pool = pool;
    this.#classify = classify;
  }

  async record(observations: readonly HostObservation[]): Promise<void> {
    if (observations.length === 0) return;
    // Hosts in a fixed order: two consumers flushing overlapping hosts lock them in the same order.
    const sorted = [...observations].sort((a, b) => (a.host < b.host ? -1 : a.host > b.host ? 1 : 0));
    let client;
    try {
      client = await this.#pool.connect();
    } catch (error) {
      throw this.#classify(error);
    }
    try {
      await client.query('BEGIN');
      for (const seen of sorted) {
        await client.query({
          name: 'virtbus_host_event',
          text: RECORD_EVENT,
          values: [seen.host, seen.lastEventUs, seen.lastSeenUs, seen.bootId],
        });
        const snap = seen.snapshot;
        if (snap)
          await client.query({
            name: 'virtbus_host_snapshot',
            text: RECORD_SNAPSHOT,
            values: [seen.host, snap.id, snap.takenUs, snap.seenUs, snap.bootId, snap.intervalSeconds],
          });
      }
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw this.#classify(error);
    } finally {
      client.release();
    }
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

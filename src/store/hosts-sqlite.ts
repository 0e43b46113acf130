/**
 * The hosts view on SQLite, on the instance store's own connection (better-sqlite3 is synchronous:
 * a statement issued while the store's group-commit batch is open simply joins it and commits with
 * it). A flush of several hosts is one transaction of its own otherwise.
 */
import type Database from 'better-sqlite3';
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

export class SqliteHostStore implements HostStore {
  readonly #db: Database.Database;
  /** Runs a statement the way the instance store runs its reads and writes (errors classified). */
  readonly #run: <T>(work: () => T) => Promise<T>;

  constructor(db: Database.Database, run: <T>(work: () => T) => Promise<T>) {
    this.#db = db;
    this.#run = run;
  }

  record(observations: readonly HostObservation[]): Promise<void> {
    return this.#run(() => {
      const event = this.#db.prepare(recordEventSql('sqlite'));
      const snapshot = this.#db.prepare(recordSnapshotSql('sqlite'));
      const write = (): void => {
        for (const seen of observations) {
          event.run(seen.host, seen.lastEventUs, seen.lastSeenUs, seen.bootId);
          const snap = seen.snapshot;
          if (snap)
            snapshot.run(seen.host, snap.id, snap.takenUs, snap.seenUs, snap.bootId, snap.intervalSeconds);
        }
      };
      // Inside an open transaction (the store's batch) the statements join it.
      if (this.#db.inTransaction) write();
      else this.#db.transaction(write).immediate();
    });
  }

  list(): Promise<HostRecord[]> {
    return this.#run(() => (this.#db.prepare(LIST_HOSTS_SQL).all() as Raw[]).map(hostFromDb));
  }

  powerCounts(): Promise<PowerCount[]> {
    return this.#run(() =>
      (this.#db.prepare(POWER_COUNTS_SQL).all() as Raw[]).map((raw) => ({
        host: String(raw.host),
        powerState: Number(raw.power_state),
        count: Number(raw.count),
      })),
    );
  }

  setMaintenance(host: string, maintenance: Maintenance | null): Promise<boolean> {
    return this.#run(() => {
      const existed = this.#db.prepare(HOST_EXISTS_SQL.sqlite).get(host) !== undefined;
      if (maintenance)
        this.#db
          .prepare(enableMaintenanceSql('sqlite'))
          .run(host, maintenance.reason, maintenance.sinceUs, maintenance.untilUs, maintenance.by);
      else this.#db.prepare(disableMaintenanceSql('sqlite')).run(host);
      return existed;
    });
  }
}

/**
 * The hosts view: what the consumers know of each compute host, kept in the database beside the
 * instance table because several consumers share one queue and each sees only part of a host's
 * messages. Every consumer merges what it saw into the same row (newest wins, field by field), so
 * the row is the union of their views. Rows by power state are not stored: they are counted from
 * the instance table when asked. Maintenance mode (an operator's switch) lives here too, so every
 * consumer reads the same one.
 */

/** What one consumer saw of one host since its last flush (times in epoch microseconds). */
export interface HostObservation {
  readonly host: string;
  /** Newest occurred_at of any lifecycle message from the host (the bridge's clock). */
  readonly lastEventUs: number;
  /** When this consumer last received one (its own clock). */
  readonly lastSeenUs: number;
  /** The boot_id of the newest of those messages. */
  readonly bootId: string;
  /** The newest complete snapshot (a sync_end applied), if one arrived. */
  readonly snapshot?: SnapshotObservation;
}

export interface SnapshotObservation {
  readonly id: string;
  /** snapshot.taken_at (the bridge's clock). */
  readonly takenUs: number;
  /** When the consumer applied its sync_end (its own clock). */
  readonly seenUs: number;
  readonly bootId: string;
  /** The bridge's resyncIntervalSeconds, when its messages carry it (0: periodic snapshots off). */
  readonly intervalSeconds: number | null;
}

/** An operator's maintenance switch for one host (`virtbus hosts disable`). */
export interface Maintenance {
  readonly reason: string;
  /** When it was switched on (epoch µs). */
  readonly sinceUs: number;
  /** When it ends by itself (epoch µs), or null: until `virtbus hosts enable`. */
  readonly untilUs: number | null;
  /** Who switched it on (the operating-system user of the CLI). */
  readonly by: string | null;
}

/** One row of the hosts table. */
export interface HostRecord {
  readonly host: string;
  readonly lastEventUs: number | null;
  readonly lastSeenUs: number | null;
  readonly bootId: string | null;
  readonly snapshot: SnapshotObservation | null;
  readonly maintenance: Maintenance | null;
}

/** How many instance rows of a host are in one power state (deleted rows excluded). */
export interface PowerCount {
  readonly host: string;
  readonly powerState: number;
  readonly count: number;
}

export interface HostStore {
  /** Merges observations into the hosts table: each field only moves forward (newest wins). */
  record(observations: readonly HostObservation[]): Promise<void>;
  /** Every host row, ordered by host. */
  list(): Promise<HostRecord[]>;
  /** Non-deleted instance rows counted by host and power_state (rows without a host left out). */
  powerCounts(): Promise<PowerCount[]>;
  /** Switches maintenance on (a Maintenance) or off (null). Resolves whether the host had a row. */
  setMaintenance(host: string, maintenance: Maintenance | null): Promise<boolean>;
}

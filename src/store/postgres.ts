/**
 * The shared store: PostgreSQL through a pg pool. Writes are compare-and-swap updates on `version`
 * (… WHERE uuid = $ AND version = $), so several consumers on one database never move a row on a
 * stale read. Migrations run under an advisory lock, so consumers starting together migrate once.
 *
 * The consumer's path is `apply`: a batch of messages costs two round trips, one
 * SELECT … WHERE uuid = ANY($1) for its rows and one UPDATE … FROM unnest(…) … RETURNING uuid for its
 * writes (one compare-and-swap per row; the statement commits as a whole).
 *
 * The single-row get/update (operator repairs) are coalesced the same way per turn of the event loop:
 * every caller still sees its own row and its own CAS result.
 */
import { Pool, type PoolClient } from 'pg';
import type { Logger } from '../util/log';
import { isoMicros, nowMicros } from '../util/time';
import { MUTABLE_COLUMNS, POSTGRES_MIGRATIONS, mutableValues, rowFromDb, rowFromInput } from './schema';
import {
  STATE_COLUMNS,
  StoreUnavailableError,
  type Decide,
  type InstanceInput,
  type InstanceRow,
  type InstanceStore,
} from './types';
import { PostgresHostStore } from './hosts-postgres';
import type { HostStore } from './hosts-types';

export interface PostgresStoreOptions {
  readonly url: string;
  readonly poolSize: number;
  /** How long to wait for a pooled connection. */
  readonly busyTimeoutMs: number;
  readonly logger: Logger;
  readonly applicationName?: string;
}

/** An arbitrary constant: the advisory lock migrations hold. */
const MIGRATION_LOCK = 775_302_114;

const UNAVAILABLE_CODES = /^(08|53|57P0|58|40001$|40P01$|E[A-Z]+$)/;
const UNAVAILABLE_MESSAGES =
  /Connection terminated|timeout exceeded when trying to connect|connection error|Connection ended|Query read timeout|ECONNREFUSED|ECONNRESET|the database system is/i;

function classify(error: unknown): unknown {
  if (error instanceof StoreUnavailableError) return error;
  const code = (error as { code?: unknown }).code;
  const message = error instanceof Error ? error.message : String(error);
  if ((typeof code === 'string' && UNAVAILABLE_CODES.test(code)) || UNAVAILABLE_MESSAGES.test(message)) {
    return new StoreUnavailableError(`PostgreSQL: ${message}`, { cause: error });
  }
  return error;
}

type Raw = Record<string, string | number | null | Record<string, unknown>>;

/** PostgreSQL array types of the mutable columns, for the batched unnest() update. */
const ARRAY_TYPES: Record<(typeof MUTABLE_COLUMNS)[number], string> = {
  host: 'text[]',
  vm_state: 'text[]',
  task_state: 'text[]',
  power_state: 'int[]',
  launched_at: 'text[]',
  updated_at: 'text[]',
  event_at_us: 'bigint[]',
  event_boot_id: 'text[]',
  event_seq: 'bigint[]',
  pending_command_id: 'text[]',
  pending_command_host: 'text[]',
  migration: 'text[]',
  pending_action: 'text[]',
  command_deadline_ms: 'bigint[]',
  last_action: 'text[]',
  last_action_at: 'text[]',
  last_error: 'text[]',
  attrs: 'text[]',
};
const BATCH_UPDATE_SQL = `UPDATE instances AS i SET ${MUTABLE_COLUMNS.map(
  (column) => `${column} = v.${column}${column === 'attrs' ? '::jsonb' : ''}`,
).join(', ')}, version = i.version + 1
  FROM unnest($1::text[], $2::bigint[], ${MUTABLE_COLUMNS.map((column, index) => `$${index + 3}::${ARRAY_TYPES[column]}`).join(', ')})
    AS v(uuid, version, ${MUTABLE_COLUMNS.join(', ')})
  WHERE i.uuid = v.uuid AND i.version = v.version
  RETURNING i.uuid`;
/**
 * apply's write: the state columns of many rows, each a compare-and-swap on its expected version.
 * The rows are locked first with SKIP LOCKED: a row another consumer's statement holds is left out
 * (reported lost, so it is re-read and decided again) instead of waited for — two consumers
 * updating overlapping sets of rows in different orders would otherwise deadlock.
 */
const APPLY_SQL = `WITH v AS MATERIALIZED (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], ${STATE_COLUMNS.map((column, index) => `$${index + 4}::${ARRAY_TYPES[column]}`).join(', ')})
      AS v(uuid, expected, next_version, ${STATE_COLUMNS.join(', ')})
  ), locked AS MATERIALIZED (
    SELECT i.uuid FROM instances AS i JOIN v ON i.uuid = v.uuid AND i.version = v.expected
    FOR UPDATE OF i SKIP LOCKED
  )
  UPDATE instances AS i SET ${STATE_COLUMNS.map((column) => `${column} = v.${column}`).join(', ')},
    version = v.next_version
  FROM v JOIN locked ON locked.uuid = v.uuid
  WHERE i.uuid = v.uuid AND i.version = v.expected
  RETURNING i.uuid`;
const GET_MANY_SQL = 'SELECT * FROM instances WHERE uuid = ANY($1::text[])';
/** Rows per batched statement. */
const MAX_BATCH = 500;

interface Pending<T> {
  resolve(value: T): void;
  reject(error: unknown): void;
}

type PendingUpdate = { readonly row: InstanceRow } & Pending<boolean>;

const INSERT_COLUMNS = ['uuid', ...MUTABLE_COLUMNS, 'created_at', 'version'];
const UPSERT_SQL = `INSERT INTO instances (${INSERT_COLUMNS.join(', ')})
  VALUES (${INSERT_COLUMNS.map((column, index) => `$${index + 1}${column === 'attrs' ? '::jsonb' : ''}`).join(', ')})
  ON CONFLICT (uuid) DO UPDATE SET host = excluded.host, vm_state = excluded.vm_state,
    task_state = excluded.task_state, power_state = excluded.power_state,
    launched_at = excluded.launched_at, attrs = excluded.attrs, updated_at = excluded.updated_at,
    created_at = CASE WHEN $${INSERT_COLUMNS.length + 1}::boolean THEN excluded.created_at ELSE instances.created_at END,
    pending_command_id = NULL, pending_command_host = NULL, pending_action = NULL,
         command_deadline_ms = NULL, migration = NULL,
    version = instances.version + 1
  RETURNING (xmax = 0) AS inserted`;

export class PostgresStore implements InstanceStore {
  readonly kind = 'postgres' as const;
  /** The hosts view (hosts-postgres.ts), through this pool. */
  readonly hosts: HostStore;
  readonly #pool: Pool;
  #closed: Promise<void> | undefined;
  #gets = new Map<string, Array<Pending<InstanceRow | undefined>>>();
  #updates: PendingUpdate[] = [];
  #flushScheduled = false;

  constructor(options: PostgresStoreOptions) {
    this.#pool = new Pool({
      connectionString: options.url,
      max: options.poolSize,
      connectionTimeoutMillis: options.busyTimeoutMs,
      idleTimeoutMillis: 30_000,
      query_timeout: 30_000,
      application_name: options.applicationName ?? 'virtbus',
    });
    // An idle client losing its server must not crash the process; the next query reports it.
    this.#pool.on('error', (error) =>
      options.logger.warn({ err: error }, 'PostgreSQL connection lost (idle client)'),
    );
    this.hosts = new PostgresHostStore(this.#pool, classify);
  }

  async migrate(): Promise<void> {
    const client = await this.#connect();
    try {
      await client.query('BEGIN');
      await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
      await client.query(
        'CREATE TABLE IF NOT EXISTS virtbus_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)',
      );
      const result = await client.query<{ version: number | null }>(
        'SELECT MAX(version) AS version FROM virtbus_migrations',
      );
      const current = result.rows[0]?.version ?? 0;
      for (const migration of POSTGRES_MIGRATIONS) {
        if (migration.version <= current) continue;
        await client.query(migration.sql);
        await client.query('INSERT INTO virtbus_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [
          migration.version,
          migration.name,
          isoMicros(nowMicros()),
        ]);
      }
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw classify(error);
    } finally {
      client.release();
    }
  }

  async ping(): Promise<void> {
    await this.#query('virtbus_ping', 'SELECT 1', []);
  }

  get(uuid: string): Promise<InstanceRow | undefined> {
    return new Promise((resolve, reject) => {
      const waiting = this.#gets.get(uuid);
      if (waiting) waiting.push({ resolve, reject });
      else this.#gets.set(uuid, [{ resolve, reject }]);
      this.#scheduleFlush();
    });
  }

  async list(filter: { readonly host?: string } = {}): Promise<InstanceRow[]> {
    const rows =
      filter.host === undefined
        ? await this.#query('virtbus_list', 'SELECT * FROM instances ORDER BY uuid', [])
        : await this.#query('virtbus_list_host', 'SELECT * FROM instances WHERE host = $1 ORDER BY uuid', [
            filter.host,
          ]);
    return rows.map(rowFromDb);
  }

  async expiredCommands(nowMs: number): Promise<InstanceRow[]> {
    const rows = await this.#query(
      'virtbus_expired',
      'SELECT * FROM instances WHERE pending_command_id IS NOT NULL AND command_deadline_ms < $1 ORDER BY uuid',
      [nowMs],
    );
    return rows.map(rowFromDb);
  }

  update(next: InstanceRow): Promise<boolean> {
    return new Promise((resolve, reject) => {
      this.#updates.push({ row: next, resolve, reject });
      this.#scheduleFlush();
    });
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      this.#flushGets();
      this.#flushUpdates();
    });
  }

  #flushGets(): void {
    if (this.#gets.size === 0) return;
    const all = [...this.#gets];
    this.#gets = new Map();
    for (let start = 0; start < all.length; start += MAX_BATCH) {
      const batch = all.slice(start, start + MAX_BATCH);
      const uuids = batch.map(([uuid]) => uuid);
      this.#query('virtbus_get_many', GET_MANY_SQL, [uuids]).then(
        (rows) => {
          const found = new Map(rows.map((raw) => [String(raw.uuid as string), raw]));
          for (const [uuid, waiters] of batch) {
            const raw = found.get(uuid);
            for (const waiter of waiters) waiter.resolve(raw ? rowFromDb(raw) : undefined);
          }
        },
        (error: unknown) => {
          for (const [, waiters] of batch) for (const waiter of waiters) waiter.reject(error);
        },
      );
    }
  }

  #flushUpdates(): void {
    if (this.#updates.length === 0) return;
    // One compare-and-swap per row and statement: a second update of the same row waits a turn.
    const seen = new Set<string>();
    const now: PendingUpdate[] = [];
    const later: PendingUpdate[] = [];
    for (const update of this.#updates) {
      if (seen.has(update.row.uuid) || now.length >= MAX_BATCH) later.push(update);
      else {
        seen.add(update.row.uuid);
        now.push(update);
      }
    }
    this.#updates = later;
    if (later.length > 0) this.#scheduleFlush();
    const rowValues = now.map(({ row }) => mutableValues(row));
    const columns = MUTABLE_COLUMNS.map((_, index) => rowValues.map((values) => values[index] ?? null));
    const values = [now.map(({ row }) => row.uuid), now.map(({ row }) => row.version), ...columns];
    this.#pool.query<{ uuid: string }>({ name: 'virtbus_update_many', text: BATCH_UPDATE_SQL, values }).then(
      (result) => {
        const updated = new Set(result.rows.map((raw) => raw.uuid));
        for (const update of now) update.resolve(updated.has(update.row.uuid));
      },
      (error: unknown) => {
        const failure = classify(error);
        for (const update of now) update.reject(failure);
      },
    );
  }

  async apply(uuids: readonly string[], decide: Decide): Promise<ReadonlySet<string>> {
    const rows = new Map<string, InstanceRow>();
    for (const raw of await this.#query('virtbus_get_many', GET_MANY_SQL, [uuids])) {
      const row = rowFromDb(raw);
      rows.set(row.uuid, row);
    }
    const writes = decide(rows);
    const lost = new Set<string>();
    if (writes.length === 0) return lost;
    // One statement (arrays as parameters, whatever the batch size): all of it commits, or none.
    const uuidsOut: string[] = [];
    const expected: number[] = [];
    const next: number[] = [];
    const columns = STATE_COLUMNS.map(() => [] as unknown[]);
    for (const { row, expected: version } of writes) {
      uuidsOut.push(row.uuid);
      expected.push(version);
      next.push(row.version);
      for (let index = 0; index < STATE_COLUMNS.length; index += 1)
        columns[index]!.push(row[STATE_COLUMNS[index]!]);
    }
    const returned = await this.#query('virtbus_apply', APPLY_SQL, [uuidsOut, expected, next, ...columns]);
    const written = new Set(returned.map((raw) => raw.uuid as string));
    for (const uuid of uuidsOut) if (!written.has(uuid)) lost.add(uuid);
    return lost;
  }

  async upsert(rows: readonly InstanceInput[]): Promise<{ inserted: number; updated: number }> {
    const client = await this.#connect();
    let inserted = 0;
    let updated = 0;
    try {
      await client.query('BEGIN');
      const now = isoMicros(nowMicros());
      for (const input of rows) {
        const row = rowFromInput(input, now);
        const result = await client.query<{ inserted: boolean }>({
          name: 'virtbus_upsert',
          text: UPSERT_SQL,
          // An import that gives created_at replaces it; otherwise a replaced row keeps its own.
          values: [row.uuid, ...mutableValues(row), row.created_at, row.version, Boolean(input.created_at)],
        });
        if (result.rows[0]?.inserted) inserted += 1;
        else updated += 1;
      }
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw classify(error);
    } finally {
      client.release();
    }
    return { inserted, updated };
  }

  close(): Promise<void> {
    this.#closed ??= this.#pool.end().catch(() => undefined);
    return this.#closed;
  }

  async #connect(): Promise<PoolClient> {
    try {
      return await this.#pool.connect();
    } catch (error) {
      throw classify(error);
    }
  }

  async #query(name: string, text: string, values: unknown[]): Promise<Raw[]> {
    try {
      const result = await this.#pool.query<Raw>({ name, text, values });
      return result.rows;
    } catch (error) {
      throw classify(error);
    }
  }
}

/**
 * The embedded store: better-sqlite3 on one file in WAL mode and prepared statements.
 *
 * The consumer's path is `apply`: a whole batch of messages is read, decided and written in one
 * BEGIN IMMEDIATE … COMMIT, synchronously (better-sqlite3 is synchronous, so nothing else of this
 * process runs in between and no compare-and-swap can be lost to it), and the promise settles after
 * the commit, so a message is acknowledged only after its row is durable.
 *
 * The single-row `update` (operator repairs, `virtbus instances set`) keeps group commit: every write
 * issued within one turn of the event loop joins one transaction (committed on the next
 * setImmediate), and each write's promise settles only when that transaction has committed. Reads
 * issued while such a batch is open wait for its commit too: no decision is ever taken on data that
 * a failed commit could take back.
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { isoMicros, nowMicros } from '../util/time';
import {
  MUTABLE_COLUMNS,
  SQLITE_MIGRATIONS,
  mutableValues,
  rowFromDb,
  rowFromInput,
  stateValues,
} from './schema';
import {
  STATE_COLUMNS,
  StoreUnavailableError,
  type Decide,
  type InstanceInput,
  type InstanceRow,
  type InstanceStore,
} from './types';
import { SqliteHostStore } from './hosts-sqlite';
import type { HostStore } from './hosts-types';

export interface SqliteStoreOptions {
  /** File path, or ':memory:'. */
  readonly path: string;
  readonly synchronous: 'full' | 'normal';
  readonly busyTimeoutMs: number;
}

/** SQLite result codes that describe the database's condition, not the statement. */
const UNAVAILABLE = /^SQLITE_(BUSY|LOCKED|IOERR|FULL|CANTOPEN|READONLY|PROTOCOL|NOMEM|CORRUPT|NOTADB)/;

function classify(error: unknown): unknown {
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && UNAVAILABLE.test(code)) {
    return new StoreUnavailableError(`SQLite: ${(error as Error).message} (${code})`, { cause: error });
  }
  return error;
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

type Raw = Record<string, string | number | null>;

interface Waiter {
  resolve(): void;
  reject(error: unknown): void;
}

export class SqliteStore implements InstanceStore {
  readonly kind = 'sqlite' as const;
  /** The hosts view (hosts-sqlite.ts), on this connection. */
  readonly hosts: HostStore;
  readonly #db: Database.Database;
  readonly #get: Database.Statement<[string], Raw>;
  readonly #listAll: Database.Statement<[], Raw>;
  readonly #listHost: Database.Statement<[string], Raw>;
  readonly #update: Database.Statement<unknown[]>;
  readonly #updateState: Database.Statement<unknown[]>;
  readonly #getMany: Database.Statement<[string], unknown[]>;
  readonly #getManyColumns: readonly string[];
  readonly #begin: Database.Statement<[]>;
  readonly #commitTx: Database.Statement<[]>;
  readonly #exists: Database.Statement<[string], { one: number }>;
  readonly #upsert: Database.Statement<unknown[]>;
  readonly #expired: Database.Statement<[number], Raw>;
  /** Writers and readers waiting for the open transaction to commit; undefined: none open. */
  #batch: Waiter[] | undefined;
  #closed = false;

  constructor(options: SqliteStoreOptions) {
    if (options.path !== ':memory:') mkdirSync(dirname(resolve(options.path)), { recursive: true });
    try {
      this.#db = new Database(options.path, { timeout: options.busyTimeoutMs });
      this.#db.pragma('journal_mode = WAL');
      this.#db.pragma(`synchronous = ${options.synchronous.toUpperCase()}`);
      this.#migrate();
    } catch (error) {
      throw classify(error);
    }
    const assignments = MUTABLE_COLUMNS.map((column) => `${column} = ?`).join(', ');
    const columns = ['uuid', ...MUTABLE_COLUMNS, 'created_at', 'version'];
    this.#get = this.#db.prepare('SELECT * FROM instances WHERE uuid = ?');
    this.#listAll = this.#db.prepare('SELECT * FROM instances ORDER BY uuid');
    this.#listHost = this.#db.prepare('SELECT * FROM instances WHERE host = ? ORDER BY uuid');
    this.#update = this.#db.prepare(
      `UPDATE instances SET ${assignments}, version = version + 1 WHERE uuid = ? AND version = ?`,
    );
    this.#updateState = this.#db.prepare(
      `UPDATE instances SET ${STATE_COLUMNS.map((column) => `${column} = ?`).join(', ')}, version = ?
       WHERE uuid = ? AND version = ?`,
    );
    // One statement for a batch's rows, as arrays (no per-row statement call, no per-row object).
    this.#getMany = this.#db
      .prepare<[string], unknown[]>('SELECT * FROM instances WHERE uuid IN (SELECT value FROM json_each(?))')
      .raw(true);
    this.#getManyColumns = this.#getMany.columns().map((column) => column.name);
    this.#begin = this.#db.prepare('BEGIN IMMEDIATE');
    this.#commitTx = this.#db.prepare('COMMIT');
    this.#exists = this.#db.prepare('SELECT 1 AS one FROM instances WHERE uuid = ?');
    this.#upsert = this.#db.prepare(
      `INSERT INTO instances (${columns.join(', ')}) VALUES (${columns.map(() => '?').join(', ')})
       ON CONFLICT (uuid) DO UPDATE SET host = excluded.host, vm_state = excluded.vm_state,
         task_state = excluded.task_state, power_state = excluded.power_state,
         launched_at = excluded.launched_at, attrs = excluded.attrs, updated_at = excluded.updated_at,
         created_at = CASE WHEN ? THEN excluded.created_at ELSE instances.created_at END,
         pending_command_id = NULL, pending_command_host = NULL, pending_action = NULL,
         command_deadline_ms = NULL, migration = NULL,
         version = instances.version + 1`,
    );
    this.#expired = this.#db.prepare(
      'SELECT * FROM instances WHERE pending_command_id IS NOT NULL AND command_deadline_ms < ? ORDER BY uuid',
    );
    this.hosts = new SqliteHostStore(this.#db, (work) => this.#read(work));
  }

  /** The schema is created when the store opens (synchronously); kept for the interface. */
  migrate(): Promise<void> {
    return Promise.resolve();
  }

  #migrate(): void {
    this.#db.exec(
      'CREATE TABLE IF NOT EXISTS virtbus_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)',
    );
    const apply = this.#db.transaction(() => {
      const row = this.#db.prepare('SELECT MAX(version) AS version FROM virtbus_migrations').get() as {
        version: number | null;
      };
      const current = row.version ?? 0;
      for (const migration of SQLITE_MIGRATIONS) {
        if (migration.version <= current) continue;
        this.#db.exec(migration.sql);
        this.#db
          .prepare('INSERT INTO virtbus_migrations (version, name, applied_at) VALUES (?, ?, ?)')
          .run(migration.version, migration.name, isoMicros(nowMicros()));
      }
    });
    apply.immediate();
  }

  /**
   * Proves the database can be written, not only read: in WAL mode reads succeed while another
   * process holds the write lock, so the probe takes the lock (BEGIN IMMEDIATE, waiting at most the
   * busy timeout) and rolls back. Inside an open batch we hold the lock already.
   */
  ping(): Promise<void> {
    return this.#read(() => {
      if (this.#batch || this.#db.inTransaction) return;
      this.#db.exec('BEGIN IMMEDIATE');
      this.#db.exec('ROLLBACK');
    });
  }

  get(uuid: string): Promise<InstanceRow | undefined> {
    return this.#read(() => {
      const raw = this.#get.get(uuid);
      return raw ? rowFromDb(raw) : undefined;
    });
  }

  list(filter: { readonly host?: string } = {}): Promise<InstanceRow[]> {
    return this.#read(() =>
      (filter.host === undefined ? this.#listAll.all() : this.#listHost.all(filter.host)).map(rowFromDb),
    );
  }

  expiredCommands(nowMs: number): Promise<InstanceRow[]> {
    return this.#read(() => this.#expired.all(nowMs).map(rowFromDb));
  }

  update(next: InstanceRow): Promise<boolean> {
    return this.#write(() => this.#update.run(...mutableValues(next), next.uuid, next.version).changes === 1);
  }

  apply(uuids: readonly string[], decide: Decide): Promise<ReadonlySet<string>> {
    const lost = new Set<string>();
    try {
      if (this.#closed) throw new StoreUnavailableError('the store is closed');
      // An open group-commit batch commits first: this transaction is the batch's own.
      if (this.#batch) this.#commit();
      this.#begin.run();
      try {
        const rows = new Map<string, InstanceRow>();
        const columns = this.#getManyColumns;
        for (const values of this.#getMany.all(JSON.stringify(uuids))) {
          const raw: Raw = {};
          for (let index = 0; index < columns.length; index += 1)
            raw[columns[index] as string] = values[index] as string | number | null;
          const row = rowFromDb(raw);
          rows.set(row.uuid, row);
        }
        for (const { row, expected } of decide(rows)) {
          if (this.#updateState.run(...stateValues(row), row.version, row.uuid, expected).changes !== 1)
            lost.add(row.uuid);
        }
        this.#commitTx.run();
      } catch (error) {
        try {
          if (this.#db.inTransaction) this.#db.exec('ROLLBACK');
        } catch {
          // the connection is unusable; the error below says why
        }
        throw error;
      }
    } catch (error) {
      return Promise.reject(asError(classify(error)));
    }
    return Promise.resolve(lost);
  }

  upsert(rows: readonly InstanceInput[]): Promise<{ inserted: number; updated: number }> {
    return this.#write(() => {
      let inserted = 0;
      let updated = 0;
      const now = isoMicros(nowMicros());
      for (const input of rows) {
        const row = rowFromInput(input, now);
        if (this.#exists.get(row.uuid)) updated += 1;
        else inserted += 1;
        // An import that gives created_at replaces it; otherwise a replaced row keeps its own.
        const keep = input.created_at ? 1 : 0;
        this.#upsert.run(row.uuid, ...mutableValues(row), row.created_at, row.version, keep);
      }
      return { inserted, updated };
    });
  }

  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    if (this.#batch) this.#commit();
    this.#db.close();
    return Promise.resolve();
  }

  /** A read, settled after the open batch (if any) commits. */
  #read<T>(query: () => T): Promise<T> {
    let value: T;
    try {
      if (this.#closed) throw new StoreUnavailableError('the store is closed');
      value = query();
    } catch (error) {
      return Promise.reject(asError(classify(error)));
    }
    if (!this.#batch) return Promise.resolve(value);
    return this.#join().then(() => value);
  }

  /** A write inside the open batch (opened here when none is), settled when the batch commits. */
  #write<T>(statement: () => T): Promise<T> {
    let value: T;
    try {
      if (this.#closed) throw new StoreUnavailableError('the store is closed');
      if (!this.#batch) {
        this.#db.exec('BEGIN IMMEDIATE');
        this.#batch = [];
        setImmediate(() => this.#commit());
      } else if (!this.#db.inTransaction) {
        // SQLite rolled the batch back by itself (I/O error, full disk): nothing may join it.
        throw new StoreUnavailableError('SQLite rolled back the current transaction');
      }
      value = statement();
    } catch (error) {
      return Promise.reject(asError(classify(error)));
    }
    return this.#join().then(() => value);
  }

  #join(): Promise<void> {
    return new Promise<void>((resolve, reject) => this.#batch?.push({ resolve, reject }));
  }

  #commit(): void {
    const waiters = this.#batch;
    this.#batch = undefined;
    if (!waiters) return;
    try {
      if (!this.#db.inTransaction) throw new StoreUnavailableError('SQLite rolled back the transaction');
      this.#db.exec('COMMIT');
    } catch (error) {
      try {
        if (this.#db.inTransaction) this.#db.exec('ROLLBACK');
      } catch {
        // the connection is unusable; every waiter learns it below
      }
      const failure = classify(error);
      const reason =
        failure instanceof StoreUnavailableError
          ? failure
          : new StoreUnavailableError(`SQLite commit failed: ${String(error)}`, { cause: error });
      for (const waiter of waiters) waiter.reject(reason);
      return;
    }
    for (const waiter of waiters) waiter.resolve();
  }
}

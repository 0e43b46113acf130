/** Opens the store `db.url` names: sqlite:<path> (embedded) or postgres://… (shared). */
import type { Logger } from '../util/log';
import { PostgresStore } from './postgres';
import { SqliteStore } from './sqlite';
import type { InstanceStore } from './types';

export interface DbSettings {
  readonly url: string;
  readonly poolSize: number;
  /** full or normal (validated by the configuration schema). */
  readonly sqliteSynchronous: string;
  readonly busyTimeoutMs: number;
}

/** sqlite:./data/virtbus.db, sqlite:/var/lib/virtbus.db, sqlite:///var/lib/virtbus.db, sqlite::memory: */
export function sqlitePath(url: string): string {
  const rest = url.slice('sqlite:'.length);
  return rest.startsWith('//') ? rest.slice(2) : rest;
}

/**
 * Opens (and for SQLite creates and migrates) the store. PostgreSQL connects lazily: call
 * migrate(), which also proves the database answers.
 */
export function openStore(db: DbSettings, logger: Logger, applicationName?: string): InstanceStore {
  if (db.url.startsWith('sqlite:')) {
    return new SqliteStore({
      path: sqlitePath(db.url),
      synchronous: db.sqliteSynchronous === 'normal' ? 'normal' : 'full',
      busyTimeoutMs: db.busyTimeoutMs,
    });
  }
  return new PostgresStore({
    url: db.url,
    poolSize: db.poolSize,
    busyTimeoutMs: db.busyTimeoutMs,
    logger,
    ...(applicationName ? { applicationName } : {}),
  });
}

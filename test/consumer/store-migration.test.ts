/**
 * Upgrading an existing database, on both stores: a schema at version 1 (before the commanded host
 * and the migration evidence existed) is migrated in place when the store opens; its rows keep
 * their state, and a stop command pending across the upgrade keeps the host it was sent to.
 */
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Client } from 'pg';
import { PostgresStore } from '../../src/store/postgres';
import { POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS } from '../../src/store/schema';
import { SqliteStore } from '../../src/store/sqlite';
import type { InstanceStore } from '../../src/store/types';
import { createLogger } from '../../src/util/log';
import { testPostgresUrl } from '../support/services';

const PENDING = 'c0ffee00-0000-4000-8000-00000000000a';
const IDLE = 'c0ffee00-0000-4000-8000-00000000000b';
const COMMAND = 'c0ffee00-0000-4000-8000-0000000000cc';

const V1_ROWS = `
  CREATE TABLE IF NOT EXISTS virtbus_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL);
  INSERT INTO virtbus_migrations (version, name, applied_at) VALUES (1, 'instances', '2026-01-01T00:00:00.000000Z');
  INSERT INTO instances (uuid, host, vm_state, task_state, power_state, created_at, updated_at,
    pending_command_id, pending_action, command_deadline_ms, version)
  VALUES ('${PENDING}', 'cmp-a', 'active', 'powering-off', 4, '2026-01-01T00:00:00.000000Z',
    '2026-01-01T00:00:00.000000Z', '${COMMAND}', 'stop', 1800000000000, 3);
  INSERT INTO instances (uuid, host, vm_state, power_state, created_at, updated_at, version)
  VALUES ('${IDLE}', 'cmp-b', 'stopped', 4, '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z', 1);
`;

async function checkUpgraded(store: InstanceStore): Promise<void> {
  const pending = await store.get(PENDING);
  assert.ok(pending);
  assert.deepEqual(
    [
      pending.host,
      pending.task_state,
      pending.pending_command_id,
      pending.pending_command_host,
      pending.version,
    ],
    ['cmp-a', 'powering-off', COMMAND, 'cmp-a', 3],
  );
  assert.equal(pending.migration, null);
  const idle = await store.get(IDLE);
  assert.ok(idle);
  assert.deepEqual(
    [idle.vm_state, idle.power_state, idle.pending_command_host, idle.migration],
    ['stopped', 4, null, null],
  );
  // The new columns are written through apply like any state column.
  const lost = await store.apply([IDLE], (rows) => {
    const row = rows.get(IDLE);
    assert.ok(row);
    return [
      {
        row: {
          ...row,
          host: 'cmp-c',
          migration: {
            source: 'cmp-b',
            source_state: 'left',
            dest: null,
            dest_power: null,
            dest_position: null,
            updated_us: 1,
          },
          version: row.version + 1,
        },
        expected: row.version,
      },
    ];
  });
  assert.equal(lost.size, 0);
  const written = await store.get(IDLE);
  assert.equal(written?.host, 'cmp-c');
  assert.equal(written?.migration?.source_state, 'left');
}

describe('store schema upgrade', () => {
  it('SQLite: a version-1 database gains pending_command_host and migration', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'virtbus-upgrade-'));
    after(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'instances.db');
    const v1 = new Database(path);
    v1.exec((SQLITE_MIGRATIONS[0] as { sql: string }).sql);
    v1.exec(V1_ROWS);
    v1.close();
    const store = new SqliteStore({ path, synchronous: 'full', busyTimeoutMs: 2000 });
    try {
      await checkUpgraded(store);
    } finally {
      await store.close();
    }
  });

  it('PostgreSQL: a version-1 database gains pending_command_host and migration', async () => {
    const url = await testPostgresUrl();
    const client = new Client({ connectionString: url });
    await client.connect();
    try {
      await client.query((POSTGRES_MIGRATIONS[0] as { sql: string }).sql);
      await client.query(V1_ROWS);
    } finally {
      await client.end();
    }
    const store = new PostgresStore({
      url,
      poolSize: 2,
      busyTimeoutMs: 5000,
      logger: createLogger('silent', 'upgrade'),
    });
    try {
      await store.migrate();
      await checkUpgraded(store);
    } finally {
      await store.close();
    }
  });
});

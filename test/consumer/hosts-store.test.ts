/**
 * The hosts table on both stores: schema migration 3 on a database at version 2 (its instance rows
 * kept and counted), and the merge rules several consumers rely on — each field only moves forward
 * (an older event or snapshot flushed late changes nothing; boot_id follows the newest event), rows
 * by power state leave deleted rows out, and the maintenance switch round-trips.
 */
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Client } from 'pg';
import type { HostStore } from '../../src/store/hosts-types';
import { PostgresStore } from '../../src/store/postgres';
import { POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS } from '../../src/store/schema';
import { SqliteStore } from '../../src/store/sqlite';
import type { InstanceStore } from '../../src/store/types';
import { createLogger } from '../../src/util/log';
import { testPostgresUrl } from '../support/services';

const V2_ROWS = `
  CREATE TABLE IF NOT EXISTS virtbus_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL);
  INSERT INTO virtbus_migrations (version, name, applied_at) VALUES (1, 'instances', '2026-01-01T00:00:00.000000Z');
  INSERT INTO virtbus_migrations (version, name, applied_at) VALUES (2, 'command host', '2026-01-01T00:00:00.000000Z');
  INSERT INTO instances (uuid, host, vm_state, power_state, created_at, updated_at, version) VALUES
    ('c0ffee00-0000-4000-8000-000000000001', 'cmp-a', 'active', 1, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', 1),
    ('c0ffee00-0000-4000-8000-000000000002', 'cmp-a', 'active', 1, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', 1),
    ('c0ffee00-0000-4000-8000-000000000003', 'cmp-a', 'stopped', 4, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', 1),
    ('c0ffee00-0000-4000-8000-000000000004', 'cmp-a', 'deleted', 0, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', 1),
    ('c0ffee00-0000-4000-8000-000000000005', 'cmp-b', 'active', 1, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', 1),
    ('c0ffee00-0000-4000-8000-000000000006', NULL, 'building', 0, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', 1);
`;

const T = 1_800_000_000_000_000;

async function checkHosts(store: InstanceStore): Promise<void> {
  const hosts = store.hosts as HostStore;
  assert.ok(hosts, 'the store keeps a hosts view');
  assert.deepEqual(await hosts.powerCounts(), [
    { host: 'cmp-a', powerState: 1, count: 2 },
    { host: 'cmp-a', powerState: 4, count: 1 },
    { host: 'cmp-b', powerState: 1, count: 1 },
  ]);
  assert.deepEqual(await hosts.list(), []);
  const snapshot = (takenUs: number, id: string, boot: string) => ({
    id,
    takenUs,
    seenUs: takenUs + 5,
    bootId: boot,
    intervalSeconds: 600,
  });
  // Consumer 1 saw the newer half, consumer 2 flushes an older one afterwards.
  await hosts.record([
    {
      host: 'cmp-a',
      lastEventUs: T + 300,
      lastSeenUs: T + 310,
      bootId: 'boot-2',
      snapshot: snapshot(T + 200, 's2', 'boot-2'),
    },
  ]);
  await hosts.record([
    {
      host: 'cmp-a',
      lastEventUs: T + 100,
      lastSeenUs: T + 400,
      bootId: 'boot-1',
      snapshot: snapshot(T + 50, 's1', 'boot-1'),
    },
    { host: 'cmp-b', lastEventUs: T + 10, lastSeenUs: T + 20, bootId: 'boot-b' },
  ]);
  const [a, b] = await hosts.list();
  assert.deepEqual(a, {
    host: 'cmp-a',
    lastEventUs: T + 300,
    lastSeenUs: T + 400,
    bootId: 'boot-2',
    snapshot: snapshot(T + 200, 's2', 'boot-2'),
    maintenance: null,
  });
  assert.deepEqual(b, {
    host: 'cmp-b',
    lastEventUs: T + 10,
    lastSeenUs: T + 20,
    bootId: 'boot-b',
    snapshot: null,
    maintenance: null,
  });
  // A newer snapshot replaces; a newer event moves boot_id.
  await hosts.record([
    {
      host: 'cmp-a',
      lastEventUs: T + 900,
      lastSeenUs: T + 901,
      bootId: 'boot-3',
      snapshot: { ...snapshot(T + 800, 's3', 'boot-3'), intervalSeconds: 0 },
    },
  ]);
  const [a2] = await hosts.list();
  assert.deepEqual([a2?.bootId, a2?.snapshot?.id, a2?.snapshot?.intervalSeconds], ['boot-3', 's3', 0]);
  // Maintenance: on for a host without a row (created), on and off for a known one.
  assert.equal(
    await hosts.setMaintenance('cmp-new', { reason: 'racking', sinceUs: T, untilUs: null, by: 'ops' }),
    false,
  );
  assert.equal(
    await hosts.setMaintenance('cmp-a', { reason: 'bios', sinceUs: T, untilUs: T + 3600e6, by: null }),
    true,
  );
  const listed = new Map((await hosts.list()).map((record) => [record.host, record]));
  assert.deepEqual(listed.get('cmp-new')?.maintenance, {
    reason: 'racking',
    sinceUs: T,
    untilUs: null,
    by: 'ops',
  });
  assert.deepEqual(listed.get('cmp-a')?.maintenance, {
    reason: 'bios',
    sinceUs: T,
    untilUs: T + 3600e6,
    by: null,
  });
  assert.equal(listed.get('cmp-a')?.snapshot?.id, 's3', 'the switch leaves the rest alone');
  assert.equal(await hosts.setMaintenance('cmp-a', null), true);
  assert.equal((await hosts.list()).find((record) => record.host === 'cmp-a')?.maintenance, null);
  // Recording keeps the switch.
  await hosts.record([{ host: 'cmp-new', lastEventUs: T, lastSeenUs: T, bootId: 'x' }]);
  assert.equal(
    (await hosts.list()).find((record) => record.host === 'cmp-new')?.maintenance?.reason,
    'racking',
  );
}

describe('the hosts table', () => {
  it('SQLite: a version-2 database gains it; merges move forward only', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'virtbus-hosts-'));
    after(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'instances.db');
    const v2 = new Database(path);
    for (const migration of SQLITE_MIGRATIONS.slice(0, 2)) v2.exec(migration.sql);
    v2.exec(V2_ROWS);
    v2.close();
    const store = new SqliteStore({ path, synchronous: 'full', busyTimeoutMs: 2000 });
    try {
      await checkHosts(store);
    } finally {
      await store.close();
    }
    const check = new Database(path, { readonly: true });
    const versions = check.prepare('SELECT version FROM virtbus_migrations ORDER BY version').all();
    check.close();
    assert.deepEqual(versions, [{ version: 1 }, { version: 2 }, { version: 3 }]);
  });

  it('PostgreSQL: a version-2 database gains it; merges move forward only', async () => {
    const url = await testPostgresUrl();
    const client = new Client({ connectionString: url });
    await client.connect();
    try {
      for (const migration of POSTGRES_MIGRATIONS.slice(0, 2)) await client.query(migration.sql);
      await client.query(V2_ROWS);
    } finally {
      await client.end();
    }
    const store = new PostgresStore({
      url,
      poolSize: 2,
      busyTimeoutMs: 5000,
      logger: createLogger('silent', 'hosts'),
    });
    try {
      await store.migrate();
      await checkHosts(store);
    } finally {
      await store.close();
    }
  });
});

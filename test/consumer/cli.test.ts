/**
 * The command line: `virtbus instances import|list|set` against a SQLite file and a PostgreSQL
 * database, `virtbus consumer --help`, and bad configuration or usage exiting 2 with the key named.
 */
import { virtbusCli, type CliRun } from '../support/cli';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { testPostgresUrl } from '../support/services';
import { tempSqliteUrl } from '../support/consumer';

const virtbus = (
  args: readonly string[],
  env: Record<string, string> = {},
  input?: string,
): Promise<CliRun> => virtbusCli(args, env, input === undefined ? {} : { input });

const dir = mkdtempSync(join(tmpdir(), 'virtbus-cli-'));

describe('virtbus consumer (command line)', () => {
  it('--help prints the usage and exits 0', async () => {
    const run = await virtbus(['consumer', '--help']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^Usage: virtbus consumer/);
    assert.match(run.stdout, /observe/);
    assert.match(run.stdout, /x-virtbus-reason/);
  });

  it('is listed in virtbus --help', async () => {
    const run = await virtbus(['--help']);
    assert.match(run.stdout, /consumer\s+run the consumer/);
    assert.match(run.stdout, /instances\s+manage instance rows/);
  });

  it('exits 2 naming the key on bad configuration', async () => {
    const mode = await virtbus(['consumer'], { VIRTBUS_CONSUMER_MODE: 'bogus' });
    assert.equal(mode.code, 2);
    assert.match(mode.stderr, /invalid configuration: consumer\.mode/);
    const db = await virtbus(['consumer', '--db-url', 'mysql://db/x']);
    assert.equal(db.code, 2);
    assert.match(db.stderr, /db\.url/);
    const prefetch = await virtbus(['consumer'], { VIRTBUS_CONSUMER_PREFETCH: '0' });
    assert.equal(prefetch.code, 2);
    assert.match(prefetch.stderr, /consumer\.prefetch/);
  });

  it('exits 2 on bad usage', async () => {
    const flag = await virtbus(['consumer', '--frobnicate']);
    assert.equal(flag.code, 2);
    assert.match(flag.stderr, /unknown option --frobnicate/);
    const extra = await virtbus(['consumer', 'now']);
    assert.equal(extra.code, 2);
    assert.match(extra.stderr, /unexpected argument now/);
  });
});

for (const backend of ['sqlite', 'postgres'] as const) {
  describe(`virtbus instances on ${backend}`, async () => {
    const dbUrl = backend === 'sqlite' ? tempSqliteUrl() : await testPostgresUrl();
    const env = { VIRTBUS_DB_URL: dbUrl };
    const [a, b, c] = [randomUUID(), randomUUID(), randomUUID()];
    const started = new Date().toISOString();

    it('imports a JSON array', async () => {
      const file = join(dir, `${backend}-rows.json`);
      writeFileSync(
        file,
        JSON.stringify([
          {
            uuid: a,
            host: 'cmp-01',
            vm_state: 'active',
            task_state: null,
            power_state: 1,
            launched_at: '2026-08-20T10:00:30Z',
            display_name: 'web-1',
            tenant_id: 't1',
          },
          {
            uuid: b,
            host: 'cmp-02',
            vm_state: 'stopped',
            task_state: null,
            power_state: 4,
            launched_at: null,
          },
        ]),
      );
      const run = await virtbus(['instances', 'import', file], env);
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stdout, /imported 2 instances \(2 new, 0 replaced\)/);
    });

    it('imports NDJSON from stdin, replacing an existing row', async () => {
      const ndjson = [
        `{"uuid": "${c}", "host": "cmp-01", "vm_state": "paused", "task_state": null, "power_state": 3, "launched_at": "2026-08-20T10:00:30.5+02:00", "created_at": "2026-08-19T12:00:00+02:00"}`,
        '',
        '# a comment',
        `{"uuid": "${b.toUpperCase()}", "host": "cmp-02", "vm_state": "stopped", "task_state": null, "power_state": 4, "launched_at": null, "display_name": "db-1", "created_at": "2026-08-01 09:00:00", "terminated_at": "2026-08-21T10:00:00+02:00"}`,
      ].join('\n');
      const run = await virtbus(['instances', 'import', '-'], env, ndjson);
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stdout, /imported 2 instances \(1 new, 1 replaced\)/);
    });

    it('lists as JSON with the contract keys', async () => {
      const run = await virtbus(['instances', 'list', '--json'], env);
      assert.equal(run.code, 0, run.stderr);
      const rows = JSON.parse(run.stdout) as Array<Record<string, unknown>>;
      assert.equal(rows.length, 3);
      const byUuid = new Map(rows.map((row) => [row.uuid, row]));
      assert.deepEqual(
        { ...byUuid.get(a), created_at: undefined, updated_at: undefined },
        {
          uuid: a,
          host: 'cmp-01',
          vm_state: 'active',
          task_state: null,
          power_state: 1,
          power_state_name: 'running',
          launched_at: '2026-08-20T10:00:30.000000Z',
          created_at: undefined,
          updated_at: undefined,
          last_event: null,
          pending_command: null,
          last_action: null,
          last_action_at: null,
          last_error: null,
          attrs: { display_name: 'web-1', tenant_id: 't1' },
        },
      );
      assert.equal(byUuid.get(c)?.launched_at, '2026-08-20T08:00:30.500000Z', 'offsets normalised to UTC');
      assert.deepEqual(byUuid.get(b)?.attrs, {
        display_name: 'db-1',
        terminated_at: '2026-08-21T08:00:00.000000Z',
      });
      // Nova's created_at from the import (inserted and replaced rows); the import time otherwise.
      assert.equal(byUuid.get(c)?.created_at, '2026-08-19T10:00:00.000000Z');
      assert.equal(byUuid.get(b)?.created_at, '2026-08-01T09:00:00.000000Z');
      assert.ok(String(byUuid.get(a)?.created_at) >= started.slice(0, 19), 'no created_at: the import time');
      const host = await virtbus(['instances', 'list', '--json', '--host', 'cmp-02'], env);
      assert.deepEqual(
        (JSON.parse(host.stdout) as Array<{ uuid: string }>).map((row) => row.uuid),
        [b],
      );
    });

    it('lists as a table', async () => {
      const run = await virtbus(['instances', 'list'], env);
      assert.equal(run.code, 0, run.stderr);
      const lines = run.stdout.trim().split('\n');
      assert.match(lines[0] ?? '', /^UUID\s+HOST\s+VM_STATE\s+TASK_STATE\s+POWER_STATE/);
      assert.equal(lines.length, 4);
      assert.ok(lines.some((line) => line.includes(a) && /3|1 running/.test(line)));
    });

    it('sets fields on a row', async () => {
      const run = await virtbus(
        [
          'instances',
          'set',
          a,
          'vm_state=stopped',
          'power_state=4',
          'task_state=powering-off',
          'display_name=web-one',
        ],
        env,
      );
      assert.equal(run.code, 0, run.stderr);
      const list = JSON.parse((await virtbus(['instances', 'list', '--json'], env)).stdout) as Array<
        Record<string, unknown>
      >;
      const row = list.find((r) => r.uuid === a);
      assert.equal(row?.vm_state, 'stopped');
      assert.equal(row?.power_state, 4);
      assert.equal(row?.task_state, 'powering-off');
      assert.deepEqual(row?.attrs, { display_name: 'web-one', tenant_id: 't1' });
      const clear = await virtbus(['instances', 'set', a, 'task_state=', 'launched_at=null'], env);
      assert.equal(clear.code, 0, clear.stderr);
      const cleared = JSON.parse(clear.stdout) as Record<string, unknown>;
      assert.equal(cleared.task_state, null);
      assert.equal(cleared.launched_at, null);
    });

    it('rejects bad input with exit 2 and unknown instances with exit 1', async () => {
      const badFile = join(dir, `${backend}-bad.ndjson`);
      writeFileSync(badFile, `{"uuid": "${randomUUID()}", "vm_state": "flying"}\n`);
      const bad = await virtbus(['instances', 'import', badFile], env);
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /line 1: vm_state must be one of active/);
      const badUuid = await virtbus(['instances', 'import', '-'], env, '[{"uuid": "nope"}]');
      assert.equal(badUuid.code, 2);
      assert.match(badUuid.stderr, /record 1: uuid must be a UUID/);
      const badPower = await virtbus(['instances', 'set', a, 'power_state=2'], env);
      assert.equal(badPower.code, 2);
      assert.match(badPower.stderr, /power_state must be a Nova power_state code/);
      const badKey = await virtbus(['instances', 'set', a, 'version=7'], env);
      assert.equal(badKey.code, 2);
      assert.match(badKey.stderr, /version: cannot be set/);
      const unknown = await virtbus(['instances', 'set', randomUUID(), 'vm_state=active'], env);
      assert.equal(unknown.code, 1);
      assert.match(unknown.stderr, /no instance/);
      const usage = await virtbus(['instances', 'frob'], env);
      assert.equal(usage.code, 2);
      const missing = await virtbus(['instances', 'import', join(dir, 'missing.json')], env);
      assert.equal(missing.code, 2);
      assert.match(missing.stderr, /cannot read/);
      const help = await virtbus(['instances', '--help'], env);
      assert.equal(help.code, 0);
      assert.match(help.stdout, /virtbus instances import FILE/);
    });
  });
}

/**
 * A private PostgreSQL cluster (initdb + pg_ctl) on a free loopback port, owned by user postgres, so
 * tests never use or disturb a server the machine may already run on 5432.
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { freePort, requireRoot, run, runChecked } from './exec';

export interface PostgresSandbox {
  /** postgres://postgres@127.0.0.1:<port>/virtbus */
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  stop(mode?: 'fast' | 'immediate'): Promise<void>;
  start(): Promise<void>;
  dispose(): Promise<void>;
}

function pgBinDir(): string {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root) ? readdirSync(root).sort((a, b) => Number(b) - Number(a)) : [];
  const dir = versions
    .map((v) => join(root, v, 'bin'))
    .find((candidate) => existsSync(join(candidate, 'initdb')));
  if (!dir)
    throw new Error('PostgreSQL server binaries not found: run `npm run setup` (apt-get install postgresql)');
  return dir;
}

export async function startPostgres(): Promise<PostgresSandbox> {
  requireRoot('the private PostgreSQL cluster');
  const bin = pgBinDir();
  const dir = mkdtempSync(join(tmpdir(), 'virtbus-postgres-'));
  chmodSync(dir, 0o755);
  const data = join(dir, 'data');
  mkdirSync(data, { mode: 0o700 });
  execFileSync('chown', ['-R', 'postgres:postgres', dir]);
  const port = await freePort();
  const asPostgres = (command: string, args: string[]): Promise<string> =>
    runChecked('runuser', ['-u', 'postgres', '--', join(bin, command), ...args], { cwd: dir });
  await asPostgres('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync']);
  const start = async (): Promise<void> => {
    await asPostgres('pg_ctl', [
      '-D',
      data,
      '-l',
      join(dir, 'postgres.log'),
      '-w',
      '-t',
      '60',
      '-o',
      `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200`,
      'start',
    ]);
  };
  const stop = async (mode: 'fast' | 'immediate' = 'fast'): Promise<void> => {
    await run('runuser', ['-u', 'postgres', '--', join(bin, 'pg_ctl'), '-D', data, '-m', mode, '-w', 'stop']);
  };
  await start();
  await asPostgres('createdb', ['-h', dir, '-p', String(port), '-U', 'postgres', 'virtbus']);
  return {
    url: `postgres://postgres@127.0.0.1:${port}/virtbus`,
    port,
    dir,
    stop,
    start,
    dispose: async () => {
      await stop('immediate');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

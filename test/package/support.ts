/**
 * What the package suite shares: building the .deb and the image with the repository's own scripts
 * (the code paths `npm run package` and `npm run image` take), a fresh Debian 12 root file system
 * unpacked from the cached mmdebstrap base, and commands run inside it (packaging/chroot.sh: private
 * mount and PID namespaces, so nothing outlives a command). Everything goes to a scratch directory,
 * in memory when /dev/shm is there (a busy disk makes unpacking 200 MB of small files slow), removed
 * after the file.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { existsSync } from 'node:fs';
import { requireRoot, run, runChecked, type RunResult } from '../../src/sandbox/exec';
import { onTeardown } from '../support/services';

export const REPO = resolve(__dirname, '..', '..', '..');

/** A scratch directory removed after the test file. */
export function scratchDir(prefix: string): string {
  const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  const dir = mkdtempSync(join(base, prefix));
  onTeardown(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
  return dir;
}

/** scripts/package.sh into `outDir`; VIRTBUS_PACKAGE_VERSION when `version` is given. */
export async function buildDeb(outDir: string, version?: string): Promise<string> {
  requireRoot('the package suite (chroots, podman)');
  const env = { ...process.env, ...(version ? { VIRTBUS_PACKAGE_VERSION: version } : {}) };
  const stdout = await runChecked('bash', [join(REPO, 'scripts', 'package.sh'), outDir], { env, cwd: REPO });
  return stdout.trim().split('\n').at(-1) ?? '';
}

/** A fresh Debian 12 root: the cached mmdebstrap base (built on first use) unpacked in `dir`. */
export async function freshDebianRoot(dir: string): Promise<string> {
  const tarball = (await runChecked('bash', [join(REPO, 'packaging', 'debian-base.sh')])).trim();
  await runChecked('tar', ['-xf', tarball, '-C', dir]);
  return dir;
}

/** `sh -c script` inside `root`, as root, with a clean environment. */
export function inRoot(root: string, script: string): Promise<RunResult> {
  return run('bash', [join(REPO, 'packaging', 'chroot.sh'), root, '/bin/sh', '-c', script]);
}

/** Like inRoot but rejects with the output when the script fails; resolves to stdout. */
export async function inRootChecked(root: string, script: string): Promise<string> {
  const result = await inRoot(root, script);
  if (result.code !== 0)
    throw new Error(`in ${root}: ${script}\nexit ${String(result.code)}\n${result.stdout}${result.stderr}`);
  return result.stdout;
}

/**
 * apt-get install of local .deb files inside `root`. The base carries its apt lists; when the mirror
 * has moved on since the base was cached (a fetch fails), update once and try again.
 */
export async function aptInstall(root: string, ...debs: string[]): Promise<string> {
  const install = `apt-get install -y -q --no-install-recommends ${debs.join(' ')}`;
  const first = await inRoot(root, install);
  if (first.code === 0) return first.stdout;
  return inRootChecked(root, `apt-get update -q && ${install}`);
}

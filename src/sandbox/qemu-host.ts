/**
 * A real-hypervisor "host" for tests, the demo and benchmarks: a private qemu-driver libvirtd in its
 * own mount namespace, booting tiny TCG guests (./qemu-guest.ts, image from ./qemu-image.ts). The
 * test driver (./libvirtd.ts) cannot reboot, crash, suspend to RAM, shut down from inside a guest or
 * migrate; these guests can, so virtbus's stop rules are exercised on the transitions where they matter.
 *
 * API:
 *   const image = await ensureGuestImage();              // {kernel, initrd}, built once, cached
 *   const host = await startQemuHost({ name: 'a' });     // host.uri, host.dir, host.virsh(...)
 *   const guest = await host.defineGuest({ name: 'g1', onCrash: 'preserve' });
 *   await guest.start(); await guest.waitBooted();       // ~8–11 s on TCG (several boot in parallel)
 *   await guest.order('reboot' | 'poweroff' | 'panic' | 'suspend');   // the GUEST acts itself
 *   await host.stop() / kill() / start();                // daemon only: qemu processes keep running
 *   await host.dispose();                                // destroys every guest, removes the dir
 *
 * Why each piece (the recipe docs/testing.md describes, verified on this machine kind):
 * - The daemon runs under `unshare -m` with private directories bind-mounted over /run/libvirt,
 *   /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt and /etc/libvirt: two root libvirtds would
 *   otherwise fight over pid files and share definitions. Bind mounts (not tmpfs) keep the state on
 *   disk under `dir`, so kill() + start() finds the running guests again, as a daemon restart does on
 *   a real host.
 * - qemu.conf runs qemu as root with no security driver, no cgroups and no virtlogd; `host_uuid`
 *   differs per host, or libvirt refuses a migration between two daemons of one machine.
 * - Two hosts run at once; live migration between them (verified, 2–5 s for 128 MiB; guests must be
 *   defined with `control: false`):
 *     virsh -c <a.uri> migrate --live <name> <b.uri> --migrateuri tcp://127.0.0.1:<free port>
 *       --listen-address 127.0.0.1
 *   which host.migrate(name, target) runs (extra virsh options such as '--postcopy' may be added).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import {
  forgetOnExit,
  freePort,
  killOnExit,
  processAlive,
  requireRoot,
  run,
  runChecked,
  waitUntil,
} from './exec';
import { ensureGuestImage } from './qemu-image';
import { ensureQemuUser } from './libvirtd';
import { createGuest, type QemuGuest, type QemuGuestOptions } from './qemu-guest';

export interface QemuHost {
  readonly name: string;
  /** `qemu+unix:///system?socket=<dir>/libvirt-sock`. */
  readonly uri: string;
  readonly dir: string;
  readonly pid: number | undefined;
  running(): boolean;
  /** virsh against this host's daemon; rejects on a non-zero exit. */
  virsh(...args: string[]): Promise<string>;
  /** Defines (or, with persistent: false, prepares) a guest; call guest.start() to boot it. */
  defineGuest(options: QemuGuestOptions): Promise<QemuGuest>;
  /** Live-migrates a running guest to another sandboxed host over TCP on 127.0.0.1. */
  migrate(name: string, target: QemuHost, extraArgs?: readonly string[]): Promise<void>;
  /** SIGTERM the daemon and wait (guests keep running). */
  stop(): Promise<void>;
  /** SIGKILL the daemon and wait (guests keep running). */
  kill(): Promise<void>;
  /** Start the daemon again on the same directories; it reconnects to the running guests. */
  start(): Promise<void>;
  /** Destroys every domain, stops the daemon, kills any qemu left and removes the directory. */
  dispose(): Promise<void>;
}

const STATE_DIRS: ReadonlyArray<[string, string]> = [
  ['run', '/run/libvirt'],
  ['lib', '/var/lib/libvirt'],
  ['cache', '/var/cache/libvirt'],
  ['log', '/var/log/libvirt'],
  ['etc', '/etc/libvirt'],
];

const QEMU_CONF = [
  'user = "root"',
  'group = "root"',
  'dynamic_ownership = 0',
  'remember_owner = 0',
  'security_driver = "none"',
  'stdio_handler = "file"',
  'cgroup_controllers = [ ]',
  '',
].join('\n');

/** The qemu processes this host's daemon started, from its pid files (including migrated-in ones). */
function qemuPids(dir: string): number[] {
  const runDir = join(dir, 'run', 'qemu');
  if (!existsSync(runDir)) return [];
  const pids: number[] = [];
  for (const file of readdirSync(runDir)) {
    if (!file.endsWith('.pid')) continue;
    const pid = Number(readFileSync(join(runDir, file), 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 0) continue;
    // Only a live qemu: a stale pid file must never make us kill an unrelated process.
    const cmdline = (() => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'latin1');
      } catch {
        return '';
      }
    })();
    if (cmdline.includes('qemu-system')) pids.push(pid);
  }
  return pids;
}

function killQemus(dir: string): void {
  for (const pid of qemuPids(dir)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

export async function startQemuHost(options: { name: string; dir?: string }): Promise<QemuHost> {
  requireRoot('the private qemu libvirtd');
  for (const binary of ['/usr/sbin/libvirtd', '/usr/bin/qemu-system-x86_64']) {
    if (!existsSync(binary))
      throw new Error(
        `${binary} is missing: run \`npm run setup\` (it installs qemu-system-x86 and libvirt)`,
      );
  }
  await ensureQemuUser();
  const image = await ensureGuestImage();
  // Short: guest control sockets live here and unix socket paths are limited to 108 bytes.
  const dir = options.dir ?? mkdtempSync(`/tmp/vq-${options.name}-`);
  for (const [sub, target] of STATE_DIRS) {
    mkdirSync(join(dir, sub), { recursive: true });
    mkdirSync(target, { recursive: true });
  }
  const socket = join(dir, 'libvirt-sock');
  const conf = join(dir, 'etc', 'libvirtd.conf');
  writeFileSync(
    conf,
    [
      `unix_sock_dir = "${dir}"`,
      'auth_unix_rw = "none"',
      'auth_unix_ro = "none"',
      'log_outputs = "3:stderr"',
      `host_uuid = "${randomUUID()}"`,
      '',
    ].join('\n'),
  );
  writeFileSync(join(dir, 'etc', 'qemu.conf'), QEMU_CONF);
  const uri = `qemu+unix:///system?socket=${socket}`;
  const mounts = STATE_DIRS.map(([sub, target]) => `mount --bind "${join(dir, sub)}" ${target}`).join(' && ');
  let child: ChildProcess | undefined;
  const guests: QemuGuest[] = [];
  const virsh = (...args: string[]): Promise<string> => runChecked('virsh', ['-q', '-c', uri, ...args]);
  const exitHook = (): void => killQemus(dir);
  process.on('exit', exitHook);

  const start = async (): Promise<void> => {
    rmSync(socket, { force: true });
    const logPath = join(dir, 'libvirtd.log');
    const log = openSync(logPath, 'a');
    // unshare without --fork execs, so the child's pid is libvirtd's own.
    child = spawn(
      'unshare',
      [
        '-m',
        '--propagation',
        'private',
        'sh',
        '-c',
        `${mounts} && exec libvirtd -f "${conf}" -p "${join(dir, 'pid')}"`,
      ],
      { stdio: ['ignore', log, log] },
    );
    closeSync(log);
    const started = child;
    killOnExit(started.pid ?? -1);
    started.on('exit', () => forgetOnExit(started.pid ?? -1));
    await waitUntil(
      `qemu libvirtd ${options.name} (log: ${logPath})`,
      async () => {
        if (started.exitCode !== null)
          throw new Error(`libvirtd exited ${String(started.exitCode)}; see ${logPath}`);
        // The socket appears before the qemu driver has probed qemu's capabilities; a query waits for it.
        return existsSync(socket) && (await run('virsh', ['-q', '-c', uri, 'list', '--all'])).code === 0;
      },
      60000,
      200,
    );
  };

  const waitExit = async (signal: NodeJS.Signals): Promise<void> => {
    const current = child;
    if (!current || current.exitCode !== null || current.signalCode !== null) return;
    const exited = once(current, 'exit');
    current.kill(signal);
    await exited;
  };

  await start();
  const host: QemuHost = {
    name: options.name,
    uri,
    dir,
    get pid() {
      return child?.pid;
    },
    running: () =>
      child !== undefined && child.pid !== undefined && child.exitCode === null && processAlive(child.pid),
    virsh,
    defineGuest: async (guestOptions) => {
      const guest = await createGuest({ dir, virsh }, image, guestOptions);
      guests.push(guest);
      return guest;
    },
    migrate: async (name, target, extraArgs = []) => {
      const port = await freePort();
      await virsh(
        'migrate',
        '--live',
        ...extraArgs,
        name,
        target.uri,
        '--migrateuri',
        `tcp://127.0.0.1:${port}`,
        '--listen-address',
        '127.0.0.1',
      );
    },
    stop: () => waitExit('SIGTERM'),
    kill: () => waitExit('SIGKILL'),
    start,
    dispose: async () => {
      for (const guest of guests) guest.close();
      if (host.running()) {
        const names = (await virsh('list', '--name').catch(() => '')).split('\n').filter(Boolean);
        await Promise.allSettled(names.map((name) => virsh('destroy', name)));
      }
      await waitExit('SIGTERM');
      killQemus(dir);
      process.removeListener('exit', exitHook);
      if (!options.dir) rmSync(dir, { recursive: true, force: true });
    },
  };
  return host;
}

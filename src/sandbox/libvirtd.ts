/**
 * A private libvirtd serving the test driver over its own unix socket. Events then travel over
 * libvirt's remote protocol, keepalive and the close callback are real, and killing the daemon
 * exercises reconnect. Each daemon runs in its own mount namespace with tmpfs over libvirt's state
 * directories, because a second root libvirtd would otherwise fight over /run/libvirt pid files.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  closeSync,
  existsSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import {
  forgetOnExit,
  freePort,
  killOnExit,
  portOpen,
  processAlive,
  requireRoot,
  runChecked,
  waitUntil,
} from './exec';
import { createTestCertificates, type TestCertificates } from './certificates';

export interface LibvirtdSandbox {
  /** `test+unix:///default?socket=…` for read-write clients. */
  readonly uri: string;
  /** With `tls: true`: `test+tls://localhost:<port>/default?pkipath=…` (client certificate included). */
  readonly tlsUri: string | undefined;
  /** With `tls: true`: the generated CA and certificates. */
  readonly certificates: TestCertificates | undefined;
  readonly readOnlyUri: string;
  readonly dir: string;
  readonly pid: number | undefined;
  running(): boolean;
  /** SIGTERM and wait. */
  stop(): Promise<void>;
  /** SIGKILL and wait: the daemon vanishes without closing its clients' sockets cleanly. */
  kill(): Promise<void>;
  /** Start again on the same socket (the test driver's state starts afresh). */
  start(): Promise<void>;
  /** virsh against this daemon, for tests that want an independent client. */
  virsh(...args: string[]): Promise<string>;
  /** stop() and remove the sandbox directory. */
  dispose(): Promise<void>;
}

const STATE_DIRS = ['/run/libvirt', '/var/lib/libvirt', '/var/cache/libvirt'];

/** libvirtd refuses to start until the QEMU driver can resolve its user and group. */
export async function ensureQemuUser(): Promise<void> {
  const groups = await runChecked('getent', ['group']).catch(() => '');
  if (!/^libvirt-qemu:/m.test(groups)) await runChecked('groupadd', ['-r', 'libvirt-qemu']);
  const users = await runChecked('getent', ['passwd']).catch(() => '');
  if (!/^libvirt-qemu:/m.test(users)) {
    await runChecked('useradd', [
      '-r',
      '-g',
      'libvirt-qemu',
      '-d',
      '/var/lib/libvirt',
      '-s',
      '/usr/sbin/nologin',
      'libvirt-qemu',
    ]);
  }
}

export async function startLibvirtd(options: { dir?: string; tls?: boolean } = {}): Promise<LibvirtdSandbox> {
  requireRoot('the private libvirtd');
  if (!existsSync('/usr/sbin/libvirtd')) {
    throw new Error(
      'libvirtd is not installed: run `npm run setup` (apt-get install libvirt-daemon libvirt-clients)',
    );
  }
  await ensureQemuUser();
  for (const dir of STATE_DIRS) mkdirSync(dir, { recursive: true });
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'virtbus-libvirtd-'));
  mkdirSync(dir, { recursive: true });
  const socket = join(dir, 'libvirt-sock');
  const conf = join(dir, 'libvirtd.conf');
  const tlsPort = options.tls ? await freePort() : undefined;
  const certificates = options.tls ? await createTestCertificates(join(dir, 'tls')) : undefined;
  const pkiPath = join(dir, 'client-pki');
  if (certificates) {
    // libvirt's client looks for these names under ?pkipath=.
    mkdirSync(pkiPath, { recursive: true });
    copyFileSync(certificates.caFile, join(pkiPath, 'cacert.pem'));
    copyFileSync(certificates.clientCertFile, join(pkiPath, 'clientcert.pem'));
    copyFileSync(certificates.clientKeyFile, join(pkiPath, 'clientkey.pem'));
  }
  writeFileSync(
    conf,
    [
      `unix_sock_dir = "${dir}"`,
      'auth_unix_rw = "none"',
      'auth_unix_ro = "none"',
      'log_outputs = "3:stderr"',
      ...(certificates && tlsPort !== undefined
        ? [
            'listen_tls = 1',
            'listen_tcp = 0',
            `tls_port = "${tlsPort}"`,
            'listen_addr = "127.0.0.1"',
            `key_file = "${certificates.serverKeyFile}"`,
            `cert_file = "${certificates.serverCertFile}"`,
            `ca_file = "${certificates.caFile}"`,
            'auth_tls = "none"',
          ]
        : []),
      '',
    ].join('\n'),
  );
  const mounts = STATE_DIRS.map((d) => `mount -t tmpfs tmpfs ${d}`).join(' && ');
  let child: ChildProcess | undefined;

  const start = async (): Promise<void> => {
    rmSync(socket, { force: true });
    const log = openSync(join(dir, 'libvirtd.log'), 'a');
    // unshare without --fork execs, so the child's pid is libvirtd's own.
    child = spawn(
      'unshare',
      [
        '-m',
        '--propagation',
        'private',
        'sh',
        '-c',
        `${mounts} && exec libvirtd ${tlsPort === undefined ? '' : '--listen '}-f "${conf}" -p "${join(dir, 'pid')}"`,
      ],
      { stdio: ['ignore', log, log] },
    );
    closeSync(log);
    const started = child;
    killOnExit(started.pid ?? -1);
    started.on('exit', () => forgetOnExit(started.pid ?? -1));
    await waitUntil(
      `libvirtd socket ${socket} (log: ${join(dir, 'libvirtd.log')})`,
      () => {
        if (started.exitCode !== null)
          throw new Error(`libvirtd exited ${String(started.exitCode)}; see ${join(dir, 'libvirtd.log')}`);
        return existsSync(socket);
      },
      15000,
    );
    if (tlsPort !== undefined)
      await waitUntil(`libvirtd TLS port ${tlsPort}`, () => portOpen(tlsPort), 15000);
  };

  const waitExit = async (signal: NodeJS.Signals): Promise<void> => {
    const current = child;
    if (!current || current.exitCode !== null || current.signalCode !== null) return;
    const exited = once(current, 'exit');
    current.kill(signal);
    await exited;
  };

  await start();
  const uri = `test+unix:///default?socket=${socket}`;
  return {
    uri,
    tlsUri: tlsPort === undefined ? undefined : `test+tls://localhost:${tlsPort}/default?pkipath=${pkiPath}`,
    certificates,
    readOnlyUri: `test+unix:///default?socket=${join(dir, 'libvirt-sock-ro')}`,
    dir,
    get pid() {
      return child?.pid;
    },
    running: () =>
      child !== undefined && child.pid !== undefined && child.exitCode === null && processAlive(child.pid),
    stop: () => waitExit('SIGTERM'),
    kill: () => waitExit('SIGKILL'),
    start,
    virsh: (...args: string[]) => runChecked('virsh', ['-q', '-c', uri, ...args]),
    dispose: async () => {
      await waitExit('SIGTERM');
      if (!options.dir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

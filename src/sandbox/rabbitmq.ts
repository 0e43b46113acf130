/**
 * A private RabbitMQ node on free loopback ports, with its own data, logs, config and env file, so it
 * never touches a broker the machine may already run on 5672 (whose /etc/rabbitmq files would
 * otherwise apply). rabbitmq-server drops privileges to user `rabbitmq`, so the sandbox directory is
 * handed to that user.
 */
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
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
import { createTestCertificates, type TestCertificates } from './certificates';

export interface RabbitSandboxOptions {
  /** Also listen for amqps:// with a generated CA and server certificate. */
  readonly tls?: boolean;
  /** Extra plugins to enable, e.g. rabbitmq_management. */
  readonly plugins?: readonly string[];
  /** Node name prefix; a random suffix keeps parallel runs apart. */
  readonly name?: string;
  /** Extra rabbitmq.conf lines (e.g. the shipped deploy/rabbitmq/rabbitmq.conf settings). */
  readonly config?: readonly string[];
}

export interface RabbitSandbox {
  /** amqp://guest:guest@127.0.0.1:<port> (guest may connect over loopback). */
  readonly url: string;
  readonly port: number;
  readonly tlsUrl: string | undefined;
  readonly certificates: TestCertificates | undefined;
  readonly nodeName: string;
  readonly dir: string;
  /** rabbitmqctl against this node. */
  ctl(...args: string[]): Promise<string>;
  running(): boolean;
  /** Graceful stop (data kept: durable queues and persistent messages survive a start()). */
  stop(): Promise<void>;
  /** SIGKILL the Erlang VM. */
  kill(): Promise<void>;
  start(): Promise<void>;
  dispose(): Promise<void>;
}

function rabbitUser(): { uid: number; gid: number } {
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((entry) => entry.startsWith('rabbitmq:'));
  if (!line)
    throw new Error('user rabbitmq does not exist: run `npm run setup` (apt-get install rabbitmq-server)');
  const fields = line.split(':');
  return { uid: Number(fields[2]), gid: Number(fields[3]) };
}

function chownTree(path: string, owner: { uid: number; gid: number }): void {
  execFileSync('chown', ['-R', `${owner.uid}:${owner.gid}`, path]);
}

export async function startRabbitMQ(options: RabbitSandboxOptions = {}): Promise<RabbitSandbox> {
  requireRoot('the private RabbitMQ node');
  if (!existsSync('/usr/sbin/rabbitmq-server')) {
    throw new Error(
      'rabbitmq-server is not installed: run `npm run setup` (apt-get install rabbitmq-server)',
    );
  }
  const owner = rabbitUser();
  const dir = mkdtempSync(join(tmpdir(), 'virtbus-rabbitmq-'));
  chmodSync(dir, 0o755);
  mkdirSync(join(dir, 'mnesia'));
  mkdirSync(join(dir, 'log'));
  const port = await freePort();
  const distPort = await freePort();
  const tlsPort = options.tls ? await freePort() : undefined;
  const nodeName = `${options.name ?? 'virtbus'}-${process.pid}-${port}@localhost`;
  const certificates = options.tls ? await createTestCertificates(join(dir, 'tls')) : undefined;
  const conf = ['loopback_users.guest = false', 'log.console = false', 'log.file.level = warning'];
  if (certificates && tlsPort !== undefined) {
    conf.push(
      `listeners.ssl.default = ${tlsPort}`,
      `ssl_options.cacertfile = ${certificates.caFile}`,
      `ssl_options.certfile = ${certificates.serverCertFile}`,
      `ssl_options.keyfile = ${certificates.serverKeyFile}`,
      'ssl_options.verify = verify_peer',
      'ssl_options.fail_if_no_peer_cert = false',
    );
  }
  conf.push(...(options.config ?? []));
  writeFileSync(join(dir, 'rabbitmq.conf'), conf.join('\n') + '\n');
  writeFileSync(join(dir, 'rabbitmq-env.conf'), '');
  writeFileSync(join(dir, 'enabled_plugins'), `[${(options.plugins ?? []).join(',')}].\n`);
  chownTree(dir, owner);

  const env = {
    ...process.env,
    RABBITMQ_CONF_ENV_FILE: join(dir, 'rabbitmq-env.conf'),
    RABBITMQ_CONFIG_FILE: join(dir, 'rabbitmq.conf'),
    RABBITMQ_NODENAME: nodeName,
    RABBITMQ_NODE_IP_ADDRESS: '127.0.0.1',
    RABBITMQ_NODE_PORT: String(port),
    RABBITMQ_DIST_PORT: String(distPort),
    RABBITMQ_MNESIA_BASE: join(dir, 'mnesia'),
    RABBITMQ_LOG_BASE: join(dir, 'log'),
    RABBITMQ_ENABLED_PLUGINS_FILE: join(dir, 'enabled_plugins'),
    RABBITMQ_PID_FILE: join(dir, 'rabbitmq.pid'),
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: '-kernel inet_dist_use_interface {127,0,0,1}',
    ERL_EPMD_ADDRESS: '127.0.0.1',
  };
  const pidFile = join(dir, 'rabbitmq.pid');
  const readPid = (): number | undefined => {
    try {
      const pid = Number(readFileSync(pidFile, 'utf8').trim());
      return Number.isInteger(pid) && pid > 0 ? pid : undefined;
    } catch {
      return undefined;
    }
  };
  const ctl = (...args: string[]): Promise<string> =>
    runChecked('rabbitmqctl', ['-q', '-n', nodeName, ...args], { env });

  const start = async (): Promise<void> => {
    rmSync(pidFile, { force: true });
    await runChecked('rabbitmq-server', ['-detached'], { env });
    const waited = await run('rabbitmqctl', ['-q', '-n', nodeName, 'wait', '--timeout', '60', pidFile], {
      env,
    });
    const pid = readPid();
    if (pid !== undefined) killOnExit(pid);
    if (waited.code !== 0) {
      throw new Error(
        `RabbitMQ node ${nodeName} did not start (${waited.stderr.trim()}); logs in ${join(dir, 'log')}`,
      );
    }
  };

  const waitGone = async (pid: number | undefined): Promise<void> => {
    if (pid === undefined) return;
    await waitUntil(`RabbitMQ node ${nodeName} to exit`, () => !processAlive(pid), 30000);
    forgetOnExit(pid);
  };

  await start();
  return {
    url: `amqp://guest:guest@127.0.0.1:${port}`,
    port,
    tlsUrl: tlsPort === undefined ? undefined : `amqps://guest:guest@localhost:${tlsPort}`,
    certificates,
    nodeName,
    dir,
    ctl,
    running: () => {
      const pid = readPid();
      return pid !== undefined && processAlive(pid);
    },
    stop: async () => {
      const pid = readPid();
      if (pid === undefined || !processAlive(pid)) return;
      await run('rabbitmqctl', ['-q', '-n', nodeName, 'stop', pidFile], { env });
      await waitGone(pid);
    },
    kill: async () => {
      const pid = readPid();
      if (pid === undefined || !processAlive(pid)) return;
      process.kill(pid, 'SIGKILL');
      await waitGone(pid);
    },
    start,
    dispose: async () => {
      const pid = readPid();
      if (pid !== undefined && processAlive(pid)) {
        await run('rabbitmqctl', ['-q', '-n', nodeName, 'stop', pidFile], { env });
        await waitGone(pid).catch(() => process.kill(pid, 'SIGKILL'));
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

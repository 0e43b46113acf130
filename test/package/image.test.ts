/**
 * The OCI image as a cluster would run it: `scripts/image.sh` builds it (mmdebstrap base + the .deb,
 * assembled by buildah, no registry), the archive it writes is inspected with skopeo (entrypoint,
 * user, labels), and podman runs it twice on the host network as the test harness' own services
 * see it: a bridge container on the private libvirtd's socket (mounted in, owned by the container's
 * group as a node's libvirt socket is) and a consumer container on a SQLite file in a mounted
 * directory, both on a vhost of the run's private RabbitMQ node. Lifecycle events done to the test
 * driver cross the bus and the consumer container's database follows them.
 * podman needs two work-arounds on this machine kind, in packaging/podman-run.sh (hybrid cgroups,
 * no CAP_SYS_RESOURCE).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { chmodSync, chownSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { run, runChecked, waitUntil } from '../../src/sandbox/exec';
import { openStore } from '../../src/store/open';
import { createLogger } from '../../src/util/log';
import { BusRecorder } from '../support/bus';
import { domainXml, openDriver } from '../support/domains';
import { onTeardown, testBroker, testLibvirtd } from '../support/services';
import { REPO, scratchDir } from './support';

const HOST = 'cmp-01.example.org';
const IMAGE_UID = 10001;

/** A container started with packaging/podman-run.sh; stop() sends SIGTERM (podman proxies it). */
interface Container {
  readonly child: ChildProcess;
  readonly logs: Array<Record<string, unknown>>;
  output(): string;
  stop(): Promise<number | null>;
}

function startContainer(image: string, name: string, options: readonly string[], command: string): Container {
  const child = spawn(
    'bash',
    [
      join(REPO, 'packaging', 'podman-run.sh'),
      '--rm',
      '--name',
      name,
      '--network',
      'host',
      ...options,
      image,
      command,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const logs: Array<Record<string, unknown>> = [];
  let text = '';
  let partial = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    text += chunk.toString('utf8');
    partial += chunk.toString('utf8');
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        logs.push({ msg: line });
      }
    }
  });
  child.stderr?.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  onTeardown(async () => {
    if (child.exitCode === null) await run('podman', ['rm', '-f', '-t', '2', name]);
  });
  return {
    child,
    logs,
    // The tail: enough to show why a container failed without flooding the report.
    output: () => text.slice(-4000),
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
}

/** The host-side user and group records of the pod's uid and gid (idempotent). */
async function ensurePodUser(): Promise<void> {
  if ((await run('getent', ['group', String(IMAGE_UID)])).code !== 0)
    await runChecked('groupadd', ['--system', '--gid', String(IMAGE_UID), 'virtbus-pod']);
  if ((await run('getent', ['passwd', String(IMAGE_UID)])).code !== 0)
    await runChecked('useradd', [
      '--system',
      '--uid',
      String(IMAGE_UID),
      '--gid',
      String(IMAGE_UID),
      '--no-create-home',
      '--home-dir',
      '/nonexistent',
      '--shell',
      '/usr/sbin/nologin',
      'virtbus-pod',
    ]);
}

describe('the OCI image, run by podman as bridge and consumer', () => {
  const tag = randomBytes(4).toString('hex');
  const image = `localhost/virtbus-test:${tag}`;
  let archive = '';

  before(async () => {
    const out = scratchDir('virtbus-image-');
    const stdout = await runChecked('bash', [join(REPO, 'scripts', 'image.sh'), out], {
      cwd: REPO,
      env: { ...process.env, VIRTBUS_IMAGE_NAME: image },
    });
    onTeardown(() => run('podman', ['rmi', '-f', image]));
    assert.equal(stdout.trim().split('\n').at(-1), image, 'image.sh prints the image name');
    const version = (
      await runChecked('node', ['-p', 'require("./package.json").version'], { cwd: REPO })
    ).trim();
    archive = join(out, `virtbus-image_${version}.oci.tar`);
  });

  it('the OCI archive carries the entrypoint, the non-root user and the version label', async () => {
    const config = JSON.parse(
      await runChecked('skopeo', ['inspect', '--config', `oci-archive:${archive}`]),
    ) as {
      config: { Entrypoint: string[]; Cmd: string[]; User: string; Labels: Record<string, string> };
      architecture: string;
      os: string;
    };
    assert.deepEqual(config.config.Entrypoint, ['/usr/bin/virtbus']);
    assert.equal(config.config.User, `${IMAGE_UID}:${IMAGE_UID}`, 'the manifests run as uid 10001');
    assert.equal(config.architecture, 'amd64');
    assert.equal(config.os, 'linux');
    assert.match(config.config.Labels['org.opencontainers.image.version'] ?? '', /^\d+\.\d+\.\d+/);
    // The same image is in local storage under the printed name.
    const local = await runChecked('podman', ['image', 'inspect', '--format', '{{.Config.User}}', image]);
    assert.equal(local.trim(), `${IMAGE_UID}:${IMAGE_UID}`);
  });

  it('deploy/kubernetes runs the name scripts/image.sh gives by default, and kustomization maps it', () => {
    const version = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string })
      .version;
    for (const manifest of ['bridge-daemonset.yaml', 'consumer-deployment.yaml']) {
      const text = readFileSync(join(REPO, 'deploy', 'kubernetes', manifest), 'utf8');
      assert.deepEqual(
        [...text.matchAll(/^\s+image: (\S+)$/gm)].map((m) => m[1]),
        [`localhost/virtbus:${version}`],
        manifest,
      );
    }
    const script = readFileSync(join(REPO, 'scripts', 'image.sh'), 'utf8');
    assert.match(script, /name=\$\{VIRTBUS_IMAGE_NAME:-localhost\/virtbus:\$version\}/);
    const kustomization = readFileSync(join(REPO, 'deploy', 'kubernetes', 'kustomization.yaml'), 'utf8');
    assert.match(kustomization, /^ {2}- name: localhost\/virtbus$/m);
    assert.match(kustomization, new RegExp(`^ {4}newTag: ${version.replaceAll('.', '\\.')}$`, 'm'));
  });

  it('runs `virtbus --help` and `virtbus config` as uid 10001 with the image defaults', async () => {
    const help = await run('bash', [
      join(REPO, 'packaging', 'podman-run.sh'),
      '--rm',
      '--network',
      'host',
      image,
    ]);
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /^Usage: virtbus <command>/m);
    const id = await run('bash', [
      join(REPO, 'packaging', 'podman-run.sh'),
      '--rm',
      '--entrypoint',
      'id',
      image,
      '-u',
    ]);
    assert.equal(id.stdout.trim(), String(IMAGE_UID));
    const bad = await run('bash', [
      join(REPO, 'packaging', 'podman-run.sh'),
      '--rm',
      '-e',
      'VIRTBUS_METRICS_PORT=nope',
      image,
      'config',
      '--role',
      'consumer',
    ]);
    assert.equal(bad.code, 2, `bad configuration exits 2: ${bad.stderr}`);
    assert.match(bad.stderr, /metrics\.port/);
  });

  it('a bridge container and a consumer container carry libvirt events across the bus into the database', async () => {
    const [libvirtd, broker] = await Promise.all([testLibvirtd(), testBroker()]);
    // libvirtd looks up every client's uid (getpwuid) and refuses one without a user record ("Failed
    // to find user record for uid '10001'"): a hypervisor node running the pod needs that user, as
    // docs/operations.md says; here it is made the way the harness makes libvirt-qemu.
    await ensurePodUser();
    // The node's libvirt socket is root:libvirt 0770 and the pod joins the libvirt group: here the
    // container's own group stands in for it.
    chmodSync(libvirtd.dir, 0o711);
    chownSync(join(libvirtd.dir, 'libvirt-sock'), 0, IMAGE_UID);
    chmodSync(join(libvirtd.dir, 'libvirt-sock'), 0o770);
    const data = scratchDir('virtbus-image-db-');
    mkdirSync(join(data, 'db'));
    chownSync(join(data, 'db'), IMAGE_UID, IMAGE_UID);
    const dbUrl = `sqlite:${join(data, 'db', 'virtbus.db')}`;
    const containerDb = 'sqlite:/var/lib/virtbus/db/virtbus.db';

    const driver = await openDriver(libvirtd.uri);
    after(() => driver.close());
    const domain = await driver.defineXML(domainXml(`img-${tag}`));
    assert.ok(domain);
    await driver.start(domain.uuid);

    const store = openStore(
      { url: dbUrl, poolSize: 1, sqliteSynchronous: 'full', busyTimeoutMs: 5000 },
      createLogger('silent', 'test'),
    );
    after(() => store.close());
    await store.upsert([
      {
        uuid: domain.uuid,
        host: HOST,
        vm_state: 'active',
        task_state: null,
        power_state: 1,
        launched_at: '2026-01-01T00:00:00.000000Z',
      },
    ]);
    // The rows were written as root: hand the database (and its -wal/-shm) to the container's user.
    for (const file of readdirSync(join(data, 'db'))) chownSync(join(data, 'db', file), IMAGE_UID, IMAGE_UID);

    const common = [
      '-e',
      `VIRTBUS_AMQP_URL=${broker.url}`,
      '-e',
      'VIRTBUS_METRICS_PORT=0',
      '-e',
      'VIRTBUS_LOG_LEVEL=debug',
      // One shared broker user (guest) here: the lax sender check the other suites use.
      '-e',
      'VIRTBUS_CONSUMER_SENDERS=routing-key',
      '-e',
      'VIRTBUS_COMMANDS_TRUSTED_USER=guest',
    ];
    const consumer = startContainer(
      image,
      `virtbus-consumer-${tag}`,
      [...common, '-v', `${join(data, 'db')}:/var/lib/virtbus/db`, '-e', `VIRTBUS_DB_URL=${containerDb}`],
      'consumer',
    );
    await waitUntil(
      'the consumer container to consume',
      () => consumer.logs.some((line) => line.msg === 'consuming'),
      60_000,
    ).catch((error: unknown) => {
      throw new Error(`${String(error)}\n${consumer.output()}`);
    });
    // After the consumer declared the exchange (with its alternate exchange): a plain declaration first
    // would make the consumer's own fail as inequivalent.
    const spectator = await BusRecorder.listen(broker.url, 'virtbus.lifecycle', ['#'], {
      arguments: { 'alternate-exchange': 'virtbus.unroutable' },
    });
    after(() => spectator.close());
    const bridge = startContainer(
      image,
      `virtbus-bridge-${tag}`,
      [
        ...common,
        '-v',
        `${libvirtd.dir}:${libvirtd.dir}`,
        '-e',
        `VIRTBUS_LIBVIRT_URI=${libvirtd.uri}`,
        '-e',
        `VIRTBUS_HOST=${HOST}`,
        '-e',
        'VIRTBUS_BRIDGE_DECLARE_TOPOLOGY=true',
        '-e',
        'VIRTBUS_STOP_DELAY_MS=500',
      ],
      'bridge',
    );

    // The bridge is listening once its start snapshot (sync … sync_end) is on the bus.
    await spectator
      .waitFor(
        'the start snapshot from the bridge container',
        (messages) => messages.some((m) => m.body.transition === 'sync_end'),
        60_000,
      )
      .catch((error: unknown) => {
        throw new Error(`${String(error)}\n${bridge.output()}`);
      });
    await driver.suspend(domain.uuid);
    await spectator
      .waitFor(
        'the paused event from the bridge container',
        (messages) =>
          messages.some((m) => m.body.instance_uuid === domain.uuid && m.body.transition === 'paused'),
        60_000,
      )
      .catch((error: unknown) => {
        throw new Error(`${String(error)}\n${bridge.output()}`);
      });
    await waitUntil(
      'the consumer container to record PAUSED (3)',
      async () => (await store.get(domain.uuid))?.power_state === 3,
      30_000,
    ).catch((error: unknown) => {
      throw new Error(`${String(error)}\n${consumer.output()}`);
    });
    await driver.resume(domain.uuid);
    await waitUntil(
      'the consumer container to record RUNNING (1) again',
      async () => (await store.get(domain.uuid))?.power_state === 1,
      30_000,
    );
    const carried = spectator
      .filter((m) => m.body.instance_uuid === domain.uuid)
      .map((m) => m.body.transition);
    assert.ok(carried.includes('paused') && carried.includes('resumed'), carried.join(', '));
    assert.ok(
      spectator.messages.every((m) => m.routingKey.startsWith('cmp-01_example_org.')),
      'published as the configured host',
    );

    // SIGTERM through podman: both stop cleanly (exit 0), as a pod's termination would.
    assert.equal(await bridge.stop(), 0, bridge.output());
    assert.equal(await consumer.stop(), 0, consumer.output());
  });
});

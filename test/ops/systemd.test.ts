/**
 * deploy/systemd: the bridge and consumer units checked by systemd's own tools (`systemd-analyze
 * verify` and `systemd-analyze security --offline`, which need no running systemd), their hardening
 * directives asserted one by one, their environment fed to `virtbus config` as the unit would give
 * it, and the sysusers file applied to a scratch root.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../../src/sandbox/exec';
import { configEnvNames, deployFile, readDeploy, REPO, requireTool } from '../support/deploy';

type Unit = Map<string, Map<string, string[]>>;

/** Parses a unit file: section → key → values in order (keys may repeat). */
function parseUnit(text: string): Unit {
  const unit: Unit = new Map();
  let section: Map<string, string[]> | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header?.[1]) {
      section = unit.get(header[1]) ?? new Map<string, string[]>();
      unit.set(header[1], section);
      continue;
    }
    const eq = line.indexOf('=');
    assert.ok(section && eq > 0, `unit line outside a section or without '=': ${line}`);
    const key = line.slice(0, eq).trim();
    const values = section.get(key) ?? [];
    values.push(line.slice(eq + 1).trim());
    section.set(key, values);
  }
  return unit;
}

const UNITS = {
  bridge: 'virtbus-bridge.service',
  consumer: 'virtbus-consumer.service',
} as const;
type Role = keyof typeof UNITS;

function service(role: Role): Map<string, string[]> {
  const section = parseUnit(readDeploy('systemd', UNITS[role])).get('Service');
  assert.ok(section, `${UNITS[role]} has a [Service] section`);
  return section;
}

function one(section: Map<string, string[]>, key: string): string | undefined {
  const values = section.get(key);
  return values?.[values.length - 1];
}

/** Environment= assignments of a unit (NAME=value pairs, in order). */
function unitEnvironment(section: Map<string, string[]>): Map<string, string> {
  const env = new Map<string, string>();
  for (const value of section.get('Environment') ?? []) {
    const eq = value.indexOf('=');
    env.set(value.slice(0, eq), value.slice(eq + 1));
  }
  return env;
}

/** NAME=value lines of an environment file (comments and blanks skipped). */
function envFile(text: string): Map<string, string> {
  const env = new Map<string, string>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    assert.ok(eq > 0, `environment file line without '=': ${line}`);
    env.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return env;
}

describe('deploy/systemd units', () => {
  let systemdAnalyze: string;
  let scratch: string;

  before(() => {
    systemdAnalyze = requireTool('systemd-analyze', 'systemd');
    scratch = mkdtempSync(join(tmpdir(), 'virtbus-systemd-'));
  });
  after(() => rmSync(scratch, { recursive: true, force: true }));

  /**
   * The units as installed under a prefix: /opt/virtbus (the documented install location) becomes
   * this checkout, so verify checks that ExecStart names a real, executable virtbus.
   */
  function installedCopy(): string {
    const dir = join(scratch, 'units');
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir);
    for (const unit of Object.values(UNITS)) {
      writeFileSync(join(dir, unit), readDeploy('systemd', unit).replaceAll('/opt/virtbus', REPO));
    }
    cpSync(deployFile('systemd', 'virtbus-consumer.service.d'), join(dir, 'virtbus-consumer.service.d'), {
      recursive: true,
    });
    return dir;
  }

  it('systemd-analyze verify accepts both units and the PostgreSQL drop-in without a single warning', async () => {
    const dir = installedCopy();
    const result = await run(systemdAnalyze, [
      'verify',
      ...Object.values(UNITS).map((unit) => join(dir, unit)),
    ]);
    assert.equal(result.code, 0, `systemd-analyze verify failed:\n${result.stderr}${result.stdout}`);
    // verify reports unknown keys, bad values and missing executables on stderr yet exits 0.
    assert.equal(result.stderr.trim(), '', `systemd-analyze verify warnings:\n${result.stderr}`);
  });

  it('systemd-analyze verify does notice a broken unit (the check is not vacuous)', async () => {
    const dir = installedCopy();
    const broken = join(dir, 'broken.service');
    writeFileSync(
      broken,
      readFileSync(join(dir, UNITS.bridge), 'utf8')
        .replace('ProtectSystem=strict', 'ProtectSystem=strict\nProtectSytem=yes')
        .replace(`${REPO}/bin/virtbus`, `${REPO}/bin/no-such-virtbus`),
    );
    const result = await run(systemdAnalyze, ['verify', broken]);
    assert.match(result.stderr, /Unknown key 'ProtectSytem'/);
    assert.match(result.stderr, /no-such-virtbus/);
  });

  for (const role of ['bridge', 'consumer'] as const) {
    it(`systemd-analyze security rates the ${role} unit's exposure below 2.0 ("OK")`, async () => {
      const dir = installedCopy();
      const result = await run(systemdAnalyze, [
        'security',
        '--offline=yes',
        '--no-pager',
        join(dir, UNITS[role]),
      ]);
      const text = `${result.stdout}\n${result.stderr}`;
      const match = /Overall exposure level for \S+: ([\d.]+) (\w+)/.exec(text);
      assert.ok(match, `no exposure level in systemd-analyze security output:\n${text}`);
      const exposure = Number(match[1]);
      assert.ok(exposure < 2.0, `${UNITS[role]} exposure ${exposure} ${match[2]} (want < 2.0):\n${text}`);
    });
  }

  it('both units carry the hardening directives', () => {
    const expected: Record<string, string> = {
      NoNewPrivileges: 'yes',
      ProtectSystem: 'strict',
      ProtectHome: 'yes',
      PrivateTmp: 'yes',
      PrivateDevices: 'yes',
      CapabilityBoundingSet: '',
      AmbientCapabilities: '',
      ProtectKernelTunables: 'yes',
      ProtectKernelModules: 'yes',
      ProtectControlGroups: 'yes',
      RestrictNamespaces: 'yes',
      RestrictSUIDSGID: 'yes',
      LockPersonality: 'yes',
      RestrictAddressFamilies: 'AF_UNIX AF_INET AF_INET6',
      SystemCallArchitectures: 'native',
      Restart: 'on-failure',
      RestartPreventExitStatus: '2',
      KillSignal: 'SIGTERM',
    };
    for (const role of ['bridge', 'consumer'] as const) {
      const section = service(role);
      for (const [key, value] of Object.entries(expected)) {
        assert.equal(one(section, key), value, `${UNITS[role]}: ${key}`);
      }
      assert.deepEqual(section.get('SystemCallFilter'), ['@system-service', '~@privileged'], UNITS[role]);
      assert.notEqual(one(section, 'User'), 'root', `${UNITS[role]} runs as its own user`);
      assert.equal(one(section, 'User'), 'virtbus');
      assert.ok(!section.has('DynamicUser'), 'a static user: polkit checks its libvirt membership by name');
    }
  });

  it('ExecStart runs the virtbus executable with the right subcommand', () => {
    for (const role of ['bridge', 'consumer'] as const) {
      assert.deepEqual(service(role).get('ExecStart'), [`/opt/virtbus/bin/virtbus ${role}`]);
    }
  });

  it('the only writable path is each unit’s state directory', () => {
    for (const role of ['bridge', 'consumer'] as const) {
      const section = service(role);
      assert.equal(one(section, 'StateDirectory'), `virtbus-${role}`);
      assert.equal(one(section, 'WorkingDirectory'), `/var/lib/virtbus-${role}`);
      for (const key of [
        'ReadWritePaths',
        'BindPaths',
        'LogsDirectory',
        'CacheDirectory',
        'RuntimeDirectory',
      ]) {
        assert.ok(!section.has(key), `${UNITS[role]} must not add writable paths (${key})`);
      }
    }
    const outbox = unitEnvironment(service('bridge')).get('VIRTBUS_OUTBOX_DIR');
    assert.equal(outbox, '/var/lib/virtbus-bridge/outbox', 'the outbox journal lives in the state directory');
    const db = unitEnvironment(service('consumer')).get('VIRTBUS_DB_URL');
    assert.equal(db, 'sqlite:/var/lib/virtbus-consumer/virtbus.db', 'SQLite lives in the state directory');
  });

  it('only the bridge joins the libvirt group (the socket is root:libvirt 0770), and it keeps that group mapped', () => {
    const bridge = service('bridge');
    assert.equal(one(bridge, 'SupplementaryGroups'), 'libvirt');
    assert.equal(one(bridge, 'PrivateUsers'), 'no', 'PrivateUsers would unmap the libvirt group');
    const consumer = service('consumer');
    assert.ok(!consumer.has('SupplementaryGroups'));
    assert.equal(one(consumer, 'PrivateUsers'), 'yes');
  });

  it('secrets arrive through LoadCredential as *_FILE; environment files hold only VIRTBUS_* names the schema knows', () => {
    const names = configEnvNames();
    const checkEnv = (where: string, env: Map<string, string>): void => {
      for (const [name, value] of env) {
        if (!name.startsWith('VIRTBUS_')) continue;
        const known = names.get(name);
        assert.ok(known, `${where}: ${name} is not a configuration variable in src/config/schema.ts`);
        // A secret comes from a file; the one sensitive value that is no secret is a SQLite path.
        if (known.sensitive && !name.endsWith('_FILE'))
          assert.ok(
            value.startsWith('sqlite:'),
            `${where}: secret ${name} must come from a file (${name}_FILE)`,
          );
        assert.ok(!/:[^/@:]+@/.test(value), `${where}: ${name} carries credentials`);
      }
    };
    for (const role of ['bridge', 'consumer'] as const) {
      const section = service(role);
      const env = unitEnvironment(section);
      checkEnv(UNITS[role], env);
      const credentials = new Map(
        (section.get('LoadCredential') ?? []).map((value) => {
          const [id, path] = value.split(':');
          return [id, path] as const;
        }),
      );
      assert.equal(credentials.get('amqp-url'), '/etc/virtbus/credentials/amqp-url');
      assert.equal(env.get('VIRTBUS_AMQP_URL_FILE'), '%d/amqp-url');
      assert.deepEqual(section.get('EnvironmentFile'), [`/etc/virtbus/${role}.env`]);
      checkEnv(`${role}.env.example`, envFile(readDeploy('systemd', `${role}.env.example`)));
    }
    const dropIn = parseUnit(readDeploy('systemd', 'virtbus-consumer.service.d', 'postgres.conf')).get(
      'Service',
    );
    assert.ok(dropIn);
    assert.deepEqual(dropIn.get('LoadCredential'), ['db-url:/etc/virtbus/credentials/db-url']);
    checkEnv('postgres.conf', unitEnvironment(dropIn));
    assert.equal(unitEnvironment(dropIn).get('VIRTBUS_DB_URL_FILE'), '%d/db-url');
  });

  for (const role of ['bridge', 'consumer'] as const) {
    it(`the ${role} unit's environment (unit + example env file + credential) is a valid configuration for virtbus config --role ${role}`, async () => {
      const credentials = join(scratch, `credentials-${role}`);
      mkdirSync(credentials, { recursive: true });
      writeFileSync(
        join(credentials, 'amqp-url'),
        'amqp://virtbus-bridge:s3cret@rabbitmq.example.org:5672/virtbus\n',
      );
      // systemd's order: Environment= and EnvironmentFile= in unit order; the file comes after here.
      const env: NodeJS.ProcessEnv = Object.fromEntries(
        Object.entries(process.env).filter(([name]) => !name.startsWith('VIRTBUS_')),
      );
      for (const [name, value] of unitEnvironment(service(role)))
        env[name] = value.replaceAll('%d', credentials);
      for (const [name, value] of envFile(readDeploy('systemd', `${role}.env.example`))) env[name] = value;
      const result = await run(process.execPath, [join(REPO, 'bin', 'virtbus'), 'config', '--role', role], {
        env,
      });
      assert.equal(result.code, 0, `virtbus config --role ${role}: ${result.stderr}`);
      const config = JSON.parse(result.stdout) as {
        amqp: { url: string };
        metrics: { host: string; port: number };
        libvirt: { uri: string };
        db: { url: string };
      };
      assert.equal(config.amqp.url, 'amqp://virtbus-bridge:*****@rabbitmq.example.org:5672/virtbus');
      assert.ok(!result.stdout.includes('s3cret'), 'the password is redacted');
      assert.equal(config.metrics.port, role === 'bridge' ? 9478 : 9479);
      if (role === 'bridge') assert.equal(config.libvirt.uri, 'qemu:///system');
      else assert.equal(config.db.url, 'sqlite:/var/lib/virtbus-consumer/virtbus.db');
    });
  }

  it('systemd-sysusers creates user virtbus as a member of group libvirt', async () => {
    const sysusers = requireTool('systemd-sysusers', 'systemd');
    const root = join(scratch, 'root');
    mkdirSync(join(root, 'etc'), { recursive: true });
    writeFileSync(join(root, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
    writeFileSync(join(root, 'etc', 'group'), 'root:x:0:\nlibvirt:x:990:\n');
    const result = await run(sysusers, [`--root=${root}`, deployFile('systemd', 'virtbus.sysusers.conf')]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(
      readFileSync(join(root, 'etc', 'passwd'), 'utf8'),
      /^virtbus:x:\d+:\d+:[^:]*:[^:]*:\/usr\/sbin\/nologin$/m,
    );
    assert.match(readFileSync(join(root, 'etc', 'group'), 'utf8'), /^libvirt:x:990:virtbus$/m);
  });
});

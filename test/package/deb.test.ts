/**
 * The Debian package as an operator meets it: `scripts/package.sh` builds it, apt installs it into a
 * fresh Debian 12 root file system (mmdebstrap, Debian's own apt sources, no Node.js, no compiler)
 * with its dependencies resolved from the mirror; the installed `virtbus` runs on the bundled Node
 * runtime, the installed units pass `systemd-analyze verify`, nothing is enabled or started. Then the
 * life cycle: the same tree packaged with a lower version is installed first and given real state
 * (an outbox journal with unconfirmed records, an instance database written by the installed
 * `virtbus instances import`, an edited conffile); the upgrade keeps all of it, remove keeps the
 * state and the configuration, purge deletes them.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { JournalOutbox } from '../../src/bridge/journal-outbox';
import { run } from '../../src/sandbox/exec';
import { aptInstall, buildDeb, freshDebianRoot, inRoot, inRootChecked, scratchDir } from './support';

const VERSION = (
  JSON.parse(readFileSync(join(__dirname, '..', '..', '..', 'package.json'), 'utf8')) as {
    version: string;
  }
).version;
/** The same tree, packaged with a version dpkg orders before VERSION. */
const OLDER = `${VERSION}~prev1`;
const UNITS = ['virtbus-bridge.service', 'virtbus-consumer.service'];
const JOURNAL = 'var/lib/virtbus-bridge/outbox';
const DB = '/var/lib/virtbus-consumer/virtbus.db';

describe('the Debian package on a fresh Debian 12', () => {
  let root = '';
  let current = '';
  let older = '';
  const rowUuid = randomUUID();
  const journalIds = ['msg-1', 'msg-2', 'msg-3'];

  before(async () => {
    const out = scratchDir('virtbus-deb-');
    // One after the other: both builds stage in memory and two cores are shared.
    current = await buildDeb(join(out, 'current'));
    older = await buildDeb(join(out, 'older'), OLDER);
    root = await freshDebianRoot(scratchDir('virtbus-root-'));
    for (const deb of [current, older]) {
      const name = deb.split('/').at(-1) ?? '';
      writeFileSync(join(root, 'tmp', name), readFileSync(deb));
    }
  });

  it('is named virtbus_<version>_amd64.deb and depends on runtime libraries only (libvirt0, no nodejs, no compiler)', async () => {
    assert.match(current, new RegExp(`/virtbus_${VERSION.replaceAll('.', '\\.')}_amd64\\.deb$`));
    const fields = await run('dpkg-deb', [
      '-f',
      current,
      'Package',
      'Version',
      'Architecture',
      'Depends',
      'Suggests',
    ]);
    assert.equal(fields.code, 0, fields.stderr);
    assert.match(fields.stdout, /^Version: 0\.1\.0$/m);
    assert.match(fields.stdout, /^Architecture: amd64$/m);
    const depends = /^Depends: (.*)$/m.exec(fields.stdout)?.[1] ?? '';
    assert.match(depends, /\blibvirt0 \(>= [\d.~a-z]+\)/);
    assert.match(depends, /\blibc6\b/);
    for (const build of ['nodejs', 'libvirt-dev', 'g\\+\\+', 'gcc', 'make', 'python3'])
      assert.doesNotMatch(depends, new RegExp(`(^|[ ,|])${build}\\b`), `Depends names ${build}`);
    // The demo's needs are suggestions, never requirements.
    for (const suggested of ['libvirt-daemon', 'rabbitmq-server']) {
      assert.match(fields.stdout, new RegExp(`^Suggests: .*\\b${suggested}\\b`, 'm'));
      assert.doesNotMatch(depends, new RegExp(`\\b${suggested}\\b`));
    }
    const conffiles = await run('dpkg-deb', ['-I', current, 'conffiles']);
    assert.deepEqual(conffiles.stdout.trim().split('\n'), [
      '/etc/virtbus/bridge.env',
      '/etc/virtbus/consumer.env',
    ]);
    const listing = await run('dpkg-deb', ['-c', current]);
    assert.doesNotMatch(listing.stdout, /\/dist\/test\//, 'no tests shipped');
    assert.doesNotMatch(
      listing.stdout,
      /node_modules\/(typescript|eslint|prettier|node-gyp)\//,
      'no dev dependencies',
    );
    assert.match(listing.stdout, /\.\/opt\/virtbus\/node\/bin\/node$/m, 'the Node runtime is bundled');
    assert.match(listing.stdout, /\.\/opt\/virtbus\/native\/build\/Release\/virtbus_native\.node$/m);
  });

  it('apt installs it (the lower version of the same tree) with its dependencies from the mirror', async () => {
    const before = await inRoot(root, 'command -v node nodejs gcc g++ make; test -e /usr/include/libvirt');
    assert.equal(before.stdout.trim(), '', 'the fresh root has no Node.js and no compiler');
    await aptInstall(root, `/tmp/virtbus_${OLDER}_amd64.deb`);
    const status = await inRootChecked(root, "dpkg-query -W -f='${Version} ${Status}\\n' virtbus libvirt0");
    assert.match(status, new RegExp(`^${OLDER.replaceAll('.', '\\.')} install ok installed$`, 'm'));
    const after = await inRoot(root, 'command -v node nodejs gcc g++ make cc');
    assert.equal(after.stdout.trim(), '', `no Node.js or compiler came along: ${after.stdout}`);
  });

  it('`virtbus --help` and `virtbus config` run on the bundled Node 20', async () => {
    const help = await inRootChecked(root, 'virtbus --help');
    assert.match(help, /^Usage: virtbus <command>/m);
    assert.match(help, /^ {2}bridge /m);
    const node = await inRootChecked(
      root,
      'head -n1 /opt/virtbus/bin/virtbus; /opt/virtbus/node/bin/node -v',
    );
    assert.match(node, /^#!\/opt\/virtbus\/node\/bin\/node\nv20\.\d+\.\d+\n$/);
    const config = await inRootChecked(
      root,
      'VIRTBUS_AMQP_URL=amqp://u:s3cret@broker:5672 virtbus config --role bridge --libvirt-uri test:///default',
    );
    const parsed = JSON.parse(config) as { libvirt: { uri: string }; amqp: { url: string } };
    assert.equal(parsed.libvirt.uri, 'test:///default');
    assert.doesNotMatch(config, /s3cret/, 'secrets redacted');
    // Bad configuration still exits 2 naming the key, from the installed tree.
    const bad = await inRoot(root, 'VIRTBUS_METRICS_PORT=nope virtbus config --role bridge');
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /metrics\.port/);
  });

  it('the installed units pass systemd-analyze verify; the user exists; nothing is enabled or started', async () => {
    const verify = await inRoot(
      root,
      `systemd-analyze verify ${UNITS.map((u) => `/lib/systemd/system/${u}`).join(' ')}`,
    );
    assert.equal(verify.code, 0, `verify:\n${verify.stderr}${verify.stdout}`);
    assert.equal(verify.stderr.trim(), '', `systemd-analyze verify warnings:\n${verify.stderr}`);
    const unitText = await inRootChecked(root, `cat /lib/systemd/system/${UNITS[0]}`);
    assert.match(unitText, /^ExecStart=\/opt\/virtbus\/bin\/virtbus bridge$/m);
    const user = await inRootChecked(root, 'id virtbus; getent passwd virtbus');
    assert.match(user, /groups=.*\(libvirt\)/, 'virtbus is in group libvirt (sysusers)');
    assert.match(user, /:\/usr\/sbin\/nologin$/m);
    const enabled = await inRoot(root, 'ls /etc/systemd/system/*.wants/ | grep virtbus');
    assert.equal(enabled.stdout.trim(), '', 'no unit enabled on install');
    const states = await inRootChecked(
      root,
      'stat -c "%U:%G %a %n" /var/lib/virtbus-bridge /var/lib/virtbus-consumer /etc/virtbus/credentials',
    );
    assert.match(states, /^virtbus:virtbus 750 \/var\/lib\/virtbus-bridge$/m);
    assert.match(states, /^root:root 700 \/etc\/virtbus\/credentials$/m);
  });

  it('ships `virtbus demo`, which names what it is missing (the Suggests) instead of failing obscurely', async () => {
    const demo = await inRoot(root, 'virtbus demo --no-color </dev/null');
    assert.notEqual(demo.code, 0);
    assert.match(
      demo.stderr,
      /libvirtd is not installed.*rabbitmq-server is not installed.*apt-get install libvirt-daemon libvirt-clients rabbitmq-server/,
    );
  });

  it('an upgrade to the current build keeps the outbox journal, the database and an edited conffile', async () => {
    // Real state: unconfirmed records in the journal, a row written by the installed virtbus.
    const journal = await JournalOutbox.open({ dir: join(root, JOURNAL), fsyncIntervalMs: 0 });
    await journal.append(
      journalIds.map((messageId, i) => ({
        exchange: 'virtbus.lifecycle',
        routingKey: `cmp-01_example_org.${messageId}.started`,
        messageId,
        type: 'virtbus.lifecycle.v1',
        occurredMicros: 1_700_000_000_000_000 + i,
        transition: 'started',
        body: Buffer.from(JSON.stringify({ i })),
      })),
    );
    await journal.close();
    const rows = JSON.stringify([
      {
        uuid: rowUuid,
        host: 'cmp-01',
        vm_state: 'active',
        task_state: null,
        power_state: 1,
        launched_at: null,
      },
    ]);
    await inRootChecked(
      root,
      `chown -R virtbus:virtbus /${JOURNAL} && echo '${rows}' > /tmp/rows.json && ` +
        `runuser -u virtbus -- env VIRTBUS_DB_URL=sqlite:${DB} virtbus instances import /tmp/rows.json && ` +
        `echo 'VIRTBUS_LOG_LEVEL=debug # local edit' >> /etc/virtbus/bridge.env`,
    );

    await aptInstall(root, `/tmp/virtbus_${VERSION}_amd64.deb`);
    const status = await inRootChecked(root, "dpkg-query -W -f='${Version}' virtbus");
    assert.equal(status, VERSION, 'upgraded');

    const listed = await inRootChecked(
      root,
      `runuser -u virtbus -- env VIRTBUS_DB_URL=sqlite:${DB} virtbus instances list --json`,
    );
    const kept = JSON.parse(listed) as Array<{ uuid: string; vm_state: string; power_state: number }>;
    assert.deepEqual(
      kept.map((r) => [r.uuid, r.vm_state, r.power_state]),
      [[rowUuid, 'active', 1]],
    );
    const reopened = await JournalOutbox.open({ dir: join(root, JOURNAL), fsyncIntervalMs: 0 });
    try {
      assert.equal(reopened.depth, journalIds.length, 'every unconfirmed record is still there');
      assert.deepEqual(
        reopened.readAfter(0, 10).map((record) => record.messageId),
        journalIds,
      );
    } finally {
      await reopened.close();
    }
    const env = await inRootChecked(root, 'cat /etc/virtbus/bridge.env');
    assert.match(env, /# local edit$/m, 'the edited conffile survived the upgrade');
  });

  it('remove keeps the journal, the database and /etc/virtbus; purge deletes them', async () => {
    await inRootChecked(root, 'apt-get remove -y -q virtbus');
    const removed = await inRoot(
      root,
      'command -v virtbus; ls /opt/virtbus 2>/dev/null; ls /lib/systemd/system | grep virtbus',
    );
    assert.equal(removed.stdout.trim(), '', `remove left program files: ${removed.stdout}`);
    for (const path of [JOURNAL, DB.slice(1), 'etc/virtbus/bridge.env'])
      assert.ok(existsSync(join(root, path)), `remove kept /${path}`);

    await inRootChecked(root, 'dpkg --purge virtbus');
    for (const path of ['var/lib/virtbus-bridge', 'var/lib/virtbus-consumer', 'etc/virtbus'])
      assert.ok(!existsSync(join(root, path)), `purge deleted /${path}`);
    const status = await inRoot(root, 'dpkg-query -W -f="${Status}" virtbus');
    assert.doesNotMatch(status.stdout, /installed/);
  });
});

/**
 * `virtbus demo --hypervisor qemu` plays its story on real QEMU guests end to end — a real boot, a
 * reboot the guest does itself, a live migration between the two hosts and a guest panic — exits 0
 * and leaves nothing running. The output is the evidence: the bus lines, the commands and the
 * instance table the demo prints.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { VIRTBUS_BIN } from '../support/bridge-process';

describe('virtbus demo --hypervisor qemu', () => {
  it('plays the story on real guests and two hosts, and cleans up', async () => {
    const child = spawn(
      process.execPath,
      [VIRTBUS_BIN, 'demo', '--hypervisor', 'qemu', '--stop-delay-ms', '2000', '--no-color'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (out += chunk.toString()));
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, 0, out);
    const lines = out.split('\n');
    const at = (pattern: RegExp): number => lines.findIndex((line) => pattern.test(line));
    for (const step of ['1. boot', '2. web-1 reboots itself', '3. live-migrate db-1', '4. web-1 panics'])
      assert.ok(out.includes(step), `step "${step}" shown`);

    // A real boot: RESUMED before STARTED.
    const resumed = at(/bus ▸ \S+ demo-a instance-00000001 resumed\s+RESUMED\/UNPAUSED/);
    const started = at(/bus ▸ \S+ demo-a instance-00000001 started\s+STARTED\/BOOTED power=running/);
    assert.ok(resumed >= 0 && started > resumed, 'resumed, then started');
    // The guest's own reboot: REBOOT only, no stop.
    assert.match(out, /bus ▸ \S+ demo-a instance-00000001 rebooted\s+REBOOT\/-/);
    const panic = at(/4\. web-1 panics/);
    assert.ok(
      !lines.slice(0, panic).some((line) => /instance-00000001 stopped/.test(line)),
      'no stopped for web-1 before its panic',
    );

    // Live migration: the destination reports the guest, it runs there, nobody is told to stop it.
    assert.match(out, /bus ▸ \S+ demo-b instance-00000002 (started|resumed)\s+(STARTED|RESUMED)\/MIGRATED/);
    assert.match(out, /bus ▸ \S+ demo-a instance-00000002 stopped\s+STOPPED\/MIGRATED/);
    assert.match(out, /domstate instance-00000002\s+→\s+running/);
    assert.match(out, /no stop or force_stop was sent for db-1 to either host/);
    assert.ok(!/cmd ▸ .* 22222222/.test(out), 'no command for db-1');
    // Both hosts' word moved the row (consumer.followMigrations, on by default).
    assert.match(out, /the row followed the guest: host demo-b/);
    assert.match(out, /instance-00000002\s+db-1\s+demo-b\s+active\s+-\s+1 running/);

    // The panic: crashed, then the held STOPPED, then Nova's stop; the row and the domain end off.
    assert.match(out, /bus ▸ \S+ demo-a instance-00000001 crashed\s+CRASHED\/PANICKED/);
    assert.match(
      out,
      /bus ▸ \S+ demo-a instance-00000001 stopped\s+STOPPED\/CRASHED power=shutdown delayed=2\d{3}ms/,
    );
    assert.match(out, /cmd ▸ demo-a\.stop stop 11111111/);
    assert.match(out, /instance-00000001\s+web-1\s+demo-a\s+stopped\s+-\s+4 shutdown\s+stop_completed/);
    assert.match(out, /domstate instance-00000001\s+→\s+shut off/);

    assert.match(out, /removed everything the demo started/);
    const dir = /sandbox directory (\S+);/.exec(out)?.[1];
    assert.ok(dir && !existsSync(dir), 'the sandbox directory is gone');
    for (const host of out.matchAll(/socket=(\/tmp\/vq-demo-[ab]-[^/]+)\/libvirt-sock/g))
      assert.ok(!existsSync(host[1]!), `${host[1]} is gone`);
  });
});

/**
 * `virtbus demo --hypervisor qemu`: the demo's story on real QEMU guests (TCG) under two private
 * qemu libvirtds — two "hosts", each with its own bridge — and one consumer on SQLite. It shows what
 * the test driver cannot produce: a real boot (RESUMED before STARTED), a reboot the guest does
 * itself (REBOOT events only), a live migration from one host to the other, and a guest panic
 * (CRASHED, then STOPPED) that Nova answers with stop. Slower than the default demo (guests boot in
 * about 10 s each, in parallel) and it needs QEMU, which is why it is not the default.
 * Everything it started is removed at the end or on Ctrl-C.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import {
  startQemuHost,
  startRabbitMQ,
  startVirtbus,
  VIRTBUS_BIN,
  type QemuGuest,
  type QemuHost,
  type RabbitSandbox,
  type ServiceProcess,
} from '../sandbox';
import { narrateBus, type BusNarration } from './narrate';
import type { DemoOptions } from './story';

const run = promisify(execFile);
const HOST_A = 'demo-a';
const HOST_B = 'demo-b';
const WEB = { name: 'instance-00000001', uuid: '11111111-1111-4111-8111-111111111111', display: 'web-1' };
const DB = { name: 'instance-00000002', uuid: '22222222-2222-4222-8222-222222222222', display: 'db-1' };
const INSTANCES = [WEB, DB] as const;
const POWER = ['pending', 'running', '?', 'paused', 'shutdown', '?', 'crashed', 'suspended'];

interface Row {
  uuid: string;
  host: string;
  vm_state: string;
  task_state: string | null;
  power_state: number;
  last_action: string | null;
}

export class QemuDemo {
  #rabbit: RabbitSandbox | undefined;
  #hosts: QemuHost[] = [];
  #services: ServiceProcess[] = [];
  #bus: BusNarration | undefined;
  #dir = mkdtempSync(join(tmpdir(), 'virtbus-demo-qemu-'));
  #cleaned = false;

  constructor(private readonly options: DemoOptions) {}

  #say(text: string): void {
    this.options.out(text);
  }

  #heading(text: string): void {
    const bold = (t: string): string => (this.options.colour ? `\u001b[1m${t}\u001b[0m` : t);
    this.#say('');
    this.#say(bold(`── ${text} ${'─'.repeat(Math.max(0, 92 - text.length))}`));
  }

  #env(host?: QemuHost): NodeJS.ProcessEnv {
    return {
      VIRTBUS_HOST: host === this.#hosts[1] ? HOST_B : HOST_A,
      VIRTBUS_AMQP_URL: this.#rabbit?.url ?? '',
      VIRTBUS_LIBVIRT_URI: host?.uri ?? '',
      VIRTBUS_DB_URL: `sqlite:${join(this.#dir, 'virtbus.db')}`,
      VIRTBUS_STOP_DELAY_MS: String(this.options.stopDelayMs),
      VIRTBUS_LOG_LEVEL: 'info',
      VIRTBUS_METRICS_PORT: '0',
    };
  }

  async #virtbus(...args: string[]): Promise<string> {
    const { stdout } = await run(process.execPath, [VIRTBUS_BIN, ...args], {
      env: { ...process.env, ...this.#env() },
    });
    return stdout;
  }

  async #rows(): Promise<Map<string, Row>> {
    const rows = JSON.parse(await this.#virtbus('instances', 'list', '--json')) as Row[];
    return new Map(rows.map((row) => [row.uuid, row]));
  }

  async #table(): Promise<void> {
    const rows = await this.#rows();
    this.#say('   instance            name    host    vm_state  task_state    power_state  last action');
    for (const instance of INSTANCES) {
      const row = rows.get(instance.uuid);
      if (!row) continue;
      const power = `${row.power_state} ${POWER[row.power_state] ?? ''}`;
      this.#say(
        `   ${instance.name}  ${instance.display.padEnd(6)}  ${row.host.padEnd(6)}  ${row.vm_state.padEnd(8)}  ${(row.task_state ?? '-').padEnd(12)}  ${power.padEnd(11)}  ${row.last_action ?? '-'}`,
      );
    }
  }

  async #until(
    what: string,
    done: (rows: Map<string, Row>) => boolean,
    timeoutMs = this.options.stopDelayMs + 30000,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (done(await this.#rows())) return;
      await sleep(250);
    }
    throw new Error(`the demo waited ${timeoutMs} ms for ${what}, which did not happen`);
  }

  async #untilBus(what: string, done: () => boolean, timeoutMs = 60000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!done()) {
      if (Date.now() > deadline) throw new Error(`the demo waited ${timeoutMs} ms for ${what} on the bus`);
      await sleep(100);
    }
  }

  #seen(uuid: string, transition: string, host?: string, detail?: string): boolean {
    return (this.#bus?.lifecycle ?? []).some(
      (m) =>
        m.instance_uuid === uuid &&
        m.transition === transition &&
        (host === undefined || m.host === host) &&
        (detail === undefined || m.libvirt?.detail === detail),
    );
  }

  async play(): Promise<void> {
    const started = Date.now();
    this.#heading('virtbus demo on real QEMU guests: two hosts, one consumer, Nova-style power-state sync');
    this.#say(
      `   sandbox directory ${this.#dir}; the stop delay is ${this.options.stopDelayMs} ms here (Nova: 15 s)`,
    );
    this.#say('   starting RabbitMQ and two private qemu libvirtds ("hosts" demo-a and demo-b)…');
    const [rabbit, hostA, hostB] = await Promise.all([
      startRabbitMQ({ name: 'virtbus-demo-qemu' }),
      startQemuHost({ name: 'demo-a' }),
      startQemuHost({ name: 'demo-b' }),
    ]);
    this.#rabbit = rabbit;
    this.#hosts = [hostA, hostB];
    this.#say(`   demo-a ${hostA.uri}`);
    this.#say(`   demo-b ${hostB.uri}`);
    this.#say(
      `   RabbitMQ amqp://127.0.0.1:${rabbit.port}  (${Math.round((Date.now() - started) / 1000)} s)`,
    );

    // web-1 takes orders over its control channel (reboot, panic); db-1 migrates, so it has none.
    const web = await hostA.defineGuest({ name: WEB.name, uuid: WEB.uuid, onCrash: 'destroy' });
    const db = await hostA.defineGuest({ name: DB.name, uuid: DB.uuid, control: false });
    const now = new Date().toISOString();
    const rows = INSTANCES.map((instance) => ({
      uuid: instance.uuid,
      host: HOST_A,
      vm_state: 'stopped',
      task_state: null,
      power_state: 4,
      launched_at: now,
      display_name: instance.display,
    }));
    const importFile = join(this.#dir, 'instances.json');
    writeFileSync(importFile, JSON.stringify(rows, null, 2));
    await this.#virtbus('instances', 'import', importFile);
    this.#say('   defined two TCG guests on demo-a and imported their rows (stopped, as Nova has them):');
    await this.#table();

    this.#heading('starting virtbus consumer (SQLite) and one virtbus bridge per host');
    const consumer = startVirtbus('consumer', this.#env());
    this.#services.push(consumer);
    await consumer.waitForLog('the consumer to consume', (l) => l.msg === 'consuming');
    this.#bus = await narrateBus(rabbit.url, (line) => this.#say(line), this.options.colour);
    for (const host of this.#hosts) {
      const bridge = startVirtbus('bridge', this.#env(host));
      this.#services.push(bridge);
      await bridge.waitForLog('the bridge to publish', (l) => l.msg === 'publishing channel open');
    }
    await this.#untilBus('both start snapshots', () =>
      [HOST_A, HOST_B].every((host) =>
        (this.#bus?.lifecycle ?? []).some((m) => m.host === host && m.transition === 'sync_end'),
      ),
    );

    this.#heading(
      '1. boot both guests (Nova start: rows active first; a real boot is RESUMED, then STARTED)',
    );
    for (const instance of INSTANCES)
      await this.#virtbus('instances', 'set', instance.uuid, 'vm_state=active');
    this.#say(`   $ virsh start ${WEB.name}; virsh start ${DB.name}   (on demo-a)`);
    const bootStart = Date.now();
    await Promise.all([web.start(), db.start()]);
    await this.#until('both guests running', (r) =>
      INSTANCES.every((instance) => r.get(instance.uuid)?.power_state === 1),
    );
    await web.waitBooted();
    this.#say(`   web-1's init is up after ${((Date.now() - bootStart) / 1000).toFixed(1)} s (TCG)`);
    await this.#table();

    this.#heading('2. web-1 reboots itself (reboot -f inside the guest): REBOOT events only, row untouched');
    await web.order('reboot');
    await this.#untilBus('rebooted', () => this.#seen(WEB.uuid, 'rebooted'));
    await sleep(1000);
    await this.#table();
    this.#say('   (web-1 boots again in the background: no lifecycle event, nothing for Nova to do)');

    await this.#migrate(hostA, hostB);
    await web.waitBooted();
    await this.#panic(web, hostA);

    this.#say(`   done in ${Math.round((Date.now() - started) / 1000)} s`);
  }

  async #migrate(from: QemuHost, to: QemuHost): Promise<void> {
    this.#heading("3. live-migrate db-1 from demo-a to demo-b (Nova's flags: --persistent --undefinesource)");
    this.#say(`   $ virsh -c <demo-a> migrate --live --persistent --undefinesource ${DB.name} <demo-b> …`);
    await from.migrate(DB.name, to, ['--persistent', '--undefinesource']);
    await this.#untilBus('the destination to report the guest', () =>
      this.#seen(DB.uuid, 'resumed', HOST_B, 'MIGRATED'),
    );
    // The source's STOPPED (detail MIGRATED) is held for the stop delay like any other: wait it out.
    await this.#untilBus(
      "the source's stopped",
      () => this.#seen(DB.uuid, 'stopped', HOST_A),
      this.options.stopDelayMs + 30000,
    );
    await sleep(1000);
    const state = (await to.virsh('domstate', DB.name)).trim();
    this.#say(`   $ virsh -c <demo-b> domstate ${DB.name}  →  ${state}`);
    const commands = (this.#bus?.commands ?? []).filter((c) => c.instance_uuid === DB.uuid);
    this.#say(
      commands.length === 0
        ? '   no stop or force_stop was sent for db-1 to either host'
        : `   ${commands.length} command(s) were sent for db-1: ${commands.map((c) => c.action).join(', ')}`,
    );
    const row = (await this.#rows()).get(DB.uuid);
    this.#say(
      row?.host === HOST_B
        ? '   the row followed the guest: host demo-b'
        : [
            `   the row still names ${row?.host ?? '?'} (this build does not move rows on migration): demo-b's`,
            "   events are about an instance of another host, which Nova ignores, and demo-a's stopped carried",
            '   the live state of a domain it no longer has (0), which the staleness guard ignores: no stop',
          ].join('\n'),
    );
    await this.#table();
  }

  async #panic(web: QemuGuest, host: QemuHost): Promise<void> {
    this.#heading('4. web-1 panics (echo c > /proc/sysrq-trigger; on_crash=destroy): CRASHED, then STOPPED');
    await web.order('panic');
    this.#say(
      `   crashed is published (Nova ignores it); the STOPPED after it is held ${this.options.stopDelayMs} ms, then Nova calls stop`,
    );
    await this.#until(
      'web-1 stopped',
      (r) => r.get(WEB.uuid)?.vm_state === 'stopped' && r.get(WEB.uuid)?.task_state === null,
    );
    const state = (await host.virsh('domstate', WEB.name)).trim();
    await this.#table();
    this.#say(`   $ virsh -c <demo-a> domstate ${WEB.name}  →  ${state}`);
  }

  /** Prints how to look around, then waits for Ctrl-C. */
  async keep(signal: Promise<void>): Promise<void> {
    this.#heading('--keep: everything stays up until Ctrl-C');
    this.#say(
      `   export VIRTBUS_AMQP_URL=${this.#rabbit?.url ?? ''} VIRTBUS_DB_URL=sqlite:${join(this.#dir, 'virtbus.db')}`,
    );
    for (const host of this.#hosts) this.#say(`   virsh -c '${host.uri}' list --all`);
    this.#say('   ./bin/virtbus tail        ./bin/virtbus instances list');
    await signal;
  }

  async cleanup(): Promise<void> {
    if (this.#cleaned) return;
    this.#cleaned = true;
    this.#say('');
    this.#say('   cleaning up: stopping the bridges, the consumer, RabbitMQ, the guests and both libvirtds…');
    await this.#bus?.close();
    await Promise.allSettled(this.#services.map((service) => service.stop()));
    await Promise.allSettled([this.#rabbit?.dispose(), ...this.#hosts.map((host) => host.dispose())]);
    rmSync(this.#dir, { recursive: true, force: true });
    this.#say('   removed everything the demo started.');
  }
}

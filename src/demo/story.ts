/**
 * `virtbus demo`: the whole pipeline on a private sandbox. Starts a private libvirtd (test driver)
 * and RabbitMQ node, the bridge and the consumer on SQLite, imports three instances, and plays a short
 * story — boot, pause, resume, reboot, a guest destroyed behind the system's back, a domain started
 * while its row says stopped — showing each message as it crosses the bus and the instance table
 * converging, with the action Nova would take. Everything it started is removed at the end or on Ctrl-C.
 * With `cluster`, the broker is a three-node RabbitMQ cluster loaded with the generated per-host
 * definitions (the bridge and the consumer log in as their own users, given the three node URLs),
 * and a last scene SIGKILLs the node the bridge publishes to.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import {
  metricValue,
  scrape,
  startLibvirtd,
  importIdentities,
  startRabbitCluster,
  startRabbitMQ,
  startVirtbus,
  VIRTBUS_BIN,
  type LibvirtdSandbox,
  type BrokerIdentities,
  type RabbitCluster,
  type RabbitSandbox,
  type ServiceProcess,
} from '../sandbox';
import { hostSegment } from '../messages/lifecycle';
import { narrateBus, type BusNarration } from './narrate';
import { loadNativeBinding } from '../native/binding';
import type { NativeConnection } from '../native/contract';

const run = promisify(execFile);
const HOST = 'demo-host';

interface Instance {
  readonly name: string;
  readonly uuid: string;
  readonly display: string;
}

const INSTANCES: readonly Instance[] = [
  { name: 'instance-00000001', uuid: '11111111-1111-4111-8111-111111111111', display: 'web-1' },
  { name: 'instance-00000002', uuid: '22222222-2222-4222-8222-222222222222', display: 'db-1' },
  { name: 'instance-00000003', uuid: '33333333-3333-4333-8333-333333333333', display: 'batch-1' },
];

interface Row {
  uuid: string;
  vm_state: string;
  task_state: string | null;
  power_state: number;
  last_action: string | null;
}

export interface DemoOptions {
  readonly keep: boolean;
  readonly stopDelayMs: number;
  readonly colour: boolean;
  /** A three-node RabbitMQ cluster with per-host broker identities instead of one node as guest. */
  readonly cluster?: boolean;
  readonly out: (line: string) => void;
}

const POWER = ['pending', 'running', '?', 'paused', 'shutdown', '?', 'crashed', 'suspended'];

export class Demo {
  #libvirtd: LibvirtdSandbox | undefined;
  #rabbit: RabbitSandbox | undefined;
  #cluster: RabbitCluster | undefined;
  #identities: BrokerIdentities | undefined;
  #bridge: ServiceProcess | undefined;
  #consumer: ServiceProcess | undefined;
  #listener: BusNarration | undefined;
  /**
   * The test driver keeps the shared `default` state only while a client is connected: this
   * connection holds it for the whole demo (before the bridge connects, and across its restarts).
   */
  #keeper: NativeConnection | undefined;
  #dir = mkdtempSync(join(tmpdir(), 'virtbus-demo-'));
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

  #env(role: 'bridge' | 'consumer' = 'consumer'): NodeJS.ProcessEnv {
    const identities = this.#identities;
    const url = identities
      ? role === 'bridge'
        ? identities.bridgeUrl(HOST)
        : identities.consumerUrl()
      : (this.#rabbit?.url ?? '');
    return {
      ...(identities ? { VIRTBUS_BRIDGE_DECLARE_TOPOLOGY: 'false' } : {}),
      VIRTBUS_HOST: HOST,
      VIRTBUS_AMQP_URL: url,
      VIRTBUS_LIBVIRT_URI: this.#libvirtd?.uri ?? '',
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
    this.#say('   instance            name      vm_state  task_state    power_state  last action');
    for (const instance of INSTANCES) {
      const row = rows.get(instance.uuid);
      if (!row) continue;
      const power = `${row.power_state} ${POWER[row.power_state] ?? ''}`;
      this.#say(
        `   ${instance.name}  ${instance.display.padEnd(8)}  ${row.vm_state.padEnd(8)}  ${(row.task_state ?? '-').padEnd(12)}  ${power.padEnd(11)}  ${row.last_action ?? '-'}`,
      );
    }
  }

  /** Polls the instance table until `done` holds (or gives up after timeoutMs and says so). */
  async #until(
    what: string,
    done: (rows: Map<string, Row>) => boolean,
    timeoutMs = this.options.stopDelayMs + 20000,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (done(await this.#rows())) return;
      await sleep(200);
    }
    throw new Error(`the demo waited ${timeoutMs} ms for ${what}, which did not happen`);
  }

  async #virsh(...args: string[]): Promise<void> {
    this.#say(`   $ virsh ${args.join(' ')}`);
    await this.#libvirtd?.virsh(...args);
  }

  async #listen(): Promise<void> {
    let url = this.#rabbit?.url ?? '';
    if (this.#cluster && this.#identities) {
      // The narrator holds one plain connection: put it on a node the bridge is not on, the one
      // scene 6 kills.
      const bridgeNodes = await this.#cluster.nodesOf(hostSegment(HOST));
      const urls = this.#identities.guestUrl().split(',');
      url = urls.find((_, i) => !bridgeNodes.includes(i)) ?? urls[0] ?? '';
    }
    this.#listener = await narrateBus(url, (line) => this.#say(line), this.options.colour);
  }

  async play(): Promise<void> {
    const started = Date.now();
    this.#heading('virtbus demo: libvirt lifecycle events → RabbitMQ → Nova-style power-state sync');
    this.#say(
      `   sandbox directory ${this.#dir}; the stop delay is ${this.options.stopDelayMs} ms here (Nova: 15 s)`,
    );
    if (this.options.cluster) await this.#startCluster(started);
    else {
      this.#say('   starting a private libvirtd (test driver) and a private RabbitMQ node…');
      [this.#libvirtd, this.#rabbit] = await Promise.all([
        startLibvirtd(),
        startRabbitMQ({ name: 'virtbus-demo' }),
      ]);
      this.#say(`   libvirtd ${this.#libvirtd.uri}`);
      this.#say(
        `   RabbitMQ amqp://127.0.0.1:${this.#rabbit.port}  (${Math.round((Date.now() - started) / 1000)} s)`,
      );
    }
    const libvirtd = this.#libvirtd;
    if (!libvirtd) throw new Error('libvirtd did not start');

    this.#keeper = await loadNativeBinding().openConnection(libvirtd.uri, {
      readOnly: false,
      keepaliveInterval: 0,
      keepaliveCount: 1,
    });
    for (const instance of INSTANCES) {
      const xml = `<domain type='test'><name>${instance.name}</name><uuid>${instance.uuid}</uuid><memory>65536</memory><os><type>hvm</type></os></domain>`;
      const file = join(this.#dir, `${instance.name}.xml`);
      writeFileSync(file, xml);
      await libvirtd.virsh('define', file);
    }
    await libvirtd.virsh('start', INSTANCES[1]!.name);
    const now = new Date().toISOString();
    const rows = [
      {
        uuid: INSTANCES[0]!.uuid,
        host: HOST,
        vm_state: 'active',
        task_state: null,
        power_state: 0,
        launched_at: now,
        display_name: 'web-1',
      },
      {
        uuid: INSTANCES[1]!.uuid,
        host: HOST,
        vm_state: 'active',
        task_state: null,
        power_state: 1,
        launched_at: now,
        display_name: 'db-1',
      },
      {
        uuid: INSTANCES[2]!.uuid,
        host: HOST,
        vm_state: 'stopped',
        task_state: null,
        power_state: 4,
        launched_at: now,
        display_name: 'batch-1',
      },
    ];
    const importFile = join(this.#dir, 'instances.json');
    writeFileSync(importFile, JSON.stringify(rows, null, 2));
    await this.#virtbus('instances', 'import', importFile);
    this.#say('   defined three domains and imported their instance rows (virtbus instances import):');
    await this.#table();

    this.#heading('starting virtbus consumer (SQLite) and virtbus bridge');
    // The consumer first: its queue must be bound before the bridge's start snapshot is published
    // (in production deploy/rabbitmq/definitions.json declares it up front).
    this.#consumer = startVirtbus('consumer', this.#env());
    await this.#consumer.waitForLog('the consumer to consume', (l) => l.msg === 'consuming');
    this.#bridge = startVirtbus('bridge', this.#env('bridge'));
    const [consumerMetrics, bridgeMetrics] = await Promise.all([
      this.#consumer.metricsUrl(),
      this.#bridge.metricsUrl(),
    ]);
    await this.#bridge.waitForLog('the bridge to publish', (l) => l.msg === 'publishing channel open');
    await this.#listen();
    this.#say(`   bridge   metrics ${bridgeMetrics}/metrics   consumer metrics ${consumerMetrics}/metrics`);
    this.#say(
      '   the bridge published a start snapshot (sync per domain + sync_end); the consumer applied it like',
    );
    this.#say(
      "   Nova's periodic sync: db-1 is running, batch-1 shut off, web-1 shut off (its row says active: Nova",
    );
    this.#say('   would call stop — it is already off, so it ends stopped).');
    await this.#until(
      'the start snapshot to settle',
      (r) =>
        r.get(INSTANCES[0]!.uuid)?.task_state === null && r.get(INSTANCES[0]!.uuid)?.vm_state === 'stopped',
    );
    await this.#table();

    this.#heading('1. boot: start web-1 (an operator starts it; its row is set active first, as Nova would)');
    await this.#virtbus('instances', 'set', INSTANCES[0]!.uuid, 'vm_state=active', 'power_state=4');
    await this.#virsh('start', INSTANCES[0]!.name);
    await this.#until('web-1 running', (r) => r.get(INSTANCES[0]!.uuid)?.power_state === 1);
    await sleep(300);
    await this.#table();

    this.#heading(
      '2. pause and resume db-1 (Nova: "paused unexpectedly. Ignore." — only power_state follows)',
    );
    await this.#virsh('suspend', INSTANCES[1]!.name);
    await this.#until('db-1 paused', (r) => r.get(INSTANCES[1]!.uuid)?.power_state === 3);
    await this.#table();
    await this.#virsh('resume', INSTANCES[1]!.name);
    await this.#until('db-1 running', (r) => r.get(INSTANCES[1]!.uuid)?.power_state === 1);
    await this.#table();

    this.#heading(
      `3. reboot web-1: destroy + start within the ${this.options.stopDelayMs} ms stop delay changes nothing`,
    );
    await this.#virsh('destroy', INSTANCES[0]!.name);
    await this.#virsh('start', INSTANCES[0]!.name);
    this.#say('   (the held STOPPED is cancelled by STARTED: no `stopped` crosses the bus)');
    await sleep(this.options.stopDelayMs + 1000);
    await this.#until(
      'web-1 still active and running',
      (r) => r.get(INSTANCES[0]!.uuid)?.vm_state === 'active' && r.get(INSTANCES[0]!.uuid)?.power_state === 1,
    );
    await this.#table();

    this.#heading("4. db-1 is destroyed behind the system's back while its row says active");
    await this.#virsh('destroy', INSTANCES[1]!.name);
    this.#say(
      `   after the stop delay: stopped → power_state 4 → Nova calls stop → the bridge finds it off → vm_state stopped`,
    );
    await this.#until(
      'db-1 stopped',
      (r) =>
        r.get(INSTANCES[1]!.uuid)?.vm_state === 'stopped' && r.get(INSTANCES[1]!.uuid)?.task_state === null,
    );
    await this.#table();

    this.#heading('5. batch-1 is started while its row says stopped');
    await this.#virsh('start', INSTANCES[2]!.name);
    this.#say(
      '   Nova: "Instance is not stopped. Calling the stop API." → force_stop → the bridge shuts it down',
    );
    await this.#until(
      'batch-1 forced off',
      (r) =>
        r.get(INSTANCES[2]!.uuid)?.power_state === 4 &&
        r.get(INSTANCES[2]!.uuid)?.task_state === null &&
        r.get(INSTANCES[2]!.uuid)?.last_action !== null,
    );
    const state = (await libvirtd.virsh('domstate', INSTANCES[2]!.name)).trim();
    await this.#table();
    this.#say(`   $ virsh domstate ${INSTANCES[2]!.name}  →  ${state}`);

    if (this.#cluster) await this.#nodeLost();

    this.#heading('metrics (Prometheus text format; queue depth first)');
    const bridgeText = await scrape(bridgeMetrics);
    const consumerText = await scrape(consumerMetrics);
    const show = (label: string, text: string, name: string, labels: Record<string, string> = {}): void =>
      this.#say(
        `   ${label} ${name}${Object.keys(labels).length ? JSON.stringify(labels) : ''} = ${metricValue(text, name, labels) ?? 0}`,
      );
    show('bridge  ', bridgeText, 'virtbus_native_queue_depth');
    show('bridge  ', bridgeText, 'virtbus_native_queue_high_water');
    show('bridge  ', bridgeText, 'virtbus_events_published_total', { transition: 'stopped' });
    show('bridge  ', bridgeText, 'virtbus_delayed_stops_total', { outcome: 'cancelled' });
    show('consumer', consumerText, 'virtbus_consumer_queue_depth');
    show('consumer', consumerText, 'virtbus_sync_actions_total', { action: 'stop' });
    show('consumer', consumerText, 'virtbus_sync_actions_total', { action: 'force_stop' });
    this.#say(`   curl ${bridgeMetrics}/metrics    curl ${consumerMetrics}/metrics`);
    this.#say(`   done in ${Math.round((Date.now() - started) / 1000)} s`);
  }

  /** Three nodes joined into a cluster, the definitions for this host imported into vhost virtbus. */
  async #startCluster(started: number): Promise<void> {
    this.#say(
      '   starting a private libvirtd (test driver) and a three-node RabbitMQ cluster (join_cluster)…',
    );
    let cluster: Promise<RabbitCluster> | undefined;
    [this.#libvirtd, this.#cluster] = await Promise.all([
      startLibvirtd(),
      (cluster = startRabbitCluster({ name: 'virtbus-demo' })),
    ]).catch(async (error: unknown) => {
      await cluster?.then((c) => c.dispose()).catch(() => undefined);
      throw error;
    });
    const nodes = this.#cluster.nodes;
    this.#identities = await importIdentities(
      { ctl: (...a) => this.#cluster!.ctl(...a), dir: nodes[0]!.dir, urls: (o) => this.#cluster!.urls(o) },
      [HOST],
      'virtbus',
    );
    this.#say(`   libvirtd ${this.#libvirtd.uri}`);
    for (const node of nodes) this.#say(`   RabbitMQ ${node.nodeName}  amqp://127.0.0.1:${node.port}`);
    const replicas = await this.#cluster.replicas('virtbus');
    this.#say(
      `   definitions imported (virtbus broker definitions): bridge user ${hostSegment(HOST)}, consumer user virtbus-consumer; virtbus.consumer has ${replicas.get('virtbus.consumer')} quorum members  (${Math.round((Date.now() - started) / 1000)} s)`,
    );
  }

  /** Cluster only: SIGKILL the node the bridge publishes to; the bridge moves on, nothing is lost. */
  async #nodeLost(): Promise<void> {
    const cluster = this.#cluster!;
    const [victim = 0] = await cluster.nodesOf(hostSegment(HOST));
    this.#heading(
      `6. SIGKILL the RabbitMQ node the bridge publishes to (${cluster.nodes[victim]!.nodeName})`,
    );
    await cluster.nodes[victim]!.kill();
    await this.#virsh('suspend', INSTANCES[0]!.name);
    await this.#until(
      'web-1 paused, through the remaining nodes',
      (r) => r.get(INSTANCES[0]!.uuid)?.power_state === 3,
    );
    const [now] = await cluster.nodesOf(hostSegment(HOST));
    this.#say(
      `   the bridge reconnected to ${now === undefined ? '?' : cluster.nodes[now]!.nodeName}; the event waited in its outbox`,
    );
    await this.#table();
    await this.#virsh('resume', INSTANCES[0]!.name);
    this.#say('   restarting the killed node: it rejoins the cluster by itself');
    await cluster.nodes[victim]!.start();
    await cluster.waitFormed();
    await this.#until('web-1 running', (r) => r.get(INSTANCES[0]!.uuid)?.power_state === 1);
    await this.#table();
  }

  /** Prints how to look around, then waits for Ctrl-C. */
  async keep(signal: Promise<void>): Promise<void> {
    this.#heading('--keep: everything stays up until Ctrl-C');
    this.#say(
      `   export VIRTBUS_AMQP_URL='${this.#identities?.observerUrl() ?? this.#rabbit?.url ?? ''}' VIRTBUS_DB_URL=sqlite:${join(this.#dir, 'virtbus.db')}`,
    );
    this.#say(`   virsh -c '${this.#libvirtd?.uri ?? ''}' list --all`);
    this.#say('   ./bin/virtbus tail        ./bin/virtbus instances list');
    await signal;
  }

  async cleanup(): Promise<void> {
    if (this.#cleaned) return;
    this.#cleaned = true;
    this.#say('');
    this.#say('   cleaning up: stopping the bridge, the consumer, RabbitMQ and libvirtd…');
    await this.#listener?.close();
    await this.#keeper?.close().catch(() => undefined);
    await Promise.allSettled([this.#bridge?.stop(), this.#consumer?.stop()]);
    await Promise.allSettled([this.#rabbit?.dispose(), this.#cluster?.dispose(), this.#libvirtd?.dispose()]);
    rmSync(this.#dir, { recursive: true, force: true });
    this.#say('   removed everything the demo started.');
  }
}

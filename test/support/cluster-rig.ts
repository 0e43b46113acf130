/**
 * The rig of the cluster fault tests and the fleet test: hypervisor hosts (a private test-driver
 * libvirtd and a real `virtbus bridge` each, distinct host names, each bridge logged in as its own
 * broker user from the generated definitions) publishing into a three-node RabbitMQ cluster given as
 * three URLs, real `virtbus consumer` processes (as virtbus-consumer) on one database, a load
 * generator toggling suspend/resume on every host, and a recorder (a quorum queue of its own, so it
 * survives the loss of any one node) of the lifecycle events and the stop commands and results.
 *
 * Why a rig of its own next to rig.ts: that one owns a single node it stops and starts; here the
 * cluster belongs to the test file (three nodes take long to form) and each scenario gets a fresh
 * vhost with its own definitions, hosts, consumers and database.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AmqpConnection } from '../../src/amqp/connection';
import { loadNativeBinding } from '../../src/native/binding';
import type { NativeConnection } from '../../src/native/contract';
import { powerStateOf } from '../../src/libvirt/power-state';
import type { LifecycleMessage } from '../../src/messages/lifecycle';
import type { CommandResult, StopCommand } from '../../src/messages/command';
import {
  importIdentities,
  metricValue,
  scrape,
  startLibvirtd,
  startVirtbus,
  type BrokerIdentities,
  type LibvirtdSandbox,
  type RabbitCluster,
  type ServiceProcess,
} from '../../src/sandbox';
import { importRows, runVirtbus, startRecorder, toggleLoad } from './rig-parts';

const RECORDER_QUEUE = 'cluster.recorder';

export interface ClusterRigOptions {
  /** Hypervisor host names; default one host. */
  readonly hosts?: readonly string[];
  /** Domains under load per host (toggled suspend/resume). */
  readonly domains?: number;
  /** Extra domains per host left alone by the load (the fleet test's stop targets). */
  readonly spare?: number;
  readonly consumers?: number;
  /** db.url; default a fresh SQLite file. */
  readonly dbUrl?: string;
  /** Lifecycle events per second the load aims at, all hosts together; default 600. */
  readonly rate?: number;
  readonly stopDelayMs?: number;
}

export interface ClusterFigures {
  readonly scenario: string;
  readonly driven: number;
  readonly delivered: number;
  readonly duplicates: number;
  readonly lost: number;
  readonly wrongRows: number;
  readonly convergeMs: number;
  readonly note?: string;
}

interface Recorded {
  readonly eventId: string;
  readonly host: string;
  readonly uuid: string | null;
  readonly transition: string;
  readonly bootId: string;
  readonly seq: number;
}

export interface Host {
  readonly name: string;
  libvirtd: LibvirtdSandbox;
  driver: NativeConnection;
  bridge: ServiceProcess;
  readonly uuids: string[];
  readonly spare: string[];
}

let rigCount = 0;

export class ClusterRig {
  readonly hosts: Host[] = [];
  consumers: ServiceProcess[] = [];
  identities!: BrokerIdentities;
  readonly vhost = `cell${(rigCount += 1)}`;
  readonly dir = mkdtempSync(join(tmpdir(), 'virtbus-cluster-'));
  readonly dbUrl: string;
  readonly recorded: Recorded[] = [];
  readonly commands: StopCommand[] = [];
  readonly results: CommandResult[] = [];
  #recorder: AmqpConnection | undefined;
  #loadRunning = false;
  #loadDone: Promise<void> = Promise.resolve();
  #driven = 0;
  /** Counts at the end of the previous figures(): a rig can carry several scenarios in a row. */
  #base = { driven: 0, delivered: 0, records: 0 };

  constructor(
    readonly cluster: RabbitCluster,
    private readonly options: ClusterRigOptions = {},
  ) {
    this.dbUrl = options.dbUrl ?? `sqlite:${join(this.dir, 'virtbus.db')}`;
  }

  get driven(): number {
    return this.#driven;
  }

  /** Environment shared by every virtbus process of the rig. */
  env(): NodeJS.ProcessEnv {
    return {
      VIRTBUS_DB_URL: this.dbUrl,
      VIRTBUS_STOP_DELAY_MS: String(this.options.stopDelayMs ?? 1000),
      VIRTBUS_LOG_LEVEL: 'info',
      VIRTBUS_LIBVIRT_KEEPALIVE_INTERVAL: '1',
      VIRTBUS_LIBVIRT_KEEPALIVE_COUNT: '2',
      VIRTBUS_AMQP_RECONNECT_MAX_DELAY_MS: '1000',
      VIRTBUS_STOP_TIMEOUT_MS: '30000',
      // Production mode: the imported definitions declare everything, the bridges only check it.
      VIRTBUS_BRIDGE_DECLARE_TOPOLOGY: 'false',
    };
  }

  async start(): Promise<void> {
    const names = this.options.hosts ?? ['cluster-host'];
    this.identities = await importIdentities(
      {
        ctl: (...a) => this.cluster.ctl(...a),
        dir: this.cluster.nodes[0]!.dir,
        urls: (o) => this.cluster.urls(o),
      },
      names,
      this.vhost,
    );
    const daemons = await Promise.all(names.map(() => startLibvirtd()));
    for (const [index, name] of names.entries()) {
      const libvirtd = daemons[index]!;
      const driver = await this.#openDriver(libvirtd);
      const host: Host = { name, libvirtd, driver, bridge: undefined as never, uuids: [], spare: [] };
      await this.#defineDomains(host, index);
      this.hosts.push(host);
    }
    await this.#importInstances();
    await this.#startRecorder();
    for (let i = 0; i < (this.options.consumers ?? 1); i += 1) await this.startConsumer();
    await Promise.all(this.hosts.map((host) => this.startBridge(host)));
  }

  async #openDriver(libvirtd: LibvirtdSandbox): Promise<NativeConnection> {
    // This connection also keeps the test driver's shared state alive between bridge connections.
    return loadNativeBinding().openConnection(libvirtd.uri, {
      readOnly: false,
      keepaliveInterval: 0,
      keepaliveCount: 1,
    });
  }

  async #defineDomains(host: Host, hostIndex: number): Promise<void> {
    const loaded = this.options.domains ?? 24;
    const spare = this.options.spare ?? 0;
    for (let i = 0; i < loaded + spare; i += 1) {
      const h = String(hostIndex).padStart(3, '0');
      const uuid = `c${h}${String(i).padStart(4, '0')}-0000-4000-8000-${String(i).padStart(12, '0')}`;
      const xml = `<domain type='test'><name>${host.name}-${i}</name><uuid>${uuid}</uuid><memory>65536</memory><os><type>hvm</type></os></domain>`;
      await host.driver.defineXML(xml);
      if (i < loaded) {
        await host.driver.start(uuid);
        host.uuids.push(uuid);
      } else host.spare.push(uuid);
    }
  }

  /** Rows: loaded domains active and running; spare domains as `spareRows` says (default stopped). */
  async #importInstances(): Promise<void> {
    const rows = this.hosts.flatMap((host) => [
      ...host.uuids.map((uuid) => ({
        uuid,
        host: host.name,
        vm_state: 'active',
        task_state: null,
        power_state: 1,
        launched_at: '2026-12-01T00:00:00Z',
      })),
      ...host.spare.map((uuid) => ({
        uuid,
        host: host.name,
        vm_state: 'stopped',
        task_state: null,
        power_state: 4,
        launched_at: '2026-12-01T00:00:00Z',
      })),
    ]);
    await importRows(this.dir, this.env(), rows);
  }

  virtbus(...args: string[]): Promise<string> {
    return runVirtbus(this.env(), ...args);
  }

  /** Records every lifecycle event, stop command and stop result, from any node of the cluster. */
  async #startRecorder(): Promise<void> {
    this.#recorder = await startRecorder({
      url: this.identities.guestUrl(),
      name: 'cluster recorder',
      declare: async (channel) => {
        await channel.assertQueue(RECORDER_QUEUE, {
          durable: true,
          arguments: { 'x-queue-type': 'quorum' },
        });
        await channel.bindQueue(RECORDER_QUEUE, 'virtbus.lifecycle', '#');
        await channel.bindQueue(RECORDER_QUEUE, 'virtbus.commands', '#');
        return RECORDER_QUEUE;
      },
      record: (message) => {
        const body = JSON.parse(message.content.toString()) as Record<string, unknown>;
        if (message.fields.exchange === 'virtbus.commands') {
          if (message.fields.routingKey.endsWith('.stop_result')) this.results.push(body as never);
          else this.commands.push(body as never);
        } else {
          const event = body as unknown as LifecycleMessage;
          this.recorded.push({
            eventId: event.event_id,
            host: event.host,
            uuid: event.instance_uuid,
            transition: event.transition,
            bootId: event.boot_id,
            seq: event.seq,
          });
        }
      },
    });
  }

  async startConsumer(): Promise<ServiceProcess> {
    const consumer = startVirtbus('consumer', {
      ...this.env(),
      VIRTBUS_AMQP_URL: this.identities.consumerUrl(),
    });
    await consumer.waitForLog('the consumer consuming', (l) => l.msg === 'consuming', 60000);
    this.consumers.push(consumer);
    return consumer;
  }

  async startBridge(host: Host): Promise<void> {
    host.bridge = startVirtbus('bridge', {
      ...this.env(),
      VIRTBUS_HOST: host.name,
      VIRTBUS_AMQP_URL: this.identities.bridgeUrl(host.name),
      VIRTBUS_LIBVIRT_URI: host.libvirtd.uri,
      VIRTBUS_OUTBOX_DIR: join(this.dir, `outbox-${host.name}`),
    });
    await host.bridge.waitForLog('the publishing channel', (l) => l.msg === 'publishing channel open', 60000);
  }

  /** Toggles suspend/resume over every loaded domain of every host (one worker per host). */
  startLoad(): void {
    this.#loadRunning = true;
    this.#loadDone = toggleLoad(
      this.hosts.map((host) => ({ driver: () => host.driver, uuids: host.uuids })),
      this.options.rate ?? 600,
      () => this.#loadRunning,
      () => {
        this.#driven += 1;
      },
    );
  }

  async stopLoad(): Promise<void> {
    this.#loadRunning = false;
    await this.#loadDone;
  }

  /** Live Nova power state of every domain of every host. */
  async liveStates(): Promise<Map<string, number>> {
    const live = new Map<string, number>();
    for (const host of this.hosts) {
      const all = new Map((await host.driver.listAllDomains()).map((d) => [d.uuid, powerStateOf(d.state)]));
      for (const uuid of [...host.uuids, ...host.spare]) live.set(uuid, all.get(uuid) ?? 0);
    }
    return live;
  }

  async rows(): Promise<Map<string, Record<string, unknown>>> {
    const rows = JSON.parse(await this.virtbus('instances', 'list', '--json')) as Array<
      Record<string, unknown> & { uuid: string }
    >;
    return new Map(rows.map((row) => [row.uuid, row]));
  }

  /** Rows whose power_state differs from the hypervisor's truth, or with a task still pending. */
  async wrongRows(): Promise<string[]> {
    const [live, rows] = await Promise.all([this.liveStates(), this.rows()]);
    return [...live.keys()].filter(
      (uuid) => rows.get(uuid)?.power_state !== live.get(uuid) || rows.get(uuid)?.task_state !== null,
    );
  }

  /** Waits until no row is wrong; returns how long it took (or the timeout, with rows still wrong). */
  async converge(timeoutMs = 60000): Promise<number> {
    const started = Date.now();
    while (Date.now() - started < timeoutMs) {
      if ((await this.wrongRows()).length === 0) return Date.now() - started;
      await sleep(250);
    }
    return Date.now() - started;
  }

  /** Lifecycle events the running bridges took from libvirt (their SUSPENDED + RESUMED counters). */
  async bridgeAccepted(): Promise<number> {
    let total = 0;
    for (const host of this.hosts) {
      const text = await scrape(await host.bridge.metricsUrl());
      total +=
        (metricValue(text, 'virtbus_events_received_total', { event: 'SUSPENDED' }) ?? 0) +
        (metricValue(text, 'virtbus_events_received_total', { event: 'RESUMED' }) ?? 0);
    }
    return total;
  }

  #lifecycle(): Recorded[] {
    return this.recorded.filter((r) => r.transition === 'paused' || r.transition === 'resumed');
  }

  /**
   * The scenario's figures since the previous call: driven = suspend/resume calls libvirt accepted
   * (each one event; the bridges stay up, so each reaches a bridge); delivered = distinct events on
   * the bus; lost = driven − delivered; wrong rows after convergence.
   */
  async figures(scenario: string, convergeMs: number, note?: string): Promise<ClusterFigures> {
    const deadline = Date.now() + 60000;
    const unique = (): number => new Set(this.#lifecycle().map((r) => r.eventId)).size;
    while (unique() < this.#driven && Date.now() < deadline) await sleep(200);
    const delivered = unique();
    const records = this.#lifecycle().length;
    const driven = this.#driven - this.#base.driven;
    const deliveredNow = delivered - this.#base.delivered;
    const figures: ClusterFigures = {
      scenario,
      driven,
      delivered: deliveredNow,
      duplicates: records - this.#base.records - deliveredNow,
      lost: Math.max(0, driven - deliveredNow),
      wrongRows: (await this.wrongRows()).length,
      convergeMs,
      ...(note ? { note } : {}),
    };
    this.#base = { driven: this.#driven, delivered, records };
    console.log(`cluster figures: ${JSON.stringify(figures)}`);
    return figures;
  }

  /** Per domain, the first delivery of each event alternates paused/resumed as the load drove it. */
  orderViolations(): string[] {
    const seen = new Set<string>();
    const byDomain = new Map<string, string[]>();
    for (const record of this.#lifecycle()) {
      if (seen.has(record.eventId)) continue;
      seen.add(record.eventId);
      const list = byDomain.get(record.uuid ?? '') ?? [];
      list.push(record.transition);
      byDomain.set(record.uuid ?? '', list);
    }
    const violations: string[] = [];
    for (const [uuid, list] of byDomain) {
      const at = list.findIndex((t, i) => i > 0 && t === list[i - 1]);
      if (at > 0) violations.push(`${uuid}: ${list[at - 1]} then ${list[at]} at ${at}`);
    }
    return violations;
  }

  /** Highest lifecycle seq on the bus per domain (of its bridge's latest boot). */
  lastSeq(): Map<string, { bootId: string; seq: number }> {
    const last = new Map<string, { bootId: string; seq: number }>();
    for (const record of this.#lifecycle()) {
      const previous = last.get(record.uuid ?? '');
      if (!previous || previous.bootId !== record.bootId || record.seq > previous.seq)
        last.set(record.uuid ?? '', { bootId: record.bootId, seq: record.seq });
    }
    return last;
  }

  async dispose(): Promise<void> {
    this.#loadRunning = false;
    await this.#loadDone.catch(() => undefined);
    await Promise.allSettled([
      ...this.hosts.map((h) => h.bridge?.stop('SIGKILL')),
      ...this.consumers.map((c) => c.stop('SIGKILL')),
    ]);
    await this.#recorder?.close();
    await Promise.allSettled(this.hosts.map((h) => h.driver.close()));
    await Promise.allSettled(this.hosts.map((h) => h.libvirtd.dispose()));
    await this.cluster.ctl('delete_vhost', this.vhost).catch(() => undefined);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

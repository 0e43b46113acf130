/**
 * The fault-injection rig: a private libvirtd and RabbitMQ node (owned, so they can be killed), the
 * real `virtbus consumer` and `virtbus bridge` processes, a load generator toggling
 * suspend/resume over many domains from several workers (each successful call is exactly one
 * lifecycle event), and a durable recorder queue on the lifecycle exchange that reconnects by
 * itself. After the fault it measures what arrived and how long the database took to match
 * every domain's real state.
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
import {
  metricValue,
  scrape,
  startLibvirtd,
  startRabbitMQ,
  startVirtbus,
  type LibvirtdSandbox,
  type RabbitSandbox,
  type ServiceProcess,
} from '../../src/sandbox';
import { onTeardown } from './services';
import { importRows, runVirtbus, startRecorder, toggleLoad } from './rig-parts';

export const HOST = 'fault-host';
const RECORDER_QUEUE = 'faults.recorder';

export interface RigOptions {
  readonly domains?: number;
  readonly workers?: number;
  /** db.url; default a fresh SQLite file. */
  readonly dbUrl?: string;
  readonly consumers?: number;
  readonly bridgeEnv?: NodeJS.ProcessEnv;
  /** Lifecycle events per second the load aims at (all workers together); default 1000. */
  readonly rate?: number;
}

export interface FaultReport {
  readonly scenario: string;
  readonly injected: number;
  readonly accepted: number;
  readonly delivered: number;
  readonly unseen: number;
  readonly duplicates: number;
  readonly lost: number;
  readonly convergeMs: number;
  readonly note?: string;
}

interface Recorded {
  readonly eventId: string;
  readonly uuid: string | null;
  readonly transition: string;
  readonly bootId: string;
  readonly seq: number;
}

export class FaultRig {
  libvirtd!: LibvirtdSandbox;
  rabbit!: RabbitSandbox;
  bridge!: ServiceProcess;
  consumers: ServiceProcess[] = [];
  readonly dir = mkdtempSync(join(tmpdir(), 'virtbus-faults-'));
  readonly outboxDir = join(this.dir, 'outbox');
  readonly dbUrl: string;
  readonly uuids: string[] = [];
  readonly recorded: Recorded[] = [];
  #driver: NativeConnection | undefined;
  #recorder: AmqpConnection | undefined;
  #loadRunning = false;
  #loadDone: Promise<void> = Promise.resolve();
  #injected = 0;
  /** Per domain, the transitions the load produced, in order. */
  readonly produced = new Map<string, string[]>();

  constructor(private readonly options: RigOptions = {}) {
    this.dbUrl = options.dbUrl ?? `sqlite:${join(this.dir, 'virtbus.db')}`;
  }

  get injected(): number {
    return this.#injected;
  }

  env(): NodeJS.ProcessEnv {
    return {
      VIRTBUS_HOST: HOST,
      VIRTBUS_AMQP_URL: this.rabbit.url,
      VIRTBUS_LIBVIRT_URI: this.libvirtd.uri,
      VIRTBUS_DB_URL: this.dbUrl,
      VIRTBUS_OUTBOX_DIR: this.outboxDir,
      VIRTBUS_STOP_DELAY_MS: '1000',
      VIRTBUS_LOG_LEVEL: 'info',
      VIRTBUS_LIBVIRT_KEEPALIVE_INTERVAL: '1',
      VIRTBUS_LIBVIRT_KEEPALIVE_COUNT: '2',
      VIRTBUS_LIBVIRT_RECONNECT_MAX_DELAY_MS: '2000',
      VIRTBUS_AMQP_RECONNECT_MAX_DELAY_MS: '2000',
      VIRTBUS_STOP_TIMEOUT_MS: '30000',
    };
  }

  async start(): Promise<void> {
    [this.libvirtd, this.rabbit] = await Promise.all([
      startLibvirtd(),
      startRabbitMQ({ name: 'virtbus-faults' }),
    ]);
    onTeardown(() => this.dispose());
    await this.#openDriver();
    await this.#defineDomains();
    await this.#importInstances();
    await this.#startRecorder();
    for (let i = 0; i < (this.options.consumers ?? 1); i += 1) await this.startConsumer();
    await this.startBridge();
  }

  async #openDriver(): Promise<void> {
    // This connection also keeps the test driver's shared state alive between bridge connections.
    this.#driver = await loadNativeBinding().openConnection(this.libvirtd.uri, {
      readOnly: false,
      keepaliveInterval: 0,
      keepaliveCount: 1,
    });
  }

  get driver(): NativeConnection {
    if (!this.#driver) throw new Error('no libvirt driver connection');
    return this.#driver;
  }

  async #defineDomains(): Promise<void> {
    const count = this.options.domains ?? 24;
    const fresh = this.uuids.length === 0;
    for (let i = 0; i < count; i += 1) {
      const uuid = fresh
        ? `f${String(i).padStart(7, '0')}-0000-4000-8000-${String(i).padStart(12, '0')}`
        : this.uuids[i]!;
      const xml = `<domain type='test'><name>fault-${i}</name><uuid>${uuid}</uuid><memory>65536</memory><os><type>hvm</type></os></domain>`;
      await this.driver.defineXML(xml);
      await this.driver.start(uuid);
      if (fresh) this.uuids.push(uuid);
    }
  }

  async #importInstances(): Promise<void> {
    const rows = this.uuids.map((uuid) => ({
      uuid,
      host: HOST,
      vm_state: 'active',
      task_state: null,
      power_state: 1,
      launched_at: '2026-11-27T00:00:00Z',
    }));
    await importRows(this.dir, this.env(), rows);
  }

  virtbus(...args: string[]): Promise<string> {
    return runVirtbus(this.env(), ...args);
  }

  async #startRecorder(): Promise<void> {
    this.#recorder = await startRecorder({
      url: this.rabbit.url,
      name: 'fault recorder',
      declare: async (channel) => {
        await channel.assertExchange('virtbus.lifecycle', 'topic', {
          durable: true,
          arguments: { 'alternate-exchange': 'virtbus.unroutable' },
        });
        await channel.assertQueue(RECORDER_QUEUE, { durable: true });
        await channel.bindQueue(RECORDER_QUEUE, 'virtbus.lifecycle', '#');
        return RECORDER_QUEUE;
      },
      record: (message) => {
        const body = JSON.parse(message.content.toString()) as LifecycleMessage;
        this.recorded.push({
          eventId: body.event_id,
          uuid: body.instance_uuid,
          transition: body.transition,
          bootId: body.boot_id,
          seq: body.seq,
        });
      },
    });
  }

  async startConsumer(): Promise<ServiceProcess> {
    const consumer = startVirtbus('consumer', this.env());
    await consumer.waitForLog('the consumer consuming', (l) => l.msg === 'consuming', 30000);
    this.consumers.push(consumer);
    return consumer;
  }

  async startBridge(): Promise<void> {
    this.bridge = startVirtbus('bridge', { ...this.env(), ...this.options.bridgeEnv });
    await this.bridge.waitForLog('the publishing channel', (l) => l.msg === 'publishing channel open', 30000);
  }

  /** Starts toggling suspend/resume over every domain from several workers until stopLoad(). */
  startLoad(): void {
    this.#loadRunning = true;
    const count = this.options.workers ?? 4;
    const workers = Array.from({ length: count }, (_, worker) => ({
      driver: () => this.driver,
      uuids: this.uuids.filter((_, index) => index % count === worker),
    }));
    this.#loadDone = toggleLoad(
      workers,
      this.options.rate ?? 1000,
      () => this.#loadRunning,
      (uuid, pausing) => {
        this.#injected += 1;
        const list = this.produced.get(uuid) ?? [];
        list.push(pausing ? 'paused' : 'resumed');
        this.produced.set(uuid, list);
      },
    );
  }

  async stopLoad(): Promise<void> {
    this.#loadRunning = false;
    await this.#loadDone;
  }

  /** After libvirtd lost its state: reconnect the driver and define/start the domains again. */
  async recreateDomains(): Promise<void> {
    await this.#driver?.close().catch(() => undefined);
    await this.#openDriver();
    await this.#defineDomains();
  }

  /** Live power state of every domain (NOSTATE when gone). */
  async liveStates(): Promise<Map<string, number>> {
    const all = new Map((await this.driver.listAllDomains()).map((d) => [d.uuid, powerStateOf(d.state)]));
    return new Map(this.uuids.map((uuid) => [uuid, all.get(uuid) ?? 0]));
  }

  async rows(): Promise<Map<string, { power_state: number; task_state: string | null; vm_state: string }>> {
    const rows = JSON.parse(await this.virtbus('instances', 'list', '--json')) as Array<{
      uuid: string;
      power_state: number;
      task_state: string | null;
      vm_state: string;
    }>;
    return new Map(rows.map((row) => [row.uuid, row]));
  }

  /** Waits until every row's power_state equals the domain's live state; returns how long it took. */
  async converge(timeoutMs = 60000): Promise<number> {
    const started = Date.now();
    let mismatches: string[] = [];
    while (Date.now() - started < timeoutMs) {
      const [live, rows] = await Promise.all([this.liveStates(), this.rows()]);
      mismatches = this.uuids.filter(
        (uuid) => rows.get(uuid)?.power_state !== live.get(uuid) || rows.get(uuid)?.task_state !== null,
      );
      if (mismatches.length === 0) return Date.now() - started;
      await sleep(250);
    }
    const [live, rows] = await Promise.all([this.liveStates(), this.rows()]);
    const detail = mismatches
      .slice(0, 5)
      .map((uuid) => `${uuid}: row ${JSON.stringify(rows.get(uuid))} live ${live.get(uuid)}`)
      .join('; ');
    throw new Error(
      `database did not converge in ${timeoutMs} ms: ${mismatches.length} rows differ (${detail})`,
    );
  }

  /**
   * Lifecycle events the running bridge took from libvirt (its SUSPENDED + RESUMED counters): what it
   * "accepted". Events libvirt emitted while no bridge was connected are not in it.
   */
  async bridgeAccepted(): Promise<number> {
    const text = await scrape(await this.bridge.metricsUrl());
    return (
      (metricValue(text, 'virtbus_events_received_total', { event: 'SUSPENDED' }) ?? 0) +
      (metricValue(text, 'virtbus_events_received_total', { event: 'RESUMED' }) ?? 0)
    );
  }

  /**
   * Counts what arrived. `accepted` is how many events reached a bridge (default: every injected
   * one); lost = accepted − delivered; unseen = injected − accepted (never reached a connected
   * bridge: repaired by a snapshot, not lost by virtbus).
   */
  async tally(
    scenario: string,
    convergeMs: number,
    options: { readonly accepted?: number; readonly note?: string } = {},
  ): Promise<FaultReport> {
    const accepted = options.accepted ?? this.#injected;
    const deadline = Date.now() + 60000;
    const lifecycle = (): Recorded[] =>
      this.recorded.filter((r) => r.transition === 'paused' || r.transition === 'resumed');
    const unique = (): number => new Set(lifecycle().map((r) => r.eventId)).size;
    while (unique() < accepted && Date.now() < deadline) await sleep(200);
    const delivered = unique();
    const report: FaultReport = {
      scenario,
      injected: this.#injected,
      accepted,
      delivered,
      duplicates: lifecycle().length - delivered,
      lost: Math.max(0, accepted - delivered),
      unseen: this.#injected - accepted,
      convergeMs,
      ...(options.note ? { note: options.note } : {}),
    };
    console.log(`fault figures: ${JSON.stringify(report)}`);
    return report;
  }

  /** Per domain, the recorded transitions (first delivery of each event) follow the produced order. */
  orderViolations(): string[] {
    const seen = new Set<string>();
    const byDomain = new Map<string, string[]>();
    for (const record of this.recorded) {
      if (record.transition !== 'paused' && record.transition !== 'resumed') continue;
      if (seen.has(record.eventId)) continue;
      seen.add(record.eventId);
      const list = byDomain.get(record.uuid ?? '') ?? [];
      list.push(record.transition);
      byDomain.set(record.uuid ?? '', list);
    }
    const violations: string[] = [];
    for (const [uuid, list] of byDomain) {
      for (let i = 1; i < list.length; i += 1) {
        if (list[i] === list[i - 1]) {
          violations.push(`${uuid}: ${list[i - 1]} then ${list[i]} at ${i}`);
          break;
        }
      }
    }
    return violations;
  }

  async dispose(): Promise<void> {
    this.#loadRunning = false;
    await this.#loadDone.catch(() => undefined);
    await Promise.allSettled([this.bridge?.stop('SIGKILL'), ...this.consumers.map((c) => c.stop('SIGKILL'))]);
    await this.#recorder?.close();
    await this.#driver?.close().catch(() => undefined);
    await Promise.allSettled([this.rabbit?.dispose(), this.libvirtd?.dispose()]);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

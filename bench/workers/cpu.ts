/**
 * Worker: the bridge's JavaScript cost per event, without a broker or libvirtd — the real Dispatcher,
 * outbox and Publisher (and their metrics), with a fake libvirt connection that answers state queries
 * at once and a fake confirm channel that acks every publish in bursts, one event-loop turn later.
 * amqplib's frame encoding and the socket are left out (a raw publisher pays them too), so this is
 * the part of the publish path the bridge adds on top of publishing; reported as CPU µs per event.
 */
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AmqpConnection } from '../../src/amqp/connection';
import { Dispatcher } from '../../src/bridge/dispatcher';
import { JournalOutbox } from '../../src/bridge/journal-outbox';
import { createBridgeMetrics } from '../../src/bridge/metrics';
import { MemoryOutbox, type Outbox } from '../../src/bridge/outbox';
import { Publisher } from '../../src/bridge/publisher';
import type { DomainInfo, NativeConnection, RawDomainEvent } from '../../src/native/contract';
import { createLogger } from '../../src/util/log';
import { serve } from '../lib/ipc';
import { syntheticDomain } from '../lib/amqp';

type Confirm = (error: unknown) => void;

/** A confirm channel that acks everything published so far, once per event-loop turn. */
class FakeChannel extends EventEmitter {
  pending: Confirm[] = [];
  #scheduled = false;

  publish(_exchange: string, _key: string, _body: Buffer, _options: object, confirm: Confirm): boolean {
    this.pending.push(confirm);
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => {
        this.#scheduled = false;
        const acks = this.pending;
        this.pending = [];
        for (const ack of acks) ack(null);
      });
    }
    return true;
  }
  assertExchange = (): Promise<object> => Promise.resolve({});
  assertQueue = (): Promise<object> => Promise.resolve({});
  bindQueue = (): Promise<object> => Promise.resolve({});
  close = (): Promise<void> => Promise.resolve();
}

class FakeConnection extends EventEmitter {
  readonly isBlocked = false;
  readonly model = { createConfirmChannel: () => Promise.resolve(new FakeChannel()) };
}

function fakeLibvirt(domains: number): NativeConnection {
  const all: DomainInfo[] = Array.from({ length: domains }, (_, i) => ({
    ...syntheticDomain(i),
    state: 1,
    reason: 1,
    active: true,
    persistent: false,
  }));
  return {
    domainStates: (uuids: readonly string[]) => Promise.resolve(uuids.map(() => ({ state: 1, reason: 1 }))),
    listAllDomains: () => Promise.resolve(all.map((d) => ({ ...d }))),
  } as unknown as NativeConnection;
}

function events(count: number, domains: number, from: number): RawDomainEvent[] {
  const types = [2, 3, 4];
  const now = Date.now() * 1000;
  return Array.from({ length: count }, (_, k) => {
    const i = from + k;
    const { uuid, name } = syntheticDomain(i % domains);
    return {
      connectionId: 1,
      eventId: 0,
      type: types[Math.floor(i / domains) % 3]!,
      detail: 0,
      uuid,
      name,
      nameTruncated: false,
      wallMicros: now,
      monoMicros: now,
      seq: i + 1,
    };
  });
}

serve({
  async run(params: { count: number; domains: number; batch: number; outbox: 'memory' | 'journal' }) {
    const logger = createLogger('error', 'bench-cpu');
    const dir = mkdtempSync(join(tmpdir(), 'virtbus-bench-cpu-'));
    const outbox: Outbox =
      params.outbox === 'journal' ? await JournalOutbox.open({ dir }) : new MemoryOutbox(100_000);
    const metrics = createBridgeMetrics({
      queueStats: () => ({ depth: 0, capacity: 0, highWater: 0, dropped: 0, enqueued: 0 }),
      unconfirmed: () => 0,
      delayedStopsPending: () => 0,
      outboxDepth: () => outbox.depth,
      outboxOldestMicros: () => undefined,
      libvirtUp: () => true,
      amqpUp: () => true,
    });
    const connection = new FakeConnection();
    const publisher = new Publisher({
      connection: connection as unknown as AmqpConnection,
      outbox,
      topology: { exchanges: [], queues: [], bindings: [] },
      maxInFlight: 2000,
      metrics,
      logger,
    });
    const libvirt = fakeLibvirt(params.domains);
    const dispatcher = new Dispatcher({
      host: 'bench-host',
      bootId: '00000000-0000-4000-8000-000000000000',
      exchange: 'virtbus.lifecycle',
      format: 'json',
      stopDelayMs: 15000,
      connection: () => libvirt,
      outbox,
      metrics,
      logger,
    });
    connection.emit('up', connection.model);
    await new Promise((resolve) => setTimeout(resolve, 50));
    // Prepared up front: the addon builds these objects (measured separately as the hand-off).
    const batches: RawDomainEvent[][] = [];
    for (let i = 0; i < params.count; i += params.batch)
      batches.push(events(Math.min(params.batch, params.count - i), params.domains, i));
    const cpu = process.cpuUsage();
    const started = performance.now();
    for (const batch of batches) await dispatcher.handleEvents(batch);
    await publisher.waitIdle(60_000);
    const used = process.cpuUsage(cpu);
    const seconds = (performance.now() - started) / 1000;
    await publisher.close();
    await outbox.close();
    rmSync(dir, { recursive: true, force: true });
    return {
      events: params.count,
      seconds,
      rate: params.count / seconds,
      cpuMicrosPerEvent: (used.user + used.system) / params.count,
    };
  },
});

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
import { EventPump } from '../../src/bridge/event-pump';
import { Publisher } from '../../src/bridge/publisher';
import type { DomainInfo, NativeBinding, NativeConnection, RawDomainEvent } from '../../src/native/contract';
import { nowMicros } from '../../src/util/time';
import { MeasuredOutbox } from '../lib/measured-outbox';
import { distribution } from '../lib/stats';
import { createLogger } from '../../src/util/log';
import { serve } from '../lib/ipc';
import { syntheticDomain } from '../lib/amqp';

type Confirm = (error: unknown) => void;

/**
 * A confirm channel that acks everything published so far, once per event-loop turn (or after
 * ackDelayMs, like a broker that confirms after its own disk write).
 */
class FakeChannel extends EventEmitter {
  pending: Confirm[] = [];
  #scheduled = false;

  constructor(private readonly ackDelayMs: number) {
    super();
  }

  publish(_exchange: string, _key: string, _body: Buffer, _options: object, confirm: Confirm): boolean {
    this.pending.push(confirm);
    if (!this.#scheduled) {
      this.#scheduled = true;
      const ack = (): void => {
        this.#scheduled = false;
        const acks = this.pending;
        this.pending = [];
        for (const one of acks) one(null);
      };
      if (this.ackDelayMs > 0) setTimeout(ack, this.ackDelayMs);
      else setImmediate(ack);
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
  readonly model: { createConfirmChannel: () => Promise<FakeChannel> };
  constructor(ackDelayMs: number) {
    super();
    this.model = { createConfirmChannel: () => Promise.resolve(new FakeChannel(ackDelayMs)) };
  }
}

/** A libvirt connection whose state queries answer after rpcMs (a thread-pool job and one RPC). */
function fakeLibvirt(domains: number, rpcMs = 0): NativeConnection {
  const later = <T>(value: T): Promise<T> =>
    rpcMs > 0 ? new Promise((resolve) => setTimeout(() => resolve(value), rpcMs)) : Promise.resolve(value);
  const all: DomainInfo[] = Array.from({ length: domains }, (_, i) => ({
    ...syntheticDomain(i),
    state: 1,
    reason: 1,
    active: true,
    persistent: false,
  }));
  return {
    domainStates: (uuids: readonly string[]) => later(uuids.map(() => ({ state: 1, reason: 1 }))),
    listAllDomains: () => later(all.map((d) => ({ ...d }))),
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

interface Pipeline {
  readonly outbox: MeasuredOutbox;
  readonly dispatcher: Dispatcher;
  readonly publisher: Publisher;
  close(): Promise<void>;
}

/** Dispatcher → outbox → Publisher with their real metrics, over the fakes. */
async function pipeline(params: {
  domains: number;
  outbox: 'memory' | 'journal';
  rpcMs?: number;
  ackDelayMs?: number;
  fsyncIntervalMs?: number;
}): Promise<Pipeline> {
  const logger = createLogger('error', 'bench-cpu');
  const dir = mkdtempSync(join(tmpdir(), 'virtbus-bench-cpu-'));
  const inner: Outbox =
    params.outbox === 'journal'
      ? await JournalOutbox.open({
          dir,
          ...(params.fsyncIntervalMs === undefined ? {} : { fsyncIntervalMs: params.fsyncIntervalMs }),
        })
      : new MemoryOutbox(100_000);
  const outbox = new MeasuredOutbox(inner);
  const metrics = createBridgeMetrics({
    queueStats: () => ({ depth: 0, capacity: 0, highWater: 0, dropped: 0, enqueued: 0 }),
    unconfirmed: () => 0,
    delayedStopsPending: () => 0,
    outboxDepth: () => outbox.depth,
    outboxOldestMicros: () => undefined,
    libvirtUp: () => true,
    amqpUp: () => true,
  });
  const connection = new FakeConnection(params.ackDelayMs ?? 0);
  const publisher = new Publisher({
    connection: connection as unknown as AmqpConnection,
    outbox,
    topology: { exchanges: [], queues: [], bindings: [] },
    maxInFlight: 2000,
    metrics,
    logger,
  });
  const libvirt = fakeLibvirt(params.domains, params.rpcMs ?? 0);
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
  return {
    outbox,
    dispatcher,
    publisher,
    close: async () => {
      await publisher.close();
      await outbox.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

serve({
  async run(params: { count: number; domains: number; batch: number; outbox: 'memory' | 'journal' }) {
    const line = await pipeline(params);
    const { dispatcher, publisher } = line;
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
    await line.close();
    return {
      events: params.count,
      seconds,
      rate: params.count / seconds,
      cpuMicrosPerEvent: (used.user + used.system) / params.count,
    };
  },

  /**
   * The lane's latency without a broker's or libvirtd's noise: events arrive at `rate` into a JS
   * stand-in for the native queue, drained by the real EventPump; state queries take rpcMs, the
   * broker acks ackDelayMs after a publish. Reports occurred → append call → accepted → confirm.
   */
  async lane(params: {
    rate: number;
    seconds: number;
    domains: number;
    outbox: 'memory' | 'journal';
    rpcMs: number;
    ackDelayMs: number;
    fsyncIntervalMs?: number;
  }) {
    const line = await pipeline(params);
    const queue: RawDomainEvent[] = [];
    let wakePending = false;
    const binding = {
      drain: (max = Infinity) => {
        wakePending = false;
        return { events: queue.splice(0, max), closes: [], overflowed: 0 };
      },
    } as unknown as NativeBinding;
    const pump = new EventPump(
      binding,
      {
        events: (batch) => line.dispatcher.handleEvents(batch),
        room: () => line.dispatcher.whenRoom(), // as src/bridge/bridge.ts wires it
        close: () => undefined,
        overflow: () => undefined,
      },
      createLogger('error', 'bench-lane'),
    );
    line.outbox.measureLatency = true;
    const total = Math.round(params.rate * params.seconds);
    const started = performance.now();
    let made = 0;
    while (made < total) {
      const due = Math.min(total, Math.floor(((performance.now() - started) / 1000) * params.rate)) - made;
      if (due > 0) {
        const batch = events(due, params.domains, made);
        const now = nowMicros();
        for (const event of batch) queue.push({ ...event, wallMicros: now });
        made += due;
        if (!wakePending) {
          wakePending = true;
          setImmediate(pump.wake); // the addon's thread-safe function call
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    await line.outbox.whenConfirmed(total);
    const result = {
      events: total,
      latencyMs: distribution(line.outbox.latencies.values()),
      toAppendMs: distribution(line.outbox.toAppend.values()),
      toDurableMs: distribution(line.outbox.toDurable.values()),
    };
    await line.close();
    return result;
  },
});

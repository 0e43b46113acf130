/**
 * Worker: a consumer process wired exactly as `virtbus consumer` wires it (ConsumerService, its
 * AmqpConnection, the store db.url names, its metrics), with the store wrapped to time each committed
 * row write from the event's occurred_at (what virtbus_event_to_sync_seconds observes, unbucketed)
 * and to count processed messages.
 */
import { hostname } from 'node:os';
import { AmqpConnection, amqpOptionsFromConfig } from '../../src/amqp/connection';
import { loadConfig } from '../../src/config/load';
import { createConsumerMetrics } from '../../src/consumer/metrics';
import { ConsumerService } from '../../src/consumer/service';
import { openStore } from '../../src/store/open';
import type { InstanceInput, InstanceRow, InstanceStore } from '../../src/store/types';
import { createLogger } from '../../src/util/log';
import { nowMicros } from '../../src/util/time';
import { serve } from '../lib/ipc';
import { BENCH_HOST, syntheticDomain } from '../lib/amqp';
import { distribution, ResourceSampler, Samples, type ResourceUse } from '../lib/stats';

let service: ConsumerService | undefined;
let store: InstanceStore | undefined;
let processed = 0;
let lastProcessedAt = 0;
const outcomes = new Map<string, number>();
const commitLatency = new Samples();
let measuring = false;
let sampler: ResourceSampler | undefined;
let firstAt = 0;
let firstAtMs = 0;

function config(params: { amqpUrl: string; dbUrl: string; env?: Record<string, string> }) {
  return loadConfig({
    role: 'consumer',
    skipDefaultFile: true,
    env: {
      VIRTBUS_AMQP_URL: params.amqpUrl,
      VIRTBUS_DB_URL: params.dbUrl,
      VIRTBUS_METRICS_PORT: '0',
      VIRTBUS_LOG_LEVEL: 'warn',
      ...params.env,
    },
  });
}

/** `count` instances on BENCH_HOST, running (the synthetic domains, or the given UUIDs). */
function instances(count: number, uuids?: readonly string[]): InstanceInput[] {
  return Array.from({ length: uuids?.length ?? count }, (_, i) => ({
    uuid: uuids?.[i] ?? syntheticDomain(i).uuid,
    host: BENCH_HOST,
    vm_state: 'active',
    task_state: null,
    power_state: 1,
    launched_at: '2026-01-01T00:00:00.000000Z',
    attrs: { display_name: `bench-${i}` },
  }));
}

export interface ConsumerRunResult {
  readonly processed: number;
  readonly seconds: number;
  readonly rate: number;
  readonly outcomes: Record<string, number>;
  readonly commitLatencyMs: ReturnType<typeof distribution>;
  readonly resources: ResourceUse | undefined;
  readonly firstProcessedAtMs: number;
  readonly lastProcessedAtMs: number;
}

serve({
  /** Creates/migrates the database and inserts the instances the events are about. */
  async seed(params: { amqpUrl: string; dbUrl: string; count: number; uuids?: string[] }) {
    const settings = config(params);
    const seeding = openStore(settings.db, createLogger('warn', 'bench-seed'), 'virtbus-bench');
    try {
      await seeding.migrate();
      const rows = instances(params.count, params.uuids);
      for (let i = 0; i < rows.length; i += 1000) await seeding.upsert(rows.slice(i, i + 1000));
      return { rows: rows.length };
    } finally {
      await seeding.close();
    }
  },

  async start(params: { amqpUrl: string; dbUrl: string; env?: Record<string, string> }) {
    const settings = config(params);
    const logger = createLogger(settings.log.level, 'bench-consumer');
    const inner = openStore(settings.db, logger.child({ module: 'store' }), 'virtbus-consumer');
    store = inner;
    // Time every committed row write from its event's occurred_at (as the handler's histogram does):
    // single compare-and-swap updates, and the batched read–decide–write round where the store has one.
    const committedAt = (row: InstanceRow): void => {
      if (measuring && row.event_at_us !== null) commitLatency.push((nowMicros() - row.event_at_us) / 1000);
    };
    const update = inner.update.bind(inner);
    inner.update = async (next: InstanceRow): Promise<boolean> => {
      const committed = await update(next);
      if (committed) committedAt(next);
      return committed;
    };
    type Apply = (
      uuids: readonly string[],
      decide: (rows: unknown) => ReadonlyArray<{ row: InstanceRow }>,
    ) => Promise<ReadonlySet<string>>;
    const batched = inner as unknown as { apply?: Apply };
    const apply = batched.apply?.bind(inner);
    if (apply) {
      batched.apply = async (uuids, decide) => {
        let writes: ReadonlyArray<{ row: InstanceRow }> = [];
        const lost = await apply(uuids, (rows) => (writes = decide(rows)));
        for (const write of writes) if (!lost.has(write.row.uuid)) committedAt(write.row);
        return lost;
      };
    }
    const metrics = createConsumerMetrics();
    const amqp = new AmqpConnection(
      amqpOptionsFromConfig(
        settings.amqp,
        `virtbus-consumer@${hostname()}`,
        logger.child({ module: 'amqp' }),
      ),
    );
    service = new ConsumerService({
      settings,
      store: inner,
      metrics,
      logger: logger.child({ module: 'consumer' }),
      amqp,
    });
    service.on('processed', (info) => {
      if (processed === 0) {
        firstAt = performance.now();
        firstAtMs = Date.now();
      }
      processed += 1;
      lastProcessedAt = Date.now();
      outcomes.set(info.outcome, (outcomes.get(info.outcome) ?? 0) + 1);
    });
    measuring = true;
    sampler = new ResourceSampler();
    service.start();
    await service.whenReady(60_000);
    return {};
  },

  /** Starts counting (and timing commits) from now. */
  mark() {
    processed = 0;
    firstAt = 0;
    firstAtMs = 0;
    outcomes.clear();
    commitLatency.clear();
    measuring = true;
    sampler = new ResourceSampler();
    return Promise.resolve({});
  },

  /** Resolves when `count` messages were processed since mark() (or at the deadline). */
  async wait(params: { count: number; timeoutMs: number }): Promise<ConsumerRunResult> {
    const deadline = Date.now() + params.timeoutMs;
    while (processed < params.count && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    const seconds = firstAt === 0 ? 0 : (performance.now() - firstAt) / 1000;
    measuring = false;
    return {
      processed,
      seconds,
      rate: seconds > 0 ? processed / seconds : 0,
      outcomes: Object.fromEntries(outcomes),
      commitLatencyMs: distribution(commitLatency.values()),
      resources: sampler?.stop(),
      firstProcessedAtMs: firstAtMs,
      lastProcessedAtMs: lastProcessedAt,
    };
  },

  /** How many processed since mark(), without waiting. */
  count() {
    return Promise.resolve({ processed, lastProcessedAtMs: lastProcessedAt });
  },

  async stop() {
    await service?.stop();
    await store?.close();
    return {};
  },
});

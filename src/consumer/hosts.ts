/**
 * The consumer's part of the hosts view: it notes, per host, the newest lifecycle message and the
 * newest complete snapshot it handled, and every consumer.hostsIntervalMs merges them into the hosts
 * table (hosts-types.ts) — several consumers share one queue, so the table, not any one process,
 * holds the whole picture. The same tick re-reads the table: the maintenance switches the handler
 * consults (maintenance.ts) and the per-host gauges (host-metrics.ts). Rows by power state are
 * counted at most every COUNT_INTERVAL_MS (a scan of the instance index).
 *
 * Nothing here is on the message path's critical section: a failed flush keeps its observations for
 * the next tick, and a database outage only delays the view.
 */
import type { HostObservation, HostRecord, HostStore, SnapshotObservation } from '../store/hosts-types';
import type { Logger } from '../util/log';
import { nowMicros } from '../util/time';
import type { ItemResult, WorkItem } from './handler';
import type { HostMetrics } from './host-metrics';
import { powerLabel } from './host-status';
import { MaintenanceView, maintenanceActive } from './maintenance';

/** How often the rows-by-power-state gauges are recounted. */
export const COUNT_INTERVAL_MS = 15_000;

export interface HostsKeeperOptions {
  /** The store's hosts view; undefined (a test double): the keeper records nothing. */
  readonly store: HostStore | undefined;
  readonly metrics: HostMetrics;
  readonly logger: Logger;
  /** consumer.hostsIntervalMs. */
  readonly intervalMs: number;
  /** Epoch microseconds (tests). */
  readonly now?: () => number;
}

interface Pending {
  lastEventUs: number;
  lastSeenUs: number;
  bootId: string;
  snapshot: SnapshotObservation | undefined;
}

export class HostsKeeper {
  readonly maintenance = new MaintenanceView();
  readonly #options: HostsKeeperOptions;
  readonly #now: () => number;
  #pending = new Map<string, Pending>();
  #timer: NodeJS.Timeout | undefined;
  #ticking: Promise<void> | undefined;
  #countedAtMs = Number.NEGATIVE_INFINITY;

  constructor(options: HostsKeeperOptions) {
    this.#options = options;
    this.#now = options.now ?? nowMicros;
  }

  /** Notes a handled batch: every lifecycle message, and each snapshot whose sync_end was applied. */
  observe(items: readonly WorkItem[], results: readonly ItemResult[]): void {
    if (!this.#options.store) return;
    const seenUs = this.#now();
    items.forEach((item, index) => {
      if (item.kind !== 'lifecycle') return;
      const event = item.event;
      const entry = this.#pending.get(event.host);
      if (!entry)
        this.#pending.set(event.host, {
          lastEventUs: event.occurredUs,
          lastSeenUs: seenUs,
          bootId: event.bootId,
          snapshot: undefined,
        });
      else {
        if (event.occurredUs >= entry.lastEventUs) {
          entry.lastEventUs = event.occurredUs;
          entry.bootId = event.bootId;
        }
        entry.lastSeenUs = seenUs;
      }
      const snapshot = event.snapshot;
      if (event.transition !== 'sync_end' || !snapshot || results[index]?.ok !== true) return;
      const pending = this.#pending.get(event.host) as Pending;
      if (pending.snapshot && pending.snapshot.takenUs >= snapshot.takenUs) return;
      pending.snapshot = {
        id: snapshot.id,
        takenUs: snapshot.takenUs,
        seenUs,
        bootId: event.bootId,
        intervalSeconds: snapshot.intervalSeconds ?? null,
      };
    });
  }

  /**
   * Reads the hosts table once (maintenance switches, gauges). The consumer awaits it before it
   * consumes, so a restart during a host's maintenance sends that host no command.
   */
  async load(): Promise<void> {
    await this.#refresh();
  }

  start(): void {
    if (!this.#options.store || this.#timer) return;
    this.#timer = setInterval(() => void this.tick(), this.#options.intervalMs);
    this.#timer.unref();
  }

  /** Stops the timer and flushes what is pending (best effort: a failure is logged). */
  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#ticking;
    await this.#flush().catch((error: unknown) =>
      this.#options.logger.warn({ err: error }, 'hosts view: last flush failed'),
    );
  }

  /** One flush and refresh (the timer's; tests call it to skip the wait). */
  tick(): Promise<void> {
    this.#ticking ??= (async () => {
      try {
        await this.#flush();
        await this.#refresh();
      } catch (error) {
        this.#options.logger.debug({ err: error }, 'hosts view not updated; retrying at the next tick');
      } finally {
        this.#ticking = undefined;
      }
    })();
    return this.#ticking;
  }

  async #flush(): Promise<void> {
    const store = this.#options.store;
    if (!store || this.#pending.size === 0) return;
    const taken = this.#pending;
    this.#pending = new Map();
    const observations: HostObservation[] = [...taken].map(([host, entry]) => ({
      host,
      lastEventUs: entry.lastEventUs,
      lastSeenUs: entry.lastSeenUs,
      bootId: entry.bootId,
      ...(entry.snapshot ? { snapshot: entry.snapshot } : {}),
    }));
    try {
      await store.record(observations);
    } catch (error) {
      // Keep them for the next tick, merged with whatever arrived meanwhile.
      for (const [host, entry] of taken) {
        const newer = this.#pending.get(host);
        if (!newer) this.#pending.set(host, entry);
        else {
          if (entry.lastEventUs > newer.lastEventUs) {
            newer.lastEventUs = entry.lastEventUs;
            newer.bootId = entry.bootId;
          }
          newer.lastSeenUs = Math.max(newer.lastSeenUs, entry.lastSeenUs);
          if (entry.snapshot && (!newer.snapshot || entry.snapshot.takenUs > newer.snapshot.takenUs))
            newer.snapshot = entry.snapshot;
        }
      }
      throw error;
    }
  }

  async #refresh(): Promise<void> {
    const store = this.#options.store;
    if (!store) return;
    const records = await store.list();
    this.maintenance.update(records);
    this.#gauges(records);
    const nowMs = Date.now();
    if (nowMs - this.#countedAtMs >= COUNT_INTERVAL_MS) {
      const counts = await store.powerCounts();
      this.#countedAtMs = nowMs;
      const { instances } = this.#options.metrics;
      instances.reset();
      for (const count of counts)
        instances.set({ host: count.host, power_state: powerLabel(count.powerState) }, count.count);
    }
  }

  #gauges(records: readonly HostRecord[]): void {
    const { lastSnapshot, lastEvent, snapshotInterval, maintenance } = this.#options.metrics;
    const nowUs = this.#now();
    for (const gauge of [lastSnapshot, lastEvent, snapshotInterval, maintenance]) gauge.reset();
    for (const record of records) {
      const host = record.host;
      maintenance.set({ host }, maintenanceActive(record.maintenance, nowUs) ? 1 : 0);
      if (record.lastEventUs !== null) lastEvent.set({ host }, record.lastEventUs / 1e6);
      const snapshot = record.snapshot;
      if (!snapshot) continue;
      lastSnapshot.set({ host }, snapshot.takenUs / 1e6);
      if (snapshot.intervalSeconds !== null) snapshotInterval.set({ host }, snapshot.intervalSeconds);
    }
  }
}

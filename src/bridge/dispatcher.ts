/**
 * The dispatcher: turns raw native events into lifecycle messages in the outbox. It translates each
 * event (Nova's mapping plus the events Nova drops), applies Nova's delayed STOPPED, samples the live
 * power state at dispatch time, and assigns the per-process `seq`. Everything — event batches,
 * released delayed stops and snapshots — runs through one serial lane, so messages enter the outbox
 * (and reach the wire) in the order they were dispatched. A snapshot never describes a domain whose
 * STOPPED is being held in a `sync` (that would bypass the delay: docs/architecture.md).
 *
 * Intake is decoupled from the lane: handleEvents() accepts a batch synchronously (translation and
 * every hold/cancel decision) and the event pump goes on draining without waiting for the lane, which
 * takes everything accepted meanwhile as one batch — one state query and one journal commit however
 * large. So neither live-state sampling nor the journal's commits nor the broker bound how fast the
 * native queue is emptied; only CPU does (docs/architecture.md, "Intake first").
 */
import { randomUUID } from 'node:crypto';
import type { DomainInfo, RawDomainEvent, NativeConnection } from '../native/contract';
import { translate, NOVA_TRANSITION, type LibvirtCodes, type Transition } from '../libvirt/translate';
import { powerStateOf } from '../libvirt/power-state';
import { DomainStateCode, nameOrNumber } from '../libvirt/constants';
import type { SnapshotReason } from '../messages/lifecycle';
import type { LifecycleFormat } from '../messages/formats';
import type { Logger } from '../util/log';
import { isoMicros, nowMicros } from '../util/time';
import { Backoff } from '../util/backoff';
import { DelayedStops, type TimerApi } from './delayed-stops';
import type { Outbox, OutboxInput } from './outbox';
import type { BridgeMetrics } from './metrics';
import { lifecycleInput, type LifecycleFields } from './lifecycle-input';
import { OffStates } from './off-states';
import { migratedTransitions, samplePowerStates } from './state-sampler';

export interface DispatcherOptions {
  readonly host: string;
  readonly bootId: string;
  readonly exchange: string;
  readonly format: LifecycleFormat;
  readonly stopDelayMs: number;
  /** bridge.resyncIntervalSeconds, carried in every snapshot message (consumers judge overdue hosts). */
  readonly resyncIntervalSeconds?: number;
  /** The current libvirt connection, or undefined while disconnected. */
  readonly connection: () => NativeConnection | undefined;
  /**
   * Takes, synchronously, the events libvirt has delivered that the event pump has not drained yet
   * (EventPump.takeQueued). A snapshot calls it right after its listing, so a STOPPED that preceded
   * the listing is held before the snapshot decides which domains it withholds.
   */
  readonly takeQueued?: () => readonly RawDomainEvent[];
  /** Timers and clock of the delayed STOPPED (tests drive them by hand); the real ones by default. */
  readonly timers?: TimerApi;
  readonly now?: () => number;
  readonly outbox: Outbox;
  readonly metrics: BridgeMetrics;
  readonly logger: Logger;
}

/** An event ready to be published once its live state is known. */
interface Ready {
  readonly uuid: string;
  readonly name: string;
  readonly transition: Transition;
  readonly libvirt: LibvirtCodes;
  readonly occurredMicros: number;
  /** How long Nova's STOPPED delay held it (0 when not held). */
  readonly delayedMs: number;
  /**
   * A SUSPENDED/MIGRATED event: its transition (paused, migration_completed or postcopy) is decided
   * by the domain's job stats when it is published (migratedTransitions).
   */
  readonly needsJobCheck?: true;
}

const STATE_NAMES = Object.keys(DomainStateCode);

/** Most events one lane task samples, builds and appends (bounds the transient message memory). */
export const LANE_BATCH = 16384;
/** Messages built between two yields to the event loop (the pump drains in between). */
const BUILD_SLICE = 1024;
/** Accepted events not yet in the outbox above which intake waits for the lane (see hasRoom). */
export const INTAKE_LIMIT = 4 * LANE_BATCH;
/** An append pending longer than this waits for room, not for a commit (ms). */
const APPEND_STALL_MS = 50;

export class Dispatcher {
  readonly #options: DispatcherOptions;
  readonly #delayed: DelayedStops<Ready>;
  #lane: Promise<void> = Promise.resolve();
  /** Accepted (translated, past the delay) and not yet in the outbox, in dispatch order. */
  #pending: Ready[] = [];
  #releaseFlushScheduled = false;
  /**
   * While a snapshot lists the domains: every domain whose STOPPED was held when the listing began or
   * became held since. Those are withheld from the snapshot's `sync` messages.
   */
  #heldDuringListing: Set<string> | undefined;
  /** Each domain's last accepted transition, and the off states it does not explain. */
  readonly #offStates: OffStates;
  readonly #snapshotsQueued = new Map<SnapshotReason, Promise<void>>();
  readonly #snapshotRetry = new Backoff(1000, 30000);
  #seq = 0;
  #stopped = false;
  /** Events the running lane task took from #pending and has not yet appended. */
  #inLane = 0;
  /** Intake waiting for room (whenRoom). */
  #roomWaiters: Array<() => void> = [];
  /** When the lane's pending outbox.append() began (ms), if one is pending. */
  #appendingSince: number | undefined;

  constructor(options: DispatcherOptions) {
    this.#options = options;
    this.#offStates = new OffStates(options.stopDelayMs, options.now ?? Date.now, options.logger);
    this.#delayed = new DelayedStops<Ready>(
      options.stopDelayMs,
      (held, heldMs, followers) => {
        options.metrics.delayedStops.inc({ outcome: 'published' });
        // Anything dispatched after this point is accepted behind the released stop (#pending keeps
        // dispatch order), so a STARTED right behind a released STOPPED cannot overtake it. Stops
        // released in the same turn (a host shutting many guests down) go out as one batch: one state
        // query and one journal commit instead of one each.
        this.#pending.push({ ...held, delayedMs: heldMs }, ...followers);
        if (!this.#releaseFlushScheduled) {
          this.#releaseFlushScheduled = true;
          setImmediate(() => {
            this.#releaseFlushScheduled = false;
            void this.#enqueuePending();
          });
        }
      },
      options.timers,
      options.now,
    );
  }

  get delayedStopsPending(): number {
    return this.#delayed.size;
  }

  /** Events accepted and not yet in the outbox (held STOPPED events excluded). */
  get intakeBacklog(): number {
    return this.#pending.length + this.#inLane;
  }

  /**
   * Whether intake may hand over more without waiting for the lane: true until INTAKE_LIMIT events
   * wait for the outbox, which happens only when the outbox itself waits (full) or the JS thread
   * cannot keep up. Then the event pump waits and the native queue takes the overflow.
   */
  get hasRoom(): boolean {
    return this.intakeBacklog < INTAKE_LIMIT;
  }

  /** undefined while hasRoom; otherwise resolves once the lane has made room again. */
  whenRoom(): Promise<void> | undefined {
    if (this.hasRoom) return undefined;
    return new Promise<void>((resolve) => this.#roomWaiters.push(resolve));
  }

  /**
   * The lane has waited for the outbox longer than a commit takes: the outbox is full (or its disk
   * slow), and only confirms make room — publishing must not yield to intake then (intake-first.ts).
   */
  get appendStalled(): boolean {
    const since = this.#appendingSince;
    return since !== undefined && (this.#options.now ?? Date.now)() - since > APPEND_STALL_MS;
  }

  /** Dispatches one drained batch; resolves when its messages are in the outbox. */
  handleEvents(events: readonly RawDomainEvent[]): Promise<void> {
    this.#accept(events);
    return this.#enqueuePending();
  }

  /**
   * Translates a batch and applies the delayed STOPPED, synchronously: what may go out now joins
   * #pending, in order. Every hold or cancel decision is made here, at drain time, whatever the lane
   * is busy with.
   */
  #accept(events: readonly RawDomainEvent[]): void {
    const { metrics, logger, stopDelayMs } = this.#options;
    // Counted per batch: one labelled increment per kind of event instead of one per event.
    const received = new Map<string, number>();
    for (const event of events) {
      const translation = translate(event.eventId, event.type, event.detail);
      const name = translation.libvirt.event;
      received.set(name, (received.get(name) ?? 0) + 1);
      if (translation.kind === 'unknown') {
        // A libvirt newer than us: carried as numbers in the log and the metric label, never a crash.
        logger.warn(
          { eventId: event.eventId, type: event.type, detail: event.detail },
          'unknown libvirt event; not published',
        );
        continue;
      }
      // A SUSPENDED/MIGRATED counts as Nova's even though its job check (at publish time) may find
      // that Nova would queue nothing: a domain whose STOPPED is held is off and cannot be migrating.
      const isNova =
        translation.kind === 'needs-job-check' || NOVA_TRANSITION[translation.transition] !== null;
      // Only Nova's own transitions reach its _event_emit_delayed, so only they cancel a held STOPPED
      // (what waited behind it goes out first, in order).
      if (isNova) {
        const followers = this.#delayed.cancelWithFollowers(event.uuid);
        if (followers) {
          metrics.delayedStops.inc({ outcome: 'cancelled' });
          this.#pending.push(...followers);
        }
      }
      const item: Ready = {
        uuid: event.uuid,
        name: event.name,
        transition: translation.kind === 'needs-job-check' ? 'paused' : translation.transition,
        libvirt: translation.libvirt,
        occurredMicros: event.wallMicros,
        delayedMs: 0,
        ...(translation.kind === 'needs-job-check' ? { needsJobCheck: true as const } : {}),
      };
      this.#offStates.noteEvent(event.uuid, item.transition);
      if (item.transition === 'stopped' && stopDelayMs > 0 && !this.#stopped) {
        this.#delayed.hold(event.uuid, item);
        this.#heldDuringListing?.add(event.uuid);
      } else if (isNova || !this.#delayed.follow(event.uuid, item)) {
        this.#pending.push(item);
      }
    }
    for (const [event, count] of received) metrics.eventsReceived.inc({ event }, count);
  }

  /** Puts what was accepted into the lane; resolves when it (and all before it) is in the outbox. */
  #enqueuePending(): Promise<void> {
    if (this.#pending.length === 0) return this.#lane;
    return this.#enqueue(() => this.#publishPending());
  }

  /**
   * Lane task: publishes what was accepted so far, up to LANE_BATCH (a later task may find nothing
   * left: fine). However many events wait, they cost one state query and one journal commit, so the
   * lane's rate grows with its backlog and sampling cannot become intake's bottleneck.
   */
  async #publishPending(): Promise<void> {
    if (this.#pending.length === 0) return;
    const batch = this.#pending.length <= LANE_BATCH ? this.#pending : this.#pending.splice(0, LANE_BATCH);
    if (batch === this.#pending) this.#pending = [];
    this.#inLane = batch.length;
    try {
      await this.#publishReady(batch);
    } finally {
      this.#inLane = 0;
      if (this.#roomWaiters.length > 0 && this.hasRoom) {
        const waiters = this.#roomWaiters;
        this.#roomWaiters = [];
        for (const wake of waiters) wake();
      }
      // What a capped batch left behind gets a task of its own (the pump's usually came first).
      if (this.#pending.length > 0) void this.#enqueuePending();
    }
  }

  /**
   * Publishes a complete snapshot of this host: one `sync` per domain with its live state, then one
   * `sync_end` listing them all, so a consumer can also converge rows whose domain vanished.
   */
  snapshot(reason: SnapshotReason): Promise<void> {
    // A snapshot of the same reason still waiting in the lane lists the domains later than this
    // request would, so it serves both: repeated overflows, or periodic ones during a long outage,
    // do not pile up (each would be journaled in full). Reasons stay distinct for the metric.
    const waiting = this.#snapshotsQueued.get(reason);
    if (waiting) return waiting;
    const queued = this.#enqueue(async () => {
      this.#snapshotsQueued.delete(reason);
      try {
        await this.#takeSnapshot(reason);
        this.#snapshotRetry.reset();
      } catch (error) {
        if (this.#stopped) throw error;
        // The state must be repaired now, not at the next periodic snapshot: try again shortly.
        const retryInMs = this.#snapshotRetry.next();
        this.#options.logger.error({ err: error, reason, retryInMs }, 'snapshot failed; retrying');
        setTimeout(() => {
          if (!this.#stopped) void this.snapshot(reason);
        }, retryInMs).unref();
      }
    });
    this.#snapshotsQueued.set(reason, queued);
    return queued;
  }

  async #takeSnapshot(reason: SnapshotReason): Promise<void> {
    const connection = this.#options.connection();
    if (!connection) {
      this.#options.logger.warn(
        { reason },
        'snapshot skipped: libvirt is not connected (the reconnect snapshot will follow)',
      );
      return;
    }
    // Every sync is stamped with the time before the listing, not after it: an event that happens
    // while the listing is read is newer than the snapshot and must not be dropped as out of order.
    const takenMicros = nowMicros();
    // After a reconnect or an overflow events were lost: what the last ones said proves nothing.
    if (reason !== 'periodic') {
      this.#offStates.forget();
    }
    const { domains, withheld: held } = await this.#listDomains(connection);
    const withheld = new Set([...held, ...this.#offStates.unexplained(domains, held)]);
    const described = domains.filter((domain) => !withheld.has(domain.uuid));
    const snapshot = {
      id: randomUUID(),
      reason,
      count: described.length,
      taken_at: isoMicros(takenMicros),
      ...(this.#options.resyncIntervalSeconds === undefined
        ? {}
        : { interval_seconds: this.#options.resyncIntervalSeconds }),
    };
    const messages = described.map((domain) =>
      this.#message({
        instanceUuid: domain.uuid,
        domainName: domain.name,
        transition: 'sync',
        libvirt: {
          event: 'STATE',
          detail: nameOrNumber(STATE_NAMES, domain.state),
          event_code: -1,
          detail_code: domain.state,
        },
        powerState: powerStateOf(domain.state),
        occurredMicros: takenMicros,
        delayedMs: 0,
        snapshot,
      }),
    );
    messages.push(
      this.#message({
        instanceUuid: null,
        domainName: null,
        transition: 'sync_end',
        libvirt: null,
        powerState: null,
        occurredMicros: takenMicros,
        delayedMs: 0,
        snapshot,
        // Withheld domains are listed all the same: they exist, and must not look vanished.
        instanceUuids: domains.map((domain) => domain.uuid),
      }),
    );
    await this.#append(messages);
    this.#options.metrics.resyncs.inc({ reason });
    this.#options.logger.info(
      {
        reason,
        domains: domains.length,
        withheld: domains.length - described.length,
        snapshot: snapshot.id,
      },
      'snapshot published',
    );
  }

  /**
   * Lists the domains and tells which of them no `sync` may describe: those whose STOPPED is held at
   * any moment from the start of the listing until every event that preceded the listing's reply has
   * been accepted. A listed SHUTOFF of a guest inside a reboot window (destroy, then start within the
   * delay) would otherwise reach the consumer as Nova's "shut down by itself" → stop, and the STARTED
   * that follows would meet a stop or force_stop. The held STOPPED speaks for the domain instead:
   * released, it is published as `stopped`; cancelled, the cancelling event is.
   *
   * libvirt's client hands an event to its callback before the reply to a later call on the same
   * connection, but the native queue reaches JavaScript asynchronously: the events still queued when
   * the reply is in are taken here (one loop turn later, so libvirt's event-loop thread has had its
   * turn too) and accepted before deciding. Their messages, like those of any event accepted while
   * the listing ran, go out after the snapshot, as they always did.
   */
  async #listDomains(
    connection: NativeConnection,
  ): Promise<{ domains: DomainInfo[]; withheld: ReadonlySet<string> }> {
    const withheld = new Set(this.#delayed.heldUuids());
    this.#heldDuringListing = withheld;
    try {
      const domains = await connection.listAllDomains();
      await new Promise<void>((resolve) => setImmediate(resolve));
      const queued = this.#options.takeQueued?.() ?? [];
      if (queued.length > 0) {
        this.#accept(queued);
        void this.#enqueuePending();
      }
      return { domains, withheld };
    } finally {
      this.#heldDuringListing = undefined;
    }
  }

  /**
   * Shutdown: stop holding new STOPPED events; pending ones are cancelled as Nova's Host.cleanup does
   * (the next start-up snapshot repairs the state) or, with flush, published now. Resolves when
   * everything dispatched is in the outbox.
   */
  async shutdown(flush: boolean): Promise<void> {
    this.#stopped = true;
    const held = this.#delayed.takeAll();
    if (held.length > 0) {
      this.#options.metrics.delayedStops.inc(
        { outcome: flush ? 'flushed_at_shutdown' : 'dropped_at_shutdown' },
        held.length,
      );
      this.#options.logger.info({ count: held.length, flush }, 'delayed STOPPED events at shutdown');
      // Dropped stops are Nova's Host.cleanup (the next start snapshot repairs them); the events
      // that waited behind them are published either way.
      for (const { item, heldMs, followers } of held) {
        if (flush) this.#pending.push({ ...item, delayedMs: heldMs });
        this.#pending.push(...followers);
      }
    }
    await this.#enqueuePending();
    // A capped lane batch queues its remainder behind itself: wait until the lane stops growing.
    for (let lane = this.#lane; ; lane = this.#lane) {
      await lane;
      if (lane === this.#lane) break;
    }
  }

  #enqueue(task: () => Promise<void>): Promise<void> {
    const run = this.#lane.then(task).catch((error: unknown) => {
      this.#options.logger.error({ err: error }, 'dispatch failed');
    });
    this.#lane = run;
    return run;
  }

  async #publishReady(items: readonly Ready[]): Promise<void> {
    const connection = this.#options.connection();
    const resolved: Ready[] = [];
    // SUSPENDED/MIGRATED events' job checks, all at once (rare; each is its own thread-pool job).
    const jobChecks = await migratedTransitions(
      connection,
      items.filter((item) => item.needsJobCheck).map((item) => item.uuid),
    );
    let jobCheck = 0;
    for (const item of items) {
      if (!item.needsJobCheck) {
        resolved.push(item);
        continue;
      }
      const transition = jobChecks[jobCheck++] ?? null;
      if (transition === null) {
        // Nova's callback raises out of its job query and queues nothing: neither do we.
        this.#options.logger.warn(
          { uuid: item.uuid, name: item.name, connected: connection !== undefined },
          'SUSPENDED/MIGRATED whose migration job could not be read: not published, as Nova',
        );
        continue;
      }
      resolved.push({
        uuid: item.uuid,
        name: item.name,
        transition,
        libvirt: item.libvirt,
        occurredMicros: item.occurredMicros,
        delayedMs: 0,
      });
    }
    if (resolved.length === 0) return;
    const states = await samplePowerStates(connection, [...new Set(resolved.map((item) => item.uuid))]);
    const messages: OutboxInput[] = [];
    for (const item of resolved) {
      // Building a large batch takes a while: let the event pump drain in between (intake first).
      if (messages.length > 0 && messages.length % BUILD_SLICE === 0) await new Promise(setImmediate);
      messages.push(
        this.#message({
          instanceUuid: item.uuid,
          domainName: item.name,
          transition: item.transition,
          libvirt: item.libvirt,
          powerState: states.get(item.uuid) ?? null,
          occurredMicros: item.occurredMicros,
          delayedMs: item.delayedMs,
        }),
      );
    }
    await this.#append(messages);
  }

  /** outbox.append, remembering since when the lane waits for it (appendStalled). */
  async #append(messages: readonly OutboxInput[]): Promise<void> {
    this.#appendingSince = (this.#options.now ?? Date.now)();
    try {
      await this.#options.outbox.append(messages);
    } finally {
      this.#appendingSince = undefined;
    }
  }

  #message(fields: LifecycleFields): OutboxInput {
    this.#seq += 1;
    return lifecycleInput(this.#options, this.#seq, fields);
  }
}

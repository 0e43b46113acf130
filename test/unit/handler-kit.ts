/**
 * A broker-free rig for the consumer's LifecycleHandler: an in-memory store with the real
 * compare-and-swap contract, a manual clock, a notifier whose publishes are recorded, commands
 * captured instead of sent, and bridges that number their messages as a real bridge process does
 * (one boot_id, a rising seq). Lets Nova's decisions be tested in milliseconds, branch by branch.
 */
import type { MaintenanceCheck } from '../../src/consumer/maintenance';
import { randomUUID } from 'node:crypto';
import { Registry } from 'prom-client';
import { LifecycleHandler, type ConsumerMode } from '../../src/consumer/handler';
import { createConsumerMetrics, type ConsumerMetrics } from '../../src/consumer/metrics';
import type { CommandResultIn, LifecycleEventIn } from '../../src/consumer/validate';
import type { Transition } from '../../src/libvirt/translate';
import type { CommandOutcome, StopCommand } from '../../src/messages/command';
import { decodeNotification } from '../../src/notify/instance-update';
import { Notifier } from '../../src/notify/notifier';
import { rowFromInput } from '../../src/store/schema';
import type { Decide, InstanceInput, InstanceRow, InstanceStore } from '../../src/store/types';
import { createLogger } from '../../src/util/log';
import { isoMicros } from '../../src/util/time';

/** An InstanceStore in memory: apply reads, decides and writes with compare-and-swap on version. */
export class MemoryStore implements InstanceStore {
  readonly kind = 'sqlite' as const;
  readonly rows = new Map<string, InstanceRow>();

  migrate(): Promise<void> {
    return Promise.resolve();
  }
  ping(): Promise<void> {
    return Promise.resolve();
  }
  get(uuid: string): Promise<InstanceRow | undefined> {
    return Promise.resolve(this.rows.get(uuid));
  }
  list(filter: { readonly host?: string } = {}): Promise<InstanceRow[]> {
    return Promise.resolve(
      [...this.rows.values()]
        .filter((row) => filter.host === undefined || row.host === filter.host)
        .sort((a, b) => a.uuid.localeCompare(b.uuid)),
    );
  }
  update(next: InstanceRow): Promise<boolean> {
    const row = this.rows.get(next.uuid);
    if (!row || row.version !== next.version) return Promise.resolve(false);
    this.rows.set(next.uuid, { ...next, version: next.version + 1 });
    return Promise.resolve(true);
  }
  apply(uuids: readonly string[], decide: Decide): Promise<ReadonlySet<string>> {
    const read = new Map<string, InstanceRow>();
    for (const uuid of uuids) {
      const row = this.rows.get(uuid);
      if (row) read.set(uuid, row);
    }
    const lost = new Set<string>();
    for (const { row, expected } of decide(read)) {
      if (this.rows.get(row.uuid)?.version !== expected) lost.add(row.uuid);
      else this.rows.set(row.uuid, row);
    }
    return Promise.resolve(lost);
  }
  upsert(rows: readonly InstanceInput[]): Promise<{ inserted: number; updated: number }> {
    for (const input of rows) this.rows.set(input.uuid, rowFromInput(input, isoMicros(1.7e15)));
    return Promise.resolve({ inserted: rows.length, updated: 0 });
  }
  expiredCommands(nowMs: number): Promise<InstanceRow[]> {
    return Promise.resolve(
      [...this.rows.values()].filter(
        (row) => row.pending_command_id !== null && (row.command_deadline_ms ?? Infinity) < nowMs,
      ),
    );
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
  row(uuid: string): InstanceRow {
    const row = this.rows.get(uuid);
    if (!row) throw new Error(`no row ${uuid}`);
    return row;
  }
}

/** What a notification said (host, power_state string), in publish order. */
export interface SeenUpdate {
  readonly uuid: unknown;
  readonly host: unknown;
  readonly power_state: unknown;
}

export interface Rig {
  readonly store: MemoryStore;
  readonly handler: LifecycleHandler;
  readonly commands: StopCommand[];
  readonly updates: SeenUpdate[];
  readonly metrics: ConsumerMetrics;
  /** The consumer's clock (epoch µs); advance it to expire things. */
  clock: number;
  /** Adds an active, launched, running instance on `host`. */
  instance(host: string, extra?: Partial<InstanceInput>): string;
  /** The value of virtbus_sync_actions_total for an action. */
  actions(action: string): Promise<number>;
}

export function rig(
  options: {
    mode?: ConsumerMode;
    followMigrations?: boolean;
    migrationWindowMs?: number;
    maintenance?: MaintenanceCheck;
    /** The broker refuses every stop command (a publish that fails). */
    refuseCommands?: boolean;
  } = {},
): Rig {
  const store = new MemoryStore();
  const commands: StopCommand[] = [];
  const updates: SeenUpdate[] = [];
  const metrics = createConsumerMetrics(new Registry());
  const logger = createLogger(process.env.VIRTBUS_TEST_LOG ?? 'silent', 'handler-test');
  const notifier = new Notifier({
    enabled: true,
    exchange: 'nova',
    topic: 'versioned_notifications',
    persistent: false,
    count: () => undefined,
    logger,
    publish: (_exchange, _key, body) => {
      const data = (decodeNotification(body).payload as { 'nova_object.data': Record<string, unknown> })[
        'nova_object.data'
      ];
      updates.push({ uuid: data.uuid, host: data.host, power_state: data.power_state });
      return Promise.resolve();
    },
  });
  const state: Rig = {
    store,
    commands,
    updates,
    metrics,
    clock: 1_800_000_000_000_000,
    handler: undefined as unknown as LifecycleHandler,
    instance(host, extra = {}) {
      const uuid = randomUUID();
      store.rows.set(
        uuid,
        rowFromInput(
          {
            uuid,
            host,
            vm_state: 'active',
            task_state: null,
            power_state: 1,
            launched_at: '2026-01-01T00:00:00.000000Z',
            ...extra,
          },
          isoMicros(state.clock - 3_600_000_000),
        ),
      );
      return uuid;
    },
    async actions(action) {
      const metric = await metrics.syncActions.get();
      return metric.values.find((value) => value.labels.action === action)?.value ?? 0;
    },
  };
  (state as { handler: LifecycleHandler }).handler = new LifecycleHandler({
    store,
    mode: options.mode ?? 'nova',
    stopTimeoutMs: 60_000,
    notifier,
    sendCommand: (command) => {
      if (options.refuseCommands) return Promise.reject(new Error('no route to the bridge (test)'));
      commands.push(command);
      return Promise.resolve();
    },
    metrics,
    logger,
    now: () => state.clock,
    ...(options.followMigrations === undefined ? {} : { followMigrations: options.followMigrations }),
    ...(options.migrationWindowMs === undefined ? {} : { migrationWindowMs: options.migrationWindowMs }),
    ...(options.maintenance === undefined ? {} : { maintenance: options.maintenance }),
  });
  return state;
}

/** libvirt event codes (virDomainEventType) for the messages a bridge sends. */
const EVENT_CODE: Partial<Record<Transition, number>> = {
  started: 2,
  paused: 3,
  postcopy_started: 3,
  migration_completed: 3,
  resumed: 4,
  stopped: 5,
};

/** One bridge process: its host, boot_id and seq; its wall clock can be stepped. */
export class Bridge {
  readonly bootId = randomUUID();
  #seq = 0;
  /** The bridge's wall clock (epoch µs), advanced 1 ms per message unless stepped. */
  clockUs: number;

  constructor(
    readonly host: string,
    startUs = 1_799_999_000_000_000,
  ) {
    this.clockUs = startUs;
  }

  event(
    uuid: string,
    transition: Transition,
    powerState: number | null,
    detailCode: number | null = 0,
  ): LifecycleEventIn {
    this.#seq += 1;
    this.clockUs += 1000;
    const eventCode = transition === 'sync' ? -1 : (EVENT_CODE[transition] ?? null);
    return {
      eventId: randomUUID(),
      host: this.host,
      instanceUuid: uuid,
      transition,
      powerState,
      occurredUs: this.clockUs,
      seq: this.#seq,
      bootId: this.bootId,
      snapshot: transition === 'sync' ? { id: randomUUID(), takenUs: this.clockUs } : undefined,
      instanceUuids: undefined,
      libvirt:
        eventCode === null
          ? null
          : { eventCode, detailCode: transition === 'sync' ? powerState : detailCode },
    };
  }

  syncEnd(uuids: readonly string[]): LifecycleEventIn {
    this.#seq += 1;
    this.clockUs += 1000;
    return {
      eventId: randomUUID(),
      host: this.host,
      instanceUuid: null,
      transition: 'sync_end',
      powerState: null,
      occurredUs: this.clockUs,
      seq: this.#seq,
      bootId: this.bootId,
      snapshot: { id: randomUUID(), takenUs: this.clockUs - 500 },
      instanceUuids: uuids,
      libvirt: null,
    };
  }
}

/** The bridge's result for a command. */
export function resultFor(
  command: StopCommand,
  outcome: CommandOutcome,
  powerState: number | null,
  host: string = command.host,
): CommandResultIn {
  return {
    commandId: command.command_id,
    action: command.action,
    host,
    instanceUuid: command.instance_uuid,
    outcome,
    method: outcome === 'stopped' ? 'shutdown' : 'none',
    powerState,
    error: outcome === 'stopped' || outcome === 'already_stopped' ? null : `${outcome} for the test`,
    finishedUs: null,
  };
}

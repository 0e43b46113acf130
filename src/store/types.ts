/**
 * The consumer's instance store: one row per Nova instance with the columns Nova's power-state sync
 * reads and writes, plus what virtbus needs to reject stale or duplicate events (the position of
 * the last applied event) and to track stop commands. Two implementations: SQLite (embedded,
 * default) and PostgreSQL (shared by several consumers). Every write is a compare-and-swap on
 * `version`, so concurrent consumers can never overwrite each other's decisions.
 */
import type { HostStore } from './hosts-types';

/** Nova's vm_state strings (nova/objects/fields.py InstanceState). */
export const VM_STATES = [
  'active',
  'building',
  'paused',
  'suspended',
  'stopped',
  'rescued',
  'resized',
  'soft-delete',
  'deleted',
  'error',
  'shelved',
  'shelved_offloaded',
] as const;
export type VmState = (typeof VM_STATES)[number];

/** Nova's power_state codes that may be stored (nova/compute/power_state.py). */
export const POWER_STATE_CODES = [0, 1, 3, 4, 6, 7] as const;

export function isPowerStateCode(value: unknown): value is (typeof POWER_STATE_CODES)[number] {
  return typeof value === 'number' && (POWER_STATE_CODES as readonly number[]).includes(value);
}

export interface InstanceRow {
  readonly uuid: string;
  /** The compute host owning the instance (Nova's instance.host); null before scheduling. */
  readonly host: string | null;
  readonly vm_state: string;
  readonly task_state: string | null;
  readonly power_state: number;
  /** ISO-8601 UTC or null (never launched: Nova's stop API refuses such instances). */
  readonly launched_at: string | null;
  readonly created_at: string;
  /** Last change of a state column (ISO-8601 UTC with microseconds). */
  readonly updated_at: string;
  /** occurred_at (epoch µs) of the last lifecycle message applied to this row. */
  readonly event_at_us: number | null;
  readonly event_boot_id: string | null;
  readonly event_seq: number | null;
  /** The stop command in flight (task_state powering-off), its action and deadline (epoch ms). */
  readonly pending_command_id: string | null;
  /**
   * The host the pending command was sent to: its result must come from there. Kept apart from
   * `host` because the row can follow a migration while the command is out.
   */
  readonly pending_command_host: string | null;
  readonly pending_action: string | null;
  readonly command_deadline_ms: number | null;
  /** What the consumer last did or, in observe mode, would have done (stop, would_force_stop, …). */
  readonly last_action: string | null;
  readonly last_action_at: string | null;
  /** Why the last stop command did not complete (failed/refused/expired/skipped/timeout). */
  readonly last_error: string | null;
  /** A live migration of this instance half in evidence (one side's word), or null. */
  readonly migration: MigrationEvidence | null;
  /** Other instance fields (display_name, user_id, tenant_id, flavor, …) carried into notifications. */
  readonly attrs: Readonly<Record<string, unknown>>;
  /** Compare-and-swap counter: bumped by every write. */
  readonly version: number;
}

/** A position in a bridge's event order: occurred_at (epoch µs), boot_id and seq of its message. */
export interface EventPosition {
  readonly at_us: number;
  readonly boot_id: string | null;
  readonly seq: number | null;
}

/**
 * What the consumer has heard of a live migration of a row not yet agreed by both hosts (stored as
 * JSON). `source` is the row's host when its word was recorded: evidence from a host the row no
 * longer names is void. The row moves to `dest` only once the source said the guest left
 * (`source_state` left) and a destination said it arrived; half evidence expires `updated_us`
 * (consumer clock) + the configured window.
 */
export interface MigrationEvidence {
  readonly source: string;
  /** The source's word: the guest is leaving (paused/postcopy for migration) or has left. */
  readonly source_state: 'leaving' | 'left' | null;
  /** The host that reported the guest arriving (started/resumed migrated, or a snapshot running). */
  readonly dest: string | null;
  /**
   * The destination's power_state to take on the move (running), null while its newest word does
   * not say the guest runs there (STARTED MIGRATED: evidence only); and its newest event position.
   */
  readonly dest_power: number | null;
  readonly dest_position: EventPosition | null;
  /** When the evidence last changed (consumer clock, epoch µs). */
  readonly updated_us: number;
}

/** What `virtbus instances import` and tests insert or replace. */
export interface InstanceInput {
  readonly uuid: string;
  readonly host: string | null;
  readonly vm_state: string;
  readonly task_state: string | null;
  readonly power_state: number;
  readonly launched_at: string | null;
  /** Nova's created_at when the import gives it (normalised UTC); otherwise the import time. */
  readonly created_at?: string | null;
  readonly attrs?: Readonly<Record<string, unknown>>;
}

/**
 * The columns a consumer decision may change (Nova's state columns, the event position, the stop
 * command, what the consumer did, and `host` with the migration evidence: the row follows a live
 * migration both hosts agree on). `apply` writes only these: launched_at, attrs and created_at
 * belong to the operator (`virtbus instances`), whose writes bump the version too, so a decision
 * taken before such a write loses its compare-and-swap and is taken again.
 */
export const STATE_COLUMNS = [
  'host',
  'vm_state',
  'task_state',
  'power_state',
  'updated_at',
  'event_at_us',
  'event_boot_id',
  'event_seq',
  'pending_command_id',
  'pending_command_host',
  'pending_action',
  'command_deadline_ms',
  'last_action',
  'last_action_at',
  'last_error',
  'migration',
] as const;

/** One compare-and-swap write of `apply`: `row` replaces the stored row if its version is still `expected`. */
export interface RowWrite {
  /** The row to store; its `version` is the new one (expected + 1). */
  readonly row: InstanceRow;
  /** The version the decision was taken on. */
  readonly expected: number;
}

/** Decides, synchronously, on the rows `apply` read (absent uuids have no row); returns the writes. */
export type Decide = (rows: ReadonlyMap<string, InstanceRow>) => readonly RowWrite[];

/**
 * A store failure that says nothing about the message being processed: the database is down,
 * locked or overloaded. The consumer pauses and retries instead of dead-lettering.
 */
export class StoreUnavailableError extends Error {
  override readonly name = 'StoreUnavailableError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

export interface InstanceStore {
  readonly kind: 'sqlite' | 'postgres';
  /** The hosts view (hosts-types.ts); absent in test doubles, which then keep none. */
  readonly hosts?: HostStore;
  /** Creates or upgrades the schema (idempotent; safe when several consumers start at once). */
  migrate(): Promise<void>;
  /** Resolves when the database answers a trivial query. */
  ping(): Promise<void>;
  get(uuid: string): Promise<InstanceRow | undefined>;
  /** Every row, or those of one host, ordered by uuid. */
  list(filter?: { readonly host?: string }): Promise<InstanceRow[]>;
  /**
   * Compare-and-swap: writes every mutable column of `next` if the row's version is still
   * `next.version`, and bumps the version. Resolves true once committed, false if the row changed
   * (or vanished) meanwhile — the caller re-reads and decides again.
   */
  update(next: InstanceRow): Promise<boolean>;
  /**
   * One read–decide–write round for a batch of messages: reads the rows of `uuids`, calls `decide`
   * once with them, writes what it returns (at most one write per uuid; STATE_COLUMNS only) as
   * compare-and-swap updates, and resolves — after the commit — with the uuids whose write lost its
   * race (the caller re-reads those and decides again). SQLite: one BEGIN IMMEDIATE … COMMIT around
   * the reads and the writes (nothing can change in between). PostgreSQL: one SELECT … = ANY($1) and
   * one UPDATE … FROM unnest(…) statement. On failure (or when `decide` throws) nothing is written.
   */
  apply(uuids: readonly string[], decide: Decide): Promise<ReadonlySet<string>>;
  /** Inserts or replaces rows (import); event positions of existing rows are kept. */
  upsert(rows: readonly InstanceInput[]): Promise<{ inserted: number; updated: number }>;
  /** Rows whose stop command passed its deadline without a result. */
  expiredCommands(nowMs: number): Promise<InstanceRow[]>;
  close(): Promise<void>;
}

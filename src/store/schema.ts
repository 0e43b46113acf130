/**
 * The instance table and its migrations, per dialect, plus the row mapping both stores share.
 * Migrations are numbered and applied in order inside one transaction each; the applied ones are
 * recorded in virtbus_migrations. Never edit a released migration: append a new one.
 */
import { STATE_COLUMNS, type InstanceInput, type InstanceRow, type MigrationEvidence } from './types';

export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

/** Times as ISO-8601 UTC text with microseconds: sortable as text and readable in both databases. */
export const SQLITE_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'instances',
    sql: `
      CREATE TABLE instances (
        uuid TEXT PRIMARY KEY,
        host TEXT,
        vm_state TEXT NOT NULL,
        task_state TEXT,
        power_state INTEGER NOT NULL DEFAULT 0,
        launched_at TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        event_at_us INTEGER,
        event_boot_id TEXT,
        event_seq INTEGER,
        pending_command_id TEXT,
        pending_action TEXT,
        command_deadline_ms INTEGER,
        last_action TEXT,
        last_action_at TEXT,
        last_error TEXT,
        attrs TEXT NOT NULL DEFAULT '{}',
        version INTEGER NOT NULL DEFAULT 0
      ) STRICT;
      CREATE INDEX instances_host ON instances (host);
      CREATE INDEX instances_command_deadline ON instances (command_deadline_ms)
        WHERE pending_command_id IS NOT NULL;
    `,
  },
  {
    version: 2,
    name: 'command host and migration evidence',
    sql: `
      ALTER TABLE instances ADD COLUMN pending_command_host TEXT;
      ALTER TABLE instances ADD COLUMN migration TEXT;
      UPDATE instances SET pending_command_host = host WHERE pending_command_id IS NOT NULL;
    `,
  },
  {
    version: 3,
    name: 'hosts',
    // The hosts view (hosts-types.ts): what consumers saw of each host and its maintenance switch.
    // The index lets the per-host power-state counts read the index alone.
    sql: `
      CREATE TABLE hosts (
        host TEXT PRIMARY KEY,
        last_event_at_us INTEGER,
        last_seen_at_us INTEGER,
        boot_id TEXT,
        snapshot_id TEXT,
        snapshot_at_us INTEGER,
        snapshot_seen_at_us INTEGER,
        snapshot_boot_id TEXT,
        snapshot_interval_s INTEGER,
        maintenance_reason TEXT,
        maintenance_since_us INTEGER,
        maintenance_until_us INTEGER,
        maintenance_by TEXT
      ) STRICT;
      CREATE INDEX instances_host_power ON instances (host, power_state, vm_state);
    `,
  },
];

export const POSTGRES_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'instances',
    sql: `
      CREATE TABLE instances (
        uuid TEXT PRIMARY KEY,
        host TEXT,
        vm_state TEXT NOT NULL,
        task_state TEXT,
        power_state SMALLINT NOT NULL DEFAULT 0,
        launched_at TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        event_at_us BIGINT,
        event_boot_id TEXT,
        event_seq BIGINT,
        pending_command_id TEXT,
        pending_action TEXT,
        command_deadline_ms BIGINT,
        last_action TEXT,
        last_action_at TEXT,
        last_error TEXT,
        attrs JSONB NOT NULL DEFAULT '{}',
        version BIGINT NOT NULL DEFAULT 0
      );
      CREATE INDEX instances_host ON instances (host);
      CREATE INDEX instances_command_deadline ON instances (command_deadline_ms)
        WHERE pending_command_id IS NOT NULL;
    `,
  },
  {
    version: 2,
    name: 'command host and migration evidence',
    sql: `
      ALTER TABLE instances ADD COLUMN pending_command_host TEXT;
      ALTER TABLE instances ADD COLUMN migration TEXT;
      UPDATE instances SET pending_command_host = host WHERE pending_command_id IS NOT NULL;
    `,
  },
  {
    version: 3,
    name: 'hosts',
    // The hosts view (hosts-types.ts): what consumers saw of each host and its maintenance switch.
    // The index lets the per-host power-state counts read the index alone.
    sql: `
      CREATE TABLE hosts (
        host TEXT PRIMARY KEY,
        last_event_at_us BIGINT,
        last_seen_at_us BIGINT,
        boot_id TEXT,
        snapshot_id TEXT,
        snapshot_at_us BIGINT,
        snapshot_seen_at_us BIGINT,
        snapshot_boot_id TEXT,
        snapshot_interval_s BIGINT,
        maintenance_reason TEXT,
        maintenance_since_us BIGINT,
        maintenance_until_us BIGINT,
        maintenance_by TEXT
      );
      CREATE INDEX instances_host_power ON instances (host, power_state, vm_state);
    `,
  },
];

/** The columns `update` writes (everything but uuid, created_at and version). */
export const MUTABLE_COLUMNS = ['launched_at', ...STATE_COLUMNS, 'attrs'] as const;

type RawValue = string | number | bigint | null | Record<string, unknown>;

function toNumber(value: RawValue | undefined): number | null {
  if (value === null || value === undefined) return null;
  return typeof value === 'object' ? null : Number(value);
}

function toText(value: RawValue | undefined): string | null {
  if (value === null || value === undefined) return null;
  return typeof value === 'object' ? JSON.stringify(value) : String(value);
}

function required(value: RawValue | undefined): string {
  return toText(value) ?? '';
}

/** The migration column (JSON text); anything unreadable is no evidence. */
function migrationFromDb(value: RawValue | undefined): MigrationEvidence | null {
  const text = toText(value);
  if (text === null) return null;
  try {
    const parsed = JSON.parse(text) as unknown;
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return null;
    const evidence = parsed as MigrationEvidence;
    return typeof evidence.source === 'string' && typeof evidence.updated_us === 'number' ? evidence : null;
  } catch {
    return null;
  }
}

/** A column's value as a statement parameter (JSON for attrs and the migration evidence). */
function param(row: InstanceRow, column: (typeof MUTABLE_COLUMNS)[number]): string | number | null {
  const value = row[column];
  if (column === 'attrs') return JSON.stringify(value ?? {});
  if (column === 'migration') return value === null || value === undefined ? null : JSON.stringify(value);
  return value as string | number | null;
}

/** A database row (SQLite: attrs is JSON text; PostgreSQL: BIGINTs are strings, attrs an object). */
export function rowFromDb(raw: Record<string, RawValue>): InstanceRow {
  const attrs = raw.attrs;
  let parsedAttrs: Record<string, unknown> = {};
  if (typeof attrs === 'string') {
    try {
      const value = JSON.parse(attrs) as unknown;
      if (value !== null && typeof value === 'object' && !Array.isArray(value))
        parsedAttrs = value as Record<string, unknown>;
    } catch {
      parsedAttrs = {};
    }
  } else if (attrs !== null && typeof attrs === 'object') {
    parsedAttrs = attrs;
  }
  return {
    uuid: required(raw.uuid),
    host: toText(raw.host),
    vm_state: required(raw.vm_state),
    task_state: toText(raw.task_state),
    power_state: toNumber(raw.power_state) ?? 0,
    launched_at: toText(raw.launched_at),
    created_at: required(raw.created_at),
    updated_at: required(raw.updated_at),
    event_at_us: toNumber(raw.event_at_us),
    event_boot_id: toText(raw.event_boot_id),
    event_seq: toNumber(raw.event_seq),
    pending_command_id: toText(raw.pending_command_id),
    pending_command_host: toText(raw.pending_command_host),
    pending_action: toText(raw.pending_action),
    command_deadline_ms: toNumber(raw.command_deadline_ms),
    last_action: toText(raw.last_action),
    last_action_at: toText(raw.last_action_at),
    last_error: toText(raw.last_error),
    migration: migrationFromDb(raw.migration),
    attrs: parsedAttrs,
    version: toNumber(raw.version) ?? 0,
  };
}

/** The mutable columns of a row as statement parameters, in MUTABLE_COLUMNS order. */
export function mutableValues(row: InstanceRow): Array<string | number | null> {
  return MUTABLE_COLUMNS.map((column) => param(row, column));
}

/** The state columns of a row as statement parameters, in STATE_COLUMNS order. */
export function stateValues(row: InstanceRow): Array<string | number | null> {
  return STATE_COLUMNS.map((column) => param(row, column));
}

/** A full row for an imported instance (no event position, no command). */
export function rowFromInput(input: InstanceInput, now: string): InstanceRow {
  return {
    uuid: input.uuid,
    host: input.host,
    vm_state: input.vm_state,
    task_state: input.task_state,
    power_state: input.power_state,
    launched_at: input.launched_at,
    created_at: input.created_at ?? now,
    updated_at: now,
    event_at_us: null,
    event_boot_id: null,
    event_seq: null,
    pending_command_id: null,
    pending_command_host: null,
    pending_action: null,
    command_deadline_ms: null,
    last_action: null,
    last_action_at: null,
    last_error: null,
    migration: null,
    attrs: input.attrs ?? {},
    version: 0,
  };
}

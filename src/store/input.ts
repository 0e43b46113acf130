/**
 * Validation of instance rows given by operators: `virtbus instances import` (a JSON array or NDJSON
 * of objects) and `virtbus instances set UUID key=value…`. Problems name the record and the field.
 */
import { isPowerStateCode, STATE_COLUMNS, VM_STATES, type InstanceInput, type InstanceRow } from './types';
import { isoMicros, parseIsoMicros, utcMillis } from '../util/time';

export const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export class InputError extends Error {
  override readonly name = 'InputError';
}

const CORE_KEYS = new Set(['uuid', 'host', 'vm_state', 'task_state', 'power_state', 'launched_at']);
/** Nova datetimes an import may carry: created_at (a column) and attributes, normalised to UTC. */
const IMPORT_TIMES = new Set(['created_at', 'terminated_at', 'deleted_at']);
/**
 * Columns the store owns; an import never sets them (created_at only from an import, see above):
 * the state columns the store's decisions write, beyond the three an import may set, and its own
 * bookkeeping.
 */
const RESERVED_KEYS = new Set<string>([
  'created_at',
  ...STATE_COLUMNS.filter((column) => !CORE_KEYS.has(column)),
  'version',
  'attrs',
]);

/** Operator times: a date, optionally a time (T or space) with up to 6 fraction digits and an offset. */
const ISO_INPUT =
  /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?(?:(Z)|([+-])(\d{2}):?(\d{2}))?)?$/i;

/**
 * ISO-8601 (with or without fraction, Z or offset; no offset is UTC, as Nova's naive UTC datetimes)
 * → the store's UTC form with microseconds; undefined unless the date and time exist.
 */
export function normalizeTime(value: string): string | undefined {
  const micros = parseIsoMicros(value);
  if (!Number.isNaN(micros)) return isoMicros(micros);
  const match = ISO_INPUT.exec(value);
  if (!match) return undefined;
  const part = (index: number): number => Number(match[index] ?? 0);
  const millis = utcMillis(part(1), part(2), part(3), part(4), part(5), part(6));
  const offsetHours = part(10);
  const offsetMinutes = part(11);
  if (Number.isNaN(millis) || offsetHours > 23 || offsetMinutes > 59) return undefined;
  const offsetMs = (match[9] === '-' ? -1 : 1) * (offsetHours * 60 + offsetMinutes) * 60_000;
  const fraction = Number((match[7] ?? '').padEnd(6, '0'));
  return isoMicros((millis - offsetMs) * 1000 + fraction);
}

function field(where: string, key: string, problem: string): InputError {
  return new InputError(`${where}: ${key} ${problem}`);
}

export function validateVmState(where: string, value: unknown): string {
  if (typeof value !== 'string' || !(VM_STATES as readonly string[]).includes(value))
    throw field(where, 'vm_state', `must be one of ${VM_STATES.join(', ')} (got ${JSON.stringify(value)})`);
  return value;
}

export function validatePowerState(where: string, value: unknown): number {
  const number = typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : value;
  if (!isPowerStateCode(number))
    throw field(
      where,
      'power_state',
      `must be a Nova power_state code 0, 1, 3, 4, 6 or 7 (got ${JSON.stringify(value)})`,
    );
  return number;
}

function optionalText(where: string, key: string, value: unknown): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'string' || value === '')
    throw field(where, key, 'must be a non-empty string or null');
  return value;
}

function optionalTime(where: string, key: string, value: unknown): string | null {
  if (value === undefined || value === null) return null;
  const normalized = typeof value === 'string' ? normalizeTime(value) : undefined;
  if (!normalized) throw field(where, key, `must be an ISO-8601 time or null (got ${JSON.stringify(value)})`);
  return normalized;
}

/** One imported object → InstanceInput; keys other than the core ones go to attrs. */
export function parseInstance(where: string, value: unknown): InstanceInput {
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    throw new InputError(`${where}: not a JSON object`);
  const record = value as Record<string, unknown>;
  if (typeof record.uuid !== 'string' || !UUID_PATTERN.test(record.uuid))
    throw field(where, 'uuid', `must be a UUID (got ${JSON.stringify(record.uuid)})`);
  const attrs: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(record)) {
    if (CORE_KEYS.has(key) || key === 'created_at') continue;
    if (RESERVED_KEYS.has(key)) continue;
    attrs[key] = IMPORT_TIMES.has(key) ? optionalTime(where, key, item) : item;
  }
  const createdAt = optionalTime(where, 'created_at', record.created_at);
  return {
    uuid: record.uuid.toLowerCase(),
    host: optionalText(where, 'host', record.host),
    vm_state: validateVmState(where, record.vm_state ?? 'active'),
    task_state: optionalText(where, 'task_state', record.task_state),
    power_state: validatePowerState(where, record.power_state ?? 0),
    launched_at: optionalTime(where, 'launched_at', record.launched_at),
    ...(createdAt ? { created_at: createdAt } : {}),
    attrs,
  };
}

/** A JSON array of objects, or NDJSON (one object per line; blank lines and # comments skipped). */
export function parseInstanceFile(text: string): InstanceInput[] {
  const trimmed = text.trim();
  if (trimmed === '') return [];
  if (trimmed.startsWith('[')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(trimmed);
    } catch (error) {
      throw new InputError(`not valid JSON: ${(error as Error).message}`);
    }
    if (!Array.isArray(parsed)) throw new InputError('expected a JSON array of objects');
    return parsed.map((item, index) => parseInstance(`record ${index + 1}`, item));
  }
  const rows: InstanceInput[] = [];
  text.split('\n').forEach((line, index) => {
    const content = line.trim();
    if (content === '' || content.startsWith('#')) return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(content);
    } catch (error) {
      throw new InputError(`line ${index + 1}: not valid JSON: ${(error as Error).message}`);
    }
    rows.push(parseInstance(`line ${index + 1}`, parsed));
  });
  return rows;
}

/** `set` assignments (key=value; null or an empty value clears) applied to a row. */
export function applyAssignments(row: InstanceRow, assignments: readonly string[]): InstanceRow {
  let next: InstanceRow = row;
  for (const assignment of assignments) {
    const eq = assignment.indexOf('=');
    if (eq < 1) throw new InputError(`${assignment}: expected key=value`);
    const key = assignment.slice(0, eq);
    const raw = assignment.slice(eq + 1);
    const value = raw === '' || raw === 'null' ? null : raw;
    const where = 'set';
    switch (key) {
      case 'host':
        // The operator says where the instance is: any migration evidence is void.
        next = { ...next, host: value, ...(value !== next.host ? { migration: null } : {}) };
        break;
      case 'vm_state':
        next = { ...next, vm_state: validateVmState(where, value) };
        break;
      case 'task_state':
        // A changed task_state takes the row out of any pending stop: that command's result must
        // not complete it (the consumer ignores results for a command that is no longer pending).
        next = {
          ...next,
          task_state: value,
          ...(value !== next.task_state
            ? {
                pending_command_id: null,
                pending_command_host: null,
                pending_action: null,
                command_deadline_ms: null,
              }
            : {}),
        };
        break;
      case 'power_state':
        next = { ...next, power_state: validatePowerState(where, value) };
        break;
      case 'launched_at':
        next = { ...next, launched_at: optionalTime(where, key, value) };
        break;
      default:
        if (CORE_KEYS.has(key) || RESERVED_KEYS.has(key) || !/^[a-z][a-z0-9_]*$/.test(key))
          throw new InputError(
            `${key}: cannot be set (settable: host, vm_state, task_state, power_state, launched_at, or an attribute name)`,
          );
        next = {
          ...next,
          attrs: { ...next.attrs, [key]: IMPORT_TIMES.has(key) ? optionalTime(where, key, value) : value },
        };
    }
  }
  return next;
}

/**
 * `virtbus instances import FILE | list [--json] [--host HOST] | set UUID key=value…`: manage the
 * instance rows in the consumer's store (db.url). Writes are compare-and-swap updates like the
 * consumer's own, so they are safe while consumers run; they emit no notifications.
 */
import { readFileSync } from 'node:fs';
import { loadConfig } from '../../config/load';
import { POWER_STATE_NAMES, type PowerStateCode } from '../../libvirt/constants';
import { applyAssignments, InputError, parseInstanceFile, UUID_PATTERN } from '../../store/input';
import { openStore } from '../../store/open';
import type { InstanceRow, InstanceStore } from '../../store/types';
import { createLogger } from '../../util/log';
import { isoMicros, nowMicros } from '../../util/time';
import { formatTable } from '../table';
import { CONFIG_FLAGS, parseArgs, UsageError } from '../usage';

const HELP = `Usage: virtbus instances <import|list|set> [options] [config flags]

Manage the instance rows the consumer keeps in sync (database: db.url / --db-url / VIRTBUS_DB_URL).

  virtbus instances import FILE      insert or replace rows from FILE (- for stdin): a JSON array
                                     or NDJSON of objects with uuid, host, vm_state, task_state,
                                     power_state (Nova's integer code), launched_at; other keys
                                     (display_name, user_id, tenant_id, flavor, …) are kept and
                                     appear in notifications
  virtbus instances list [--json] [--host HOST]
                                     print the rows (a table, or one JSON array of objects)
  virtbus instances set UUID key=value...
                                     change a row: host, vm_state, task_state, power_state,
                                     launched_at or an attribute; an empty value or null clears it
                                     (task_state= also forgets a pending stop command)

Exit codes: 0 done, 2 bad usage, configuration or input, 1 other errors (unknown UUID, database).
`;

function listRecord(row: InstanceRow): Record<string, unknown> {
  return {
    uuid: row.uuid,
    host: row.host,
    vm_state: row.vm_state,
    task_state: row.task_state,
    power_state: row.power_state,
    power_state_name: POWER_STATE_NAMES[row.power_state as PowerStateCode] ?? String(row.power_state),
    launched_at: row.launched_at,
    created_at: row.created_at,
    updated_at: row.updated_at,
    last_event:
      row.event_at_us === null
        ? null
        : { occurred_at: isoMicros(row.event_at_us), boot_id: row.event_boot_id, seq: row.event_seq },
    pending_command:
      row.pending_command_id === null
        ? null
        : {
            id: row.pending_command_id,
            action: row.pending_action,
            deadline:
              row.command_deadline_ms === null ? null : new Date(row.command_deadline_ms).toISOString(),
          },
    last_action: row.last_action,
    last_action_at: row.last_action_at,
    last_error: row.last_error,
    attrs: row.attrs,
  };
}

function table(rows: readonly InstanceRow[]): string {
  const header = [
    'UUID',
    'HOST',
    'VM_STATE',
    'TASK_STATE',
    'POWER_STATE',
    'LAUNCHED_AT',
    'LAST_ACTION',
    'LAST_ERROR',
  ];
  const lines = rows.map((row) => [
    row.uuid,
    row.host ?? '-',
    row.vm_state,
    row.task_state ?? '-',
    `${row.power_state} ${POWER_STATE_NAMES[row.power_state as PowerStateCode] ?? ''}`.trim(),
    row.launched_at ?? '-',
    row.last_action ?? '-',
    row.last_error ?? '-',
  ]);
  return formatTable(header, lines);
}

async function importRows(store: InstanceStore, file: string): Promise<number> {
  let text: string;
  try {
    text = readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (error) {
    throw new UsageError(`cannot read ${file}: ${(error as Error).message}`);
  }
  const rows = parseInstanceFile(text);
  const seen = new Set<string>();
  for (const row of rows) {
    if (seen.has(row.uuid)) throw new InputError(`uuid ${row.uuid} appears more than once`);
    seen.add(row.uuid);
  }
  const { inserted, updated } = await store.upsert(rows);
  process.stdout.write(`imported ${rows.length} instances (${inserted} new, ${updated} replaced)\n`);
  return 0;
}

async function setRow(store: InstanceStore, uuid: string, assignments: readonly string[]): Promise<number> {
  if (!UUID_PATTERN.test(uuid)) throw new UsageError(`${uuid} is not a UUID`);
  if (assignments.length === 0) throw new UsageError('set needs at least one key=value');
  for (let attempt = 0; attempt < 100; attempt += 1) {
    const row = await store.get(uuid.toLowerCase());
    if (!row) {
      process.stderr.write(`virtbus instances: no instance ${uuid} (use import to add it)\n`);
      return 1;
    }
    const next = { ...applyAssignments(row, assignments), updated_at: isoMicros(nowMicros()) };
    if (await store.update(next)) {
      process.stdout.write(`${JSON.stringify(listRecord({ ...next, version: row.version + 1 }))}\n`);
      return 0;
    }
  }
  process.stderr.write(`virtbus instances: ${uuid} keeps changing; try again\n`);
  return 1;
}

export async function run(argv: readonly string[]): Promise<number> {
  const args = parseArgs(
    argv,
    { json: { value: false }, host: { value: true } },
    CONFIG_FLAGS.filter((flag) => flag !== 'host'),
  );
  const [action, ...rest] = args.positionals;
  if (args.help || action === 'help') {
    process.stdout.write(HELP);
    return 0;
  }
  if (action !== 'import' && action !== 'list' && action !== 'set')
    throw new UsageError(
      action === undefined ? `a subcommand is needed\n\n${HELP}` : `unknown subcommand ${action}\n\n${HELP}`,
    );
  if (action !== 'list' && (args.flags.has('json') || args.flags.has('host')))
    throw new UsageError('--json and --host apply to list only');
  if (action === 'import' && rest.length !== 1) throw new UsageError('import takes exactly one FILE (or -)');
  if (action === 'list' && rest.length > 0) throw new UsageError(`unexpected argument ${rest[0]}`);
  const config = loadConfig({ role: 'consumer', args: args.configArgs });
  const store = openStore(config.db, createLogger('silent', 'virtbus-instances'), 'virtbus-instances');
  try {
    await store.migrate();
    if (action === 'import') return await importRows(store, rest[0] as string);
    if (action === 'set') return await setRow(store, rest[0] ?? '', rest.slice(1));
    const host = args.flags.get('host')?.[0];
    const rows = await store.list(host === undefined ? {} : { host });
    process.stdout.write(
      args.flags.has('json') ? `${JSON.stringify(rows.map(listRecord), null, 2)}\n` : table(rows),
    );
    return 0;
  } catch (error) {
    if (error instanceof InputError) throw new UsageError(error.message);
    throw error;
  } finally {
    await store.close();
  }
}

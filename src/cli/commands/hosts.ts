/**
 * `virtbus hosts list [--json] | disable HOST --reason TEXT [--until TIME] | enable HOST`: the hosts
 * view the consumers keep in the database (last event, last complete snapshot, the bridge's boot_id
 * and snapshot interval, rows by power state, whether snapshots are overdue) and the per-host
 * maintenance switch (src/consumer/maintenance.ts). Every consumer re-reads the switch every
 * consumer.hostsIntervalMs, so it takes effect within that time.
 */
import { userInfo } from 'node:os';
import { loadConfig } from '../../config/load';
import { hostViews, type HostView } from '../../consumer/host-status';
import { openStore } from '../../store/open';
import type { HostStore } from '../../store/hosts-types';
import { createLogger } from '../../util/log';
import { isoMicros, nowMicros } from '../../util/time';
import { formatTable } from '../table';
import { CONFIG_FLAGS, parseArgs, UsageError } from '../usage';

const HELP = `Usage: virtbus hosts <list|disable|enable> [options] [config flags]

The compute hosts the consumers have rows or messages for (database: db.url / --db-url).

  virtbus hosts list [--json]        per host: STATE (ok; silent: no complete snapshot for more than
                                     two of its bridge's periodic intervals while its rows say guests
                                     run; overdue: the same with nothing running; unknown: no
                                     snapshot yet, or its bridge does not announce its interval),
                                     the last event and snapshot, the bridge's boot_id and interval,
                                     rows by power state, maintenance
  virtbus hosts disable HOST --reason TEXT [--until TIME]
                                     maintenance: the consumers keep recording the power states of
                                     HOST's instances but send no stop or force_stop for them (and
                                     so change no vm_state) until enabled again or TIME: an ISO-8601
                                     time (2026-12-08T06:00:00Z) or a duration from now (90m, 8h, 2d)
  virtbus hosts enable HOST          end maintenance; the next snapshot of HOST applies Nova's
                                     power-state table as usual

Consumers pick a change up within consumer.hostsIntervalMs (2 s by default).
Exit codes: 0 done, 2 bad usage or configuration, 1 other errors (database).
`;

const UNITS: Readonly<Record<string, number>> = { s: 1, m: 60, h: 3600, d: 86400 };

/** --until: an ISO-8601 time or a duration (90m, 8h, 2d) from `nowUs`; epoch µs, in the future. */
export function parseUntil(text: string, nowUs: number): number {
  const duration = /^(\d+)([smhd])$/.exec(text.trim());
  let untilUs: number;
  if (duration) untilUs = nowUs + Number(duration[1]) * (UNITS[duration[2] as string] as number) * 1e6;
  else {
    // A time without a zone would depend on the machine's; ask for one.
    if (!/(Z|[+-]\d\d:?\d\d)$/i.test(text.trim()))
      throw new UsageError(`--until ${text}: give a duration (90m, 8h, 2d) or an ISO-8601 time with a zone`);
    const ms = Date.parse(text);
    if (Number.isNaN(ms)) throw new UsageError(`--until ${text}: not a time`);
    untilUs = ms * 1000;
  }
  if (untilUs <= nowUs) throw new UsageError(`--until ${text}: lies in the past`);
  return untilUs;
}

const iso = (us: number | null): string | null => (us === null ? null : isoMicros(us));

function jsonRecord(view: HostView): Record<string, unknown> {
  return {
    host: view.host,
    state: view.state,
    last_event_at: iso(view.lastEventUs),
    last_snapshot_at: iso(view.snapshotUs),
    snapshot_age_seconds: view.snapshotAgeSeconds,
    snapshot_interval_seconds: view.intervalSeconds,
    boot_id: view.bootId,
    rows: view.rows,
    maintenance: view.maintenance && {
      active: view.maintenance.active,
      reason: view.maintenance.reason,
      since: isoMicros(view.maintenance.sinceUs),
      until: iso(view.maintenance.untilUs),
      by: view.maintenance.by,
    },
  };
}

function ago(seconds: number | null): string {
  if (seconds === null) return '-';
  if (seconds < 120) return `${seconds}s ago`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m ago`;
  return `${Math.round(seconds / 3600)}h ago`;
}

function table(views: readonly HostView[], nowUs: number): string {
  const header = [
    'HOST',
    'STATE',
    'LAST_EVENT',
    'LAST_SNAPSHOT',
    'INTERVAL',
    'BOOT_ID',
    'ROWS',
    'MAINTENANCE',
  ];
  const lines = views.map((view) => {
    const maintenance = view.maintenance;
    return [
      view.host,
      view.state,
      view.lastEventUs === null ? '-' : ago(Math.max(0, Math.round((nowUs - view.lastEventUs) / 1e6))),
      ago(view.snapshotAgeSeconds),
      view.intervalSeconds === null ? '-' : `${view.intervalSeconds}s`,
      view.bootId ? view.bootId.slice(0, 8) : '-',
      Object.entries(view.rows)
        .map(([state, count]) => `${state}=${count}`)
        .join(',') || '-',
      !maintenance
        ? '-'
        : maintenance.active
          ? `${maintenance.reason} (until ${maintenance.untilUs === null ? 'enabled' : isoMicros(maintenance.untilUs).slice(0, 19) + 'Z'})`
          : `expired: ${maintenance.reason}`,
    ];
  });
  return formatTable(header, lines);
}

async function list(hosts: HostStore, json: boolean): Promise<number> {
  const nowUs = nowMicros();
  const views = hostViews(await hosts.list(), await hosts.powerCounts(), nowUs);
  process.stdout.write(json ? `${JSON.stringify(views.map(jsonRecord), null, 2)}\n` : table(views, nowUs));
  return 0;
}

function operator(): string | null {
  try {
    return userInfo().username;
  } catch {
    return null;
  }
}

export async function run(argv: readonly string[]): Promise<number> {
  const args = parseArgs(
    argv,
    { json: { value: false }, reason: { value: true }, until: { value: true } },
    CONFIG_FLAGS.filter((flag) => flag !== 'host'),
  );
  const [action, ...rest] = args.positionals;
  if (args.help || action === 'help') {
    process.stdout.write(HELP);
    return 0;
  }
  if (action !== 'list' && action !== 'disable' && action !== 'enable')
    throw new UsageError(
      action === undefined ? `a subcommand is needed\n\n${HELP}` : `unknown subcommand ${action}\n\n${HELP}`,
    );
  if (action !== 'list' && args.flags.has('json')) throw new UsageError('--json applies to list only');
  if (action !== 'disable' && (args.flags.has('reason') || args.flags.has('until')))
    throw new UsageError('--reason and --until apply to disable only');
  if (action === 'list' && rest.length > 0) throw new UsageError(`unexpected argument ${rest[0]}`);
  if (action !== 'list' && rest.length !== 1) throw new UsageError(`${action} takes exactly one HOST`);
  const host = rest[0] ?? '';
  let untilUs: number | null = null;
  let reason = '';
  if (action === 'disable') {
    reason = (args.flags.get('reason')?.[0] ?? '').trim();
    if (!reason) throw new UsageError('disable needs --reason TEXT (why, for whoever finds it)');
    const until = args.flags.get('until')?.[0];
    if (until !== undefined) untilUs = parseUntil(until, nowMicros());
  }
  const config = loadConfig({ role: 'consumer', args: args.configArgs });
  const store = openStore(config.db, createLogger('silent', 'virtbus-hosts'), 'virtbus-hosts');
  try {
    await store.migrate();
    const hosts = store.hosts;
    if (!hosts) throw new Error(`the ${store.kind} store keeps no hosts view`);
    if (action === 'list') return await list(hosts, args.flags.has('json'));
    const within = `consumers apply it within ${config.consumer.hostsIntervalMs} ms`;
    if (action === 'disable') {
      const known = await hosts.setMaintenance(host, {
        reason,
        sinceUs: nowMicros(),
        untilUs,
        by: operator(),
      });
      process.stdout.write(
        `host ${host} in maintenance until ${untilUs === null ? 'enabled' : isoMicros(untilUs)}: no stop commands for its instances (${within})\n`,
      );
      if (!known)
        process.stderr.write(`virtbus hosts: note: no consumer has seen messages from ${host} yet\n`);
      return 0;
    }
    const known = await hosts.setMaintenance(host, null);
    if (!known) {
      process.stderr.write(`virtbus hosts: no host ${host}\n`);
      return 1;
    }
    process.stdout.write(
      `host ${host} out of maintenance (${within}); its next snapshot applies Nova's table\n`,
    );
    return 0;
  } finally {
    await store.close();
  }
}

/**
 * How the services' log lines look. Machines read JSON (journald forwarders, Loki, `jq`), people at a
 * terminal read lines: `log.format` (`--log-format`) is `auto` by default — human-readable lines when
 * stdout is a TTY, pino's JSON lines otherwise — or `json` / `pretty` to force one.
 *
 * The pretty form is a small formatter of pino's own JSON records rather than pino-pretty: pino's
 * transports run in a worker thread (a second event loop and a flush race at exit for a process that
 * logs `fatal` and exits), and the formatter is a few dozen lines with no dependency. It is applied
 * to the serialised record, so redaction (util/log.ts) has already happened when it runs.
 *
 * Also here: the one-line summary of the effective configuration logged at start-up (the full
 * redacted dump goes out at debug), because a 60-key object on every start drowns the lines a person
 * looks for.
 */
import type { DestinationStream } from 'pino';
import { redactValue, type VirtbusConfig } from '../config/load';

export const LOG_FORMATS = ['auto', 'json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/** auto → pretty on a TTY, JSON otherwise; an unknown value (cannot pass the schema) counts as json. */
export function resolveLogFormat(setting: string, isTty: boolean): 'json' | 'pretty' {
  if (setting === 'pretty') return 'pretty';
  if (setting === 'auto') return isTty ? 'pretty' : 'json';
  return 'json';
}

const LEVELS: Readonly<Record<number, { readonly label: string; readonly color: string }>> = {
  10: { label: 'TRACE', color: '\u001b[90m' },
  20: { label: 'DEBUG', color: '\u001b[36m' },
  30: { label: 'INFO ', color: '\u001b[32m' },
  40: { label: 'WARN ', color: '\u001b[33m' },
  50: { label: 'ERROR', color: '\u001b[31m' },
  60: { label: 'FATAL', color: '\u001b[35m' },
};
const RESET = '\u001b[0m';
const DIM = '\u001b[2m';

/** Keys every record has and the line shows in its own place (or not at all). */
const FIXED = new Set(['level', 'time', 'pid', 'hostname', 'name', 'msg', 'module', 'err']);

/** A value as `key=value` text: bare when it is a plain word, JSON otherwise (quoted, escaped). */
function valueText(value: unknown): string {
  if (typeof value === 'string') return /^[\w.:/@+-]+$/.test(value) ? value : JSON.stringify(value);
  return JSON.stringify(value) ?? String(value);
}

/** "2026-12-07T07:40:12.345Z" → "07:40:12.345" (the date is noise at a terminal; UTC as logged). */
function clock(time: unknown): string {
  if (typeof time === 'string' && time.length >= 23 && time[10] === 'T') return time.slice(11, 23);
  if (typeof time === 'number') return new Date(time).toISOString().slice(11, 23);
  return '--:--:--.---';
}

/**
 * One pino JSON record as a readable line:
 * `07:40:12.345 WARN  virtbus-consumer[sync] message key=value …`, an error's stack indented below.
 * A line that is not a JSON object is passed through unchanged.
 */
export function prettyLine(json: string, colors: boolean): string {
  let record: Record<string, unknown>;
  try {
    const parsed = JSON.parse(json) as unknown;
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return json.trimEnd() + '\n';
    record = parsed as Record<string, unknown>;
  } catch {
    return json.trimEnd() + '\n';
  }
  const level = LEVELS[record.level as number] ?? { label: String(record.level).padEnd(5), color: '' };
  const paint = (color: string, text: string): string => (colors && color ? `${color}${text}${RESET}` : text);
  const name = typeof record.name === 'string' ? record.name : '';
  const module = typeof record.module === 'string' ? `[${record.module}]` : '';
  const fields = Object.entries(record)
    .filter(([key]) => !FIXED.has(key))
    .map(([key, value]) => `${paint(DIM, `${key}=`)}${valueText(value)}`);
  const err = record.err as { message?: unknown; stack?: unknown; type?: unknown } | undefined;
  if (err && typeof err === 'object')
    fields.unshift(`${paint(DIM, 'err=')}${valueText(err.message ?? err.type)}`);
  let line =
    `${paint(DIM, clock(record.time))} ${paint(level.color, level.label)} ${name}${module}` +
    ` ${typeof record.msg === 'string' ? record.msg : ''}` +
    (fields.length > 0 ? ` ${fields.join(' ')}` : '');
  if (err && typeof err.stack === 'string') {
    // The first stack line repeats the message; the frames are what a person needs.
    const frames = err.stack.split('\n').slice(1);
    if (frames.length > 0) line += `\n${frames.map((frame) => `    ${frame.trim()}`).join('\n')}`;
  }
  return `${line}\n`;
}

/** A pino destination writing readable lines to `out` (process.stdout for the services). */
export function prettyDestination(out: { write(text: string): unknown }, colors: boolean): DestinationStream {
  return {
    write(chunk: string): void {
      // pino writes one record per call, newline-terminated.
      for (const json of chunk.split('\n')) if (json.trim() !== '') out.write(prettyLine(json, colors));
    },
  };
}

/**
 * The start-up summary: what a person checks first (who am I, which broker and database, which
 * mode), secrets masked. The full configuration is logged at debug. (No key is called `metrics`:
 * tools find the metrics address by the `metrics` URL of the "metrics server listening" line.)
 */
export function configSummary(config: VirtbusConfig, role: 'bridge' | 'consumer'): Record<string, unknown> {
  const common = {
    role,
    host: config.host,
    amqp: redactValue(config.amqp.url),
    exchange: config.amqp.exchange,
    metricsListen: `${config.metrics.host}:${config.metrics.port}`,
    log: `${config.log.level}/${config.log.format}`,
  };
  if (role === 'bridge')
    return {
      ...common,
      libvirt: redactValue(config.libvirt.uri),
      format: config.amqp.format,
      resyncIntervalSeconds: config.bridge.resyncIntervalSeconds,
    };
  const { consumer } = config;
  return {
    ...common,
    db: redactValue(config.db.url),
    queue: consumer.queue,
    mode: consumer.mode,
    senders: consumer.senders.mode,
    hosts: consumer.hosts.length > 0 ? consumer.hosts.join(',') : 'all',
    notifications: consumer.notifications.enabled
      ? `${consumer.notifications.exchange}/${consumer.notifications.topic}.info`
      : 'off',
  };
}

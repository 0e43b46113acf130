/**
 * Runs a `virtbus` service (the real executable) as a child process — for tests, benchmarks and the
 * demo — with its JSON log captured and its metrics address discovered from the log.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';

/** bin/virtbus, from src/sandbox or dist/src/sandbox. */
export const VIRTBUS_BIN = existsSync(join(__dirname, '..', '..', 'bin', 'virtbus'))
  ? join(__dirname, '..', '..', 'bin', 'virtbus')
  : join(__dirname, '..', '..', '..', 'bin', 'virtbus');

export interface ServiceProcess {
  readonly child: ChildProcess;
  readonly logs: Array<Record<string, unknown>>;
  readonly stderr: () => string;
  /** Resolves with the metrics base URL once the process logged it. */
  metricsUrl(): Promise<string>;
  /** Waits for a log line matching the predicate. */
  waitForLog(
    what: string,
    predicate: (line: Record<string, unknown>) => boolean,
    timeoutMs?: number,
  ): Promise<Record<string, unknown>>;
  /** SIGTERM (or another signal) and the exit code/signal. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exited(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * A sandbox broker is a bare vhost: bridges there declare the topology themselves (production bridges
 * only check it; the broker definitions create it). When everything runs as the sandbox's guest user,
 * bridges trust guest's commands (the consumer sets user_id to its own broker user); with per-role
 * users (the shipped definitions) the product default, virtbus-consumer, stays. A caller's env wins.
 */
function sandboxBrokerDefaults(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const url = env.VIRTBUS_AMQP_URL ?? process.env.VIRTBUS_AMQP_URL ?? '';
  let user = 'guest';
  try {
    const first = new URL(url.split(',')[0]?.trim() ?? '');
    if (first.username) user = decodeURIComponent(first.username);
  } catch {
    // no URL: amqplib logs in as guest
  }
  return {
    VIRTBUS_BRIDGE_DECLARE_TOPOLOGY: 'true',
    ...(user === 'guest' ? { VIRTBUS_COMMANDS_TRUSTED_USER: 'guest' } : {}),
  };
}

export function startVirtbus(
  command: string,
  env: NodeJS.ProcessEnv,
  args: readonly string[] = [],
): ServiceProcess {
  // Each bridge its own journal unless the caller shares one on purpose (restart tests).
  const ownOutbox =
    env.VIRTBUS_OUTBOX_DIR === undefined ? mkdtempSync(join(tmpdir(), 'virtbus-outbox-')) : undefined;
  const child = spawn(process.execPath, [VIRTBUS_BIN, command, ...args], {
    env: {
      ...process.env,
      VIRTBUS_METRICS_PORT: '0',
      VIRTBUS_LOG_LEVEL: 'debug',
      VIRTBUS_CONSUMER_SENDERS: 'routing-key', // one shared broker user here: lax sender check (docs/consumer.md)
      ...(ownOutbox ? { VIRTBUS_OUTBOX_DIR: ownOutbox } : {}),
      ...sandboxBrokerDefaults(env),
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: Array<Record<string, unknown>> = [];
  let stderr = '';
  let partial = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    partial += chunk.toString('utf8');
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      if (!line.trim()) continue;
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        logs.push({ msg: line });
      }
    }
  });
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const exit = once(child, 'exit').then(([code, signal]) => {
    if (ownOutbox) rmSync(ownOutbox, { recursive: true, force: true });
    return {
      code: code as number | null,
      signal: signal as NodeJS.Signals | null,
    };
  });
  const waitForLog = async (
    what: string,
    predicate: (line: Record<string, unknown>) => boolean,
    timeoutMs = 20000,
  ): Promise<Record<string, unknown>> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = logs.find(predicate);
      if (found) return found;
      if (child.exitCode !== null)
        throw new Error(`virtbus ${command} exited ${child.exitCode} before ${what}: ${stderr}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; stderr: ${stderr}`);
      await sleep(20);
    }
  };
  return {
    child,
    logs,
    stderr: () => stderr,
    metricsUrl: async () => {
      const line = await waitForLog('the metrics address', (l) => typeof l.metrics === 'string');
      return String(line.metrics).replace(/\/metrics$/, '');
    },
    waitForLog,
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exit;
    },
    exited: () => exit,
  };
}

/** Reads one sample's value from a Prometheus text exposition. */
export function metricValue(
  text: string,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  const wanted = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .sort();
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][\w:]*)(\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (!match || match[1] !== name) continue;
    const have = (match[3] ?? '').split(',').filter(Boolean).sort();
    if (wanted.every((w) => have.includes(w))) return Number(match[4]);
  }
  return undefined;
}

export async function scrape(baseUrl: string): Promise<string> {
  const response = await fetch(`${baseUrl}/metrics`);
  return response.text();
}

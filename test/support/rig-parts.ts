/**
 * Parts the fault rig (one host) and the cluster rig (a fleet) share: running the real `virtbus`
 * CLI, importing instance rows through it, a recorder queue that survives broker faults, and the
 * paced suspend/resume load whose every successful call is exactly one lifecycle event.
 */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Channel, ChannelModel, ConsumeMessage } from 'amqplib';
import { AmqpConnection } from '../../src/amqp/connection';
import type { NativeConnection } from '../../src/native/contract';
import { createLogger } from '../../src/util/log';
import { VIRTBUS_BIN } from './bridge-process';
import { sleep } from './wait';

const run = promisify(execFile);

/** Runs `virtbus ARGS…` with `env` on top of this process's environment; resolves to its stdout. */
export async function runVirtbus(env: NodeJS.ProcessEnv, ...args: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, [VIRTBUS_BIN, ...args], {
    env: { ...process.env, ...env },
    maxBuffer: 64 * 1024 * 1024,
  });
  return stdout;
}

/** A row as `virtbus instances import` takes it. */
export interface ImportRow {
  readonly uuid: string;
  readonly host: string;
  readonly vm_state: string;
  readonly task_state: null;
  readonly power_state: number;
  readonly launched_at: string;
}

/** Writes `rows` to DIR/instances.json and imports them with the real CLI. */
export async function importRows(
  dir: string,
  env: NodeJS.ProcessEnv,
  rows: readonly ImportRow[],
): Promise<void> {
  const file = join(dir, 'instances.json');
  writeFileSync(file, JSON.stringify(rows));
  await runVirtbus(env, 'instances', 'import', file);
}

/**
 * A durable recorder queue consumed through the project's own reconnecting connection, so it keeps
 * recording across broker restarts and node losses. `declare` sets the queue and its bindings up
 * on every (re)connection; `record` sees each message before it is acknowledged.
 */
export async function startRecorder(options: {
  readonly url: string;
  readonly name: string;
  readonly declare: (channel: Channel) => Promise<string>;
  readonly record: (message: ConsumeMessage) => void;
}): Promise<AmqpConnection> {
  const recorder = new AmqpConnection({
    url: options.url,
    heartbeatSeconds: 5,
    tls: { caFile: '', certFile: '', keyFile: '', passphrase: '', verify: true },
    connectionName: options.name,
    reconnectInitialDelayMs: 200,
    reconnectMaxDelayMs: 1000,
    logger: createLogger('silent', 'recorder'),
  });
  const ready = new Promise<void>((resolve) => {
    recorder.on('up', (model: ChannelModel) => {
      void (async () => {
        const channel = await model.createChannel();
        const queue = await options.declare(channel);
        await channel.prefetch(1000);
        await channel.consume(queue, (message) => {
          if (!message) return;
          options.record(message);
          channel.ack(message);
        });
        resolve();
      })().catch(() => undefined);
    });
  });
  recorder.start();
  await ready;
  return recorder;
}

/** One load worker: a libvirt connection and the domains it toggles in turn. */
export interface LoadWorker {
  readonly driver: () => NativeConnection;
  readonly uuids: readonly string[];
}

/**
 * Toggles suspend/resume over each worker's domains, all workers together at `ratePerSecond`, until
 * `running()` turns false. A failed call (libvirtd away, a domain recreated) learns the domain's
 * real state and goes on; each successful call is reported to `toggled` (one lifecycle event).
 */
export async function toggleLoad(
  workers: readonly LoadWorker[],
  ratePerSecond: number,
  running: () => boolean,
  toggled: (uuid: string, pausing: boolean) => void,
): Promise<void> {
  const intervalMs = (1000 * workers.length) / ratePerSecond;
  const paused = new Set<string>();
  await Promise.all(
    workers.map(async (worker) => {
      let next = Date.now();
      while (running()) {
        for (const uuid of worker.uuids) {
          if (!running()) break;
          next += intervalMs;
          const wait = next - Date.now();
          if (wait > 1) await sleep(wait);
          else if (wait < -1000) next = Date.now(); // fell behind (an outage): do not burst
          const pausing = !paused.has(uuid);
          const driver = worker.driver();
          try {
            if (pausing) await driver.suspend(uuid);
            else await driver.resume(uuid);
          } catch {
            // libvirtd down, the domain recreated, or not in the state assumed: learn its real
            // state, then try again shortly
            try {
              if ((await driver.domainState(uuid)).state === 3) paused.add(uuid);
              else paused.delete(uuid);
            } catch {
              // still away
            }
            await sleep(50);
            continue;
          }
          if (pausing) paused.add(uuid);
          else paused.delete(uuid);
          toggled(uuid, pausing);
        }
      }
    }),
  );
}

/**
 * What every benchmark gets from the runner: the run's private services (one RabbitMQ node, a fresh
 * vhost per benchmark, a fresh libvirtd or PostgreSQL when asked), the broker ceiling measured so far,
 * worker processes (profiled with --cpu-prof when asked) and the options.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  startLibvirtd,
  startPostgres,
  type LibvirtdSandbox,
  type PostgresSandbox,
  type RabbitSandbox,
} from '../../src/sandbox';
import { Worker } from './ipc';

export interface BenchOptions {
  /** Smaller counts, for a smoke run of the suite itself. */
  readonly quick: boolean;
  /** Directory for .cpuprofile files of every worker (node --cpu-prof), or undefined. */
  readonly profileDir: string | undefined;
  /** Extra node flags for the bridge workers (e.g. --max-semi-space-size=2), to try deployment flags. */
  readonly bridgeFlags?: readonly string[];
}

export type Target =
  | { readonly kind: 'ceiling-ratio-min'; readonly value: number }
  | { readonly kind: 'max'; readonly value: number }
  | { readonly kind: 'min'; readonly value: number };

export interface Figure {
  readonly label: string;
  readonly value: number | null;
  readonly unit: string;
  /** A rate to be shown as a fraction of the broker ceiling. */
  readonly vsCeiling?: boolean;
  readonly target?: Target;
  readonly note?: string;
}

export interface BenchResult {
  readonly id: string;
  readonly title: string;
  readonly figures: Figure[];
  readonly details: Record<string, unknown>;
  readonly notes: string[];
}

export class BenchContext {
  /** Every ceiling measurement of this run (messages/s); the reference is the highest. */
  readonly ceilingRuns: number[] = [];
  readonly #cleanups: Array<() => Promise<unknown>> = [];
  #vhosts = 0;
  #workers = 0;

  constructor(
    readonly rabbit: RabbitSandbox,
    readonly options: BenchOptions,
  ) {}

  /** The broker ceiling for ratios: the best ceiling run so far. */
  get ceiling(): number {
    if (this.ceilingRuns.length === 0) throw new Error('the broker ceiling has not been measured yet');
    return Math.max(...this.ceilingRuns);
  }

  /** A fresh vhost on the run's node (its own queues), deleted at the end; returns its URL. */
  async vhost(name: string): Promise<string> {
    const vhost = `bench-${name}-${(this.#vhosts += 1)}`;
    await this.rabbit.ctl('add_vhost', vhost);
    await this.rabbit.ctl('set_permissions', '-p', vhost, 'guest', '.*', '.*', '.*');
    this.#cleanups.push(() => this.rabbit.ctl('delete_vhost', vhost));
    return `${this.rabbit.url}/${encodeURIComponent(vhost)}`;
  }

  async libvirtd(): Promise<LibvirtdSandbox> {
    const sandbox = await startLibvirtd();
    this.#cleanups.push(() => sandbox.dispose());
    return sandbox;
  }

  async postgres(): Promise<PostgresSandbox> {
    const sandbox = await startPostgres();
    this.#cleanups.push(() => sandbox.dispose());
    return sandbox;
  }

  /** Forks dist/bench/workers/<name>.js (with --cpu-prof into the profile directory when asked). */
  worker(name: string, env: NodeJS.ProcessEnv = {}): Worker {
    const execArgv: string[] = name === 'bridge' ? [...(this.options.bridgeFlags ?? [])] : [];
    const dir = this.options.profileDir;
    if (dir) {
      mkdirSync(dir, { recursive: true });
      execArgv.push(
        '--cpu-prof',
        '--cpu-prof-dir',
        dir,
        '--cpu-prof-name',
        `${String((this.#workers += 1)).padStart(2, '0')}-${name}.cpuprofile`,
      );
    }
    const worker = Worker.start(name, { execArgv, env });
    this.#cleanups.push(() => worker.close());
    return worker;
  }

  /**
   * Pins a process and all its threads to `cpus` (taskset -a -p -c), e.g. the broker to one core and
   * the client under test to the other, so that they do not compete for CPU. Returns false when it
   * cannot (no taskset, one CPU).
   */
  pin(pid: number | undefined, cpus: string): boolean {
    if (pid === undefined) return false;
    try {
      execFileSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  }

  /** The RabbitMQ node's VM process id. */
  get rabbitPid(): number | undefined {
    try {
      const pid = Number(readFileSync(join(this.rabbit.dir, 'rabbitmq.pid'), 'utf8').trim());
      return Number.isInteger(pid) && pid > 0 ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  /** Polls `probe` every 100 ms until it holds (or fails after timeoutMs). */
  async waitFor(what: string, probe: () => Promise<boolean>, timeoutMs = 120_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await probe())) {
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** Registers something to dispose at the end of the run (newest first). */
  onCleanup(cleanup: () => Promise<unknown>): void {
    this.#cleanups.push(cleanup);
  }

  /** Disposes what the benchmarks left (workers, vhosts, daemons), newest first. */
  async cleanup(): Promise<void> {
    while (this.#cleanups.length > 0) {
      await this.#cleanups
        .pop()?.()
        .catch((error: unknown) => console.error('bench cleanup:', error));
    }
  }
}

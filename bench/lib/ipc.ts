/**
 * A small request/response protocol between the bench runner and its worker processes (forked Node
 * processes with an IPC channel). Each benchmark process is separate so that its RSS, CPU time and
 * native queue are its own, exactly as a bridge or consumer process on a host.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

interface Request {
  readonly id: number;
  readonly method: string;
  readonly params: unknown;
}

interface Response {
  readonly id: number;
  readonly ok: boolean;
  readonly value?: unknown;
  readonly error?: string;
}

export type Handlers = Record<string, (params: never) => Promise<unknown>>;

/** Worker side: answers the runner's calls with `handlers` until the runner disconnects. */
export function serve(handlers: Handlers): void {
  process.on('message', (raw: Request) => {
    const handler = handlers[raw.method] as ((params: unknown) => Promise<unknown>) | undefined;
    const reply = (response: Response): void => {
      process.send?.(response);
    };
    if (!handler) {
      reply({ id: raw.id, ok: false, error: `no method ${raw.method}` });
      return;
    }
    handler(raw.params).then(
      (value) => reply({ id: raw.id, ok: true, value }),
      (error: unknown) =>
        reply({
          id: raw.id,
          ok: false,
          error: error instanceof Error ? (error.stack ?? error.message) : String(error),
        }),
    );
  });
  process.on('disconnect', () => process.exit(0));
}

export interface WorkerOptions {
  /** Extra node flags, e.g. --cpu-prof. */
  readonly execArgv?: readonly string[];
  readonly env?: NodeJS.ProcessEnv;
}

/** Runner side: one forked worker (dist/bench/workers/<name>.js). */
export class Worker {
  readonly #child: ChildProcess;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  readonly #exited: Promise<number | null>;
  #next = 1;
  #tail = '';

  private constructor(
    readonly name: string,
    options: WorkerOptions,
  ) {
    this.#child = fork(join(__dirname, '..', 'workers', `${name}.js`), [], {
      execArgv: [...(options.execArgv ?? [])],
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    const keep = (chunk: Buffer): void => {
      const text = chunk.toString('utf8');
      if (process.env.VIRTBUS_BENCH_VERBOSE) process.stderr.write(`[${name}] ${text}`);
      this.#tail = (this.#tail + text).slice(-4000);
    };
    this.#child.stdout?.on('data', keep);
    this.#child.stderr?.on('data', keep);
    this.#child.on('message', (response: Response) => {
      const waiter = this.#pending.get(response.id);
      if (!waiter) return;
      this.#pending.delete(response.id);
      if (response.ok) waiter.resolve(response.value);
      else waiter.reject(new Error(`${name}: ${response.error ?? 'failed'}`));
    });
    this.#exited = new Promise((resolve) => {
      this.#child.on('exit', (code, signal) => {
        const why = new Error(
          `worker ${name} exited (${code ?? signal ?? '?'}) during a call; last output:\n${this.#tail}`,
        );
        for (const waiter of this.#pending.values()) waiter.reject(why);
        this.#pending.clear();
        resolve(code);
      });
    });
  }

  static start(name: string, options: WorkerOptions = {}): Worker {
    return new Worker(name, options);
  }

  get pid(): number | undefined {
    return this.#child.pid;
  }

  /** Calls a worker method; a call that outlives timeoutMs kills the worker. */
  call<T>(method: string, params: unknown = {}, timeoutMs = 120_000): Promise<T> {
    const id = this.#next++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        this.#child.kill('SIGKILL');
        reject(
          new Error(`${this.name}.${method} timed out after ${timeoutMs} ms; last output:\n${this.#tail}`),
        );
      }, timeoutMs);
      this.#pending.set(id, {
        resolve: (value) => {
          clearTimeout(timer);
          resolve(value as T);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      this.#child.send({ id, method, params } satisfies Request);
    });
  }

  /** Disconnects (the worker exits) and waits; SIGKILL after graceMs. */
  async close(graceMs = 15_000): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    if (this.#child.connected) this.#child.disconnect();
    const timer = setTimeout(() => this.#child.kill('SIGKILL'), graceMs);
    await this.#exited;
    clearTimeout(timer);
  }
}

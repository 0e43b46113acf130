/**
 * The `virtbus` command line as an operator runs it: a child process with its exit code, stdout and
 * stderr, and (for commands that ask) an answer on stdin.
 */
import { spawn } from 'node:child_process';
import { VIRTBUS_BIN } from './bridge-process';

export interface CliRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface CliOptions {
  /** Typed on stdin (then closed); nothing by default. */
  readonly input?: string;
  /** Only PATH and `env`, not this process's environment (a command configured by env alone). */
  readonly cleanEnv?: boolean;
}

/** Runs `virtbus ARGS…` with `env` (VIRTBUS_LOG_LEVEL warn unless set) on top of the environment. */
export function virtbusCli(
  args: readonly string[],
  env: Record<string, string> = {},
  options: CliOptions = {},
): Promise<CliRun> {
  const base = options.cleanEnv ? { PATH: process.env.PATH ?? '' } : process.env;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [VIRTBUS_BIN, ...args], {
      env: { ...base, VIRTBUS_LOG_LEVEL: 'warn', ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(options.input ?? '');
  });
}

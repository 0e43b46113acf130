/**
 * The journal directory's lock: a file `lock` holding the owner's pid, boot id and process start time.
 * It is created atomically with its content (written to a private temporary name, then hard-linked
 * to `lock`, which fails if it exists), so a reader never sees a half-written owner. A lock whose
 * owner is gone (no such pid, a zombie, a pid reused by another process, or a previous boot) is
 * stale and taken over; a live owner — another bridge, or another outbox in this very process — is
 * refused with JournalLockedError.
 */
import {
  closeSync,
  fsyncSync,
  linkSync,
  openSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';

export const LOCK_FILE = 'lock';

export interface LockOwner {
  readonly pid: number;
  readonly host?: string;
  /** /proc/sys/kernel/random/boot_id when it was taken. */
  readonly boot?: string;
  /** Field 22 of /proc/<pid>/stat: the process start time in clock ticks since boot. */
  readonly start?: string;
}

export class JournalLockedError extends Error {
  override readonly name = 'JournalLockedError';
  constructor(
    readonly dir: string,
    readonly owner: LockOwner,
  ) {
    const where = owner.host ? ` on ${owner.host}` : '';
    const self = owner.pid === process.pid ? ' (this process: the directory is opened twice)' : '';
    super(
      `outbox directory ${dir} is locked by process ${owner.pid}${where}${self}: another virtbus bridge` +
        ' is using it; give each bridge its own bridge.outbox.dir, on a local file system',
    );
  }
}

function readOrUndefined(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

function bootId(): string | undefined {
  return readOrUndefined('/proc/sys/kernel/random/boot_id')?.trim();
}

/** State letter and start time of a process from /proc, when available. */
function procStat(pid: number): { state: string; start: string } | undefined {
  const stat = readOrUndefined(`/proc/${pid}/stat`);
  if (stat === undefined) return undefined;
  // The command name (field 2) is parenthesised and may contain spaces: split after its last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const state = fields[0];
  const start = fields[19];
  return state === undefined || start === undefined ? undefined : { state, start };
}

function currentOwner(): LockOwner {
  const boot = bootId();
  const start = procStat(process.pid)?.start;
  return {
    pid: process.pid,
    host: hostname(),
    ...(boot ? { boot } : {}),
    ...(start ? { start } : {}),
  };
}

function parseOwner(text: string | undefined): LockOwner | undefined {
  if (text === undefined) return undefined;
  try {
    const value = JSON.parse(text) as Partial<LockOwner>;
    if (typeof value.pid !== 'number' || !Number.isInteger(value.pid) || value.pid <= 0) return undefined;
    return value as LockOwner;
  } catch {
    return undefined;
  }
}

/** Whether the process that wrote `owner` still runs. */
export function ownerAlive(owner: LockOwner): boolean {
  if (owner.boot !== undefined) {
    const boot = bootId();
    if (boot !== undefined && boot !== owner.boot) return false;
  }
  if (owner.pid === process.pid) {
    // This process (opened twice), unless the pid was reused from a process that died.
    return owner.start === undefined || owner.start === procStat(process.pid)?.start;
  }
  try {
    process.kill(owner.pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
  const stat = procStat(owner.pid);
  if (stat === undefined) return true;
  if (stat.state === 'Z' || stat.state === 'X') return false;
  return owner.start === undefined || owner.start === stat.start;
}

/** Takes the lock of `dir` or throws JournalLockedError; returns the function that releases it. */
export function acquireLock(dir: string): () => void {
  const path = join(dir, LOCK_FILE);
  const mine = currentOwner();
  const text = `${JSON.stringify(mine)}\n`;
  const temporary = join(dir, `${LOCK_FILE}.${process.pid}.tmp`);
  const fd = openSync(temporary, 'w', 0o600);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    for (let attempt = 0; ; attempt += 1) {
      try {
        linkSync(temporary, path);
        break;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 5) throw error;
      }
      const owner = parseOwner(readOrUndefined(path));
      if (owner && ownerAlive(owner)) throw new JournalLockedError(dir, owner);
      // Stale (or unreadable: written by something else). Move it aside first, then make sure what we
      // moved is what we judged stale — a racing bridge may have replaced it in between.
      const aside = join(dir, `${LOCK_FILE}.stale.${process.pid}`);
      try {
        renameSync(path, aside);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw error;
      }
      const moved = parseOwner(readOrUndefined(aside));
      if (moved && ownerAlive(moved)) {
        try {
          linkSync(aside, path);
        } catch {
          // Someone else holds it now; either way it is not ours.
        }
        unlinkQuietly(aside);
        throw new JournalLockedError(dir, moved);
      }
      unlinkQuietly(aside);
    }
  } finally {
    unlinkQuietly(temporary);
  }
  let released = false;
  return () => {
    if (released) return;
    released = true;
    const owner = parseOwner(readOrUndefined(path));
    if (owner?.pid === mine.pid && owner.start === mine.start) unlinkQuietly(path);
  };
}

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // Already gone.
  }
}

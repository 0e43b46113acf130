/**
 * The command ids this bridge has executed, remembered until each command's expiry and across a
 * restart, so a command replayed later (a genuine one captured and re-published, or a consumer's
 * duplicate) is not executed twice (issue 10). Kept as an append-only file of JSON lines
 * `{"id","exp"}` beside the outbox journal, mode 0600, compacted to the live entries on open and
 * whenever dead lines dominate; bounded to maxEntries (the earliest-expiring id is forgotten first,
 * which the expiry horizon makes rare: ids live at most bridge.commands.maxExpiryMs). Results are
 * kept in memory only, to answer a broker redelivery of a command whose result publish failed.
 */
import { appendFile, chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { CommandResult } from '../../messages/command';
import type { Logger } from '../../util/log';
import { nowMicros } from '../../util/time';

export interface ReplayGuardOptions {
  /** Where the ids persist; undefined: memory only (tests, or a bridge without a data directory). */
  readonly file?: string;
  readonly maxEntries: number;
  readonly logger: Logger;
}

interface Entry {
  readonly expiresAtMicros: number;
  result?: CommandResult;
}

const FILE_MODE = 0o600;

export class ReplayGuard {
  readonly #options: ReplayGuardOptions;
  readonly #entries = new Map<string, Entry>();
  /** Lines in the file, live or not: compaction runs when the dead ones dominate. */
  #lines = 0;
  /** Appends run one after another so a compaction never races an append. */
  #writes: Promise<void> = Promise.resolve();

  constructor(options: ReplayGuardOptions) {
    this.#options = options;
    if (options.file) this.#load(options.file);
  }

  get size(): number {
    return this.#entries.size;
  }

  has(id: string): boolean {
    const entry = this.#entries.get(id);
    if (!entry) return false;
    if (entry.expiresAtMicros >= nowMicros()) return true;
    this.#entries.delete(id);
    return false;
  }

  /** The result published for id by this process, if any. */
  result(id: string): CommandResult | undefined {
    return this.#entries.get(id)?.result;
  }

  setResult(id: string, result: CommandResult): void {
    const entry = this.#entries.get(id);
    if (entry) entry.result = result;
  }

  /** Remembers id until expiresAtMicros; resolves once it is on disk (rejects if it cannot be written). */
  remember(id: string, expiresAtMicros: number): Promise<void> {
    this.#prune();
    this.#entries.set(id, { expiresAtMicros });
    const { file } = this.#options;
    if (!file) return Promise.resolve();
    const line = `${JSON.stringify({ id, exp: expiresAtMicros })}\n`;
    const write = this.#writes.then(
      () =>
        new Promise<void>((resolve, reject) =>
          appendFile(file, line, { mode: FILE_MODE }, (error) => (error ? reject(error) : resolve())),
        ),
    );
    this.#writes = write.then(
      () => {
        this.#lines += 1;
        if (this.#lines > 2 * this.#entries.size + 1024) this.#compact(file);
      },
      () => undefined,
    );
    return write;
  }

  /** Drops expired ids; at the bound, forgets the earliest-expiring ones. */
  #prune(): void {
    const now = nowMicros();
    for (const [id, entry] of this.#entries) if (entry.expiresAtMicros < now) this.#entries.delete(id);
    const excess = this.#entries.size - this.#options.maxEntries + 1;
    if (excess <= 0) return;
    const earliest = [...this.#entries].sort((a, b) => a[1].expiresAtMicros - b[1].expiresAtMicros);
    for (const [id] of earliest.slice(0, excess)) this.#entries.delete(id);
    this.#options.logger.warn(
      { forgotten: excess, maxEntries: this.#options.maxEntries },
      'executed command ids at their bound: the earliest-expiring were forgotten',
    );
  }

  #load(file: string): void {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    const now = nowMicros();
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        const { id, exp } = JSON.parse(line) as { id?: unknown; exp?: unknown };
        // A torn last line (a crash mid-append) or a foreign line is skipped.
        if (typeof id === 'string' && typeof exp === 'number' && exp >= now)
          this.#entries.set(id, { expiresAtMicros: exp });
      } catch {
        // skipped, as above
      }
    }
    this.#prune();
    this.#compact(file);
  }

  /** Rewrites the file with the live ids only (a new file renamed over the old, mode 0600). */
  #compact(file: string): void {
    const lines = [...this.#entries].map(([id, e]) => `${JSON.stringify({ id, exp: e.expiresAtMicros })}\n`);
    const temporary = `${file}.tmp`;
    try {
      writeFileSync(temporary, lines.join(''), { mode: FILE_MODE });
      chmodSync(temporary, FILE_MODE);
      renameSync(temporary, file);
      this.#lines = lines.length;
    } catch (error) {
      this.#options.logger.warn({ err: error, file }, 'cannot compact the executed command ids file');
    }
  }
}

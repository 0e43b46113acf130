/**
 * When the journal commits. One commit (a write and an fdatasync) runs at a time; appends staged
 * meanwhile wait for the next one, which is how they share it (group commit). A commit starts one
 * event-loop turn after work is staged, so appends made in the same turn travel together, and at
 * least intervalMs after the previous commit started, so a busy journal trades a little latency for
 * far fewer fdatasyncs. What a commit does is the journal's business (src/bridge/journal-outbox.ts).
 */
export class CommitPacer {
  readonly #intervalMs: number;
  readonly #hasWork: () => boolean;
  readonly #commit: () => Promise<void>;
  #running = false;
  #timer: NodeJS.Timeout | undefined;
  #immediate: NodeJS.Immediate | undefined;
  #done: Promise<void> = Promise.resolve();
  #lastStart = 0;

  /**
   * @param hasWork whether anything is staged
   * @param commit commits everything staged; never rejects
   */
  constructor(intervalMs: number, hasWork: () => boolean, commit: () => Promise<void>) {
    this.#intervalMs = intervalMs;
    this.#hasWork = hasWork;
    this.#commit = commit;
  }

  /** Work was staged (or a commit ended): start a commit when the pacing allows. */
  schedule(): void {
    if (this.#running || !this.#hasWork()) return;
    if (this.#timer !== undefined || this.#immediate !== undefined) return;
    const wait = this.#lastStart + this.#intervalMs - performance.now();
    if (wait >= 1) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#start();
      }, Math.ceil(wait));
    } else {
      // One turn of the event loop lets appends made in the same turn share the commit.
      this.#immediate = setImmediate(() => {
        this.#immediate = undefined;
        this.#start();
      });
    }
  }

  /** Closing: commits everything staged now, without waiting for the interval. */
  async drain(): Promise<void> {
    clearTimeout(this.#timer);
    clearImmediate(this.#immediate);
    this.#timer = undefined;
    this.#immediate = undefined;
    while (this.#running || this.#hasWork()) {
      if (!this.#running) this.#start();
      await this.#done;
    }
  }

  #start(): void {
    if (this.#running || !this.#hasWork()) return;
    this.#running = true;
    this.#lastStart = performance.now();
    this.#done = this.#commit().finally(() => {
      this.#running = false;
      this.schedule();
    });
  }
}

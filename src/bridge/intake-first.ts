/**
 * Intake before publishing. The bridge's one JavaScript thread does both intake (native queue →
 * dispatcher → journal) and publishing (journal → broker). When the thread cannot do both at the
 * offered rate — a host whose CPUs are busy, a load above the broker's ceiling — publishing must be
 * the one that falls behind: its backlog waits in the journal, which holds gigabytes, while intake's
 * would wait in the native queue, which is a bounded hand-off that drops.
 *
 * This decorator is the outbox as the publisher sees it: while intake is behind (events waiting in
 * the native queue or for the dispatcher's lane beyond a threshold) readAfter() hands the publisher
 * nothing new, so the thread's time goes to intake; confirms of what is in flight still count. Once
 * intake has caught up, the publisher is woken (through its onAppend listener) and goes on. Never
 * while the lane waits for the outbox itself (a full outbox needs confirms to make room): that would
 * be a deadlock, and then the native queue is the right place for the backlog anyway.
 */
import type { Outbox, OutboxInput, OutboxRecord } from './outbox';

export interface IntakeState {
  /** Events waiting in the native queue. */
  nativeDepth(): number;
  /** Events accepted by the dispatcher and not yet in the outbox. */
  backlog(): number;
  /** The dispatcher has waited for the outbox to accept an append longer than a commit takes. */
  appendStalled(): boolean;
}

/** Waiting events (native queue + lane) from which publishing yields to intake. */
export const INTAKE_PRESSURE = 8192;
/** While publishing yields, how often intake's progress is checked (ms). */
const RECHECK_MS = 5;

export class IntakeFirstOutbox implements Outbox {
  readonly #inner: Outbox;
  readonly #intake: IntakeState;
  readonly #listeners: Array<() => void> = [];
  #recheck: NodeJS.Timeout | undefined;
  /** Times publishing yielded to intake (a counter for tests and the log). */
  yields = 0;

  constructor(inner: Outbox, intake: IntakeState) {
    this.#inner = inner;
    this.#intake = intake;
  }

  get depth(): number {
    return this.#inner.depth;
  }

  get capacity(): number {
    return this.#inner.capacity;
  }

  get bytes(): number | undefined {
    return this.#inner.bytes;
  }

  oldestMicros(): number | undefined {
    return this.#inner.oldestMicros();
  }

  append(inputs: readonly OutboxInput[]): Promise<void> {
    return this.#inner.append(inputs);
  }

  readAfter(afterId: number, max: number): OutboxRecord[] {
    if (this.#intakeBehind()) {
      this.yields += 1;
      this.#scheduleRecheck();
      return [];
    }
    return this.#inner.readAfter(afterId, max);
  }

  confirm(id: number): void {
    this.#inner.confirm(id);
  }

  onAppend(listener: () => void): void {
    this.#listeners.push(listener);
    this.#inner.onAppend(listener);
  }

  close(): Promise<void> {
    clearTimeout(this.#recheck);
    this.#recheck = undefined;
    return this.#inner.close();
  }

  #intakeBehind(): boolean {
    const intake = this.#intake;
    return !intake.appendStalled() && intake.nativeDepth() + intake.backlog() >= INTAKE_PRESSURE;
  }

  #scheduleRecheck(): void {
    if (this.#recheck) return;
    this.#recheck = setTimeout(() => {
      this.#recheck = undefined;
      if (this.#intakeBehind()) this.#scheduleRecheck();
      else for (const listener of this.#listeners) listener();
    }, RECHECK_MS);
    this.#recheck.unref();
  }
}

/**
 * Moves events from the native queue into the dispatcher. The addon wakes JavaScript at most once per
 * batch; the pump then drains in chunks and waits for each chunk's dispatch before taking the next,
 * so while JavaScript is busy events wait in the bounded native queue (its depth is the backlog an
 * operator sees), and an overflow there is counted and repaired by an `overflow` snapshot — libvirt's
 * loop thread is never blocked.
 */
import type { NativeBinding, RawCloseEvent, RawDomainEvent } from '../native/contract';
import type { Logger } from '../util/log';

const CHUNK = 4096;

export interface EventPumpTargets {
  events(batch: readonly RawDomainEvent[]): Promise<void>;
  close(event: RawCloseEvent): void;
  overflow(dropped: number): void;
}

export class EventPump {
  #running = false;
  #again = false;
  #idle: Promise<void> = Promise.resolve();
  /** Closes and drops met by takeQueued(), left for the pump to handle in its own order. */
  #takenCloses: RawCloseEvent[] = [];
  #takenOverflow = 0;

  constructor(
    private readonly binding: NativeBinding,
    private readonly targets: EventPumpTargets,
    private readonly logger: Logger,
  ) {}

  /** The addon's wake-up callback. */
  readonly wake = (): void => {
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#idle = this.#run();
  };

  /**
   * Drains every queued event now, synchronously, for a caller that must account for them before it
   * goes on (a snapshot, right after its listing: Dispatcher). The closes and drops that drain meets
   * are left to the pump's own loop, which handles them on its next run (woken here), after the
   * events taken here have been handed over.
   */
  takeQueued(): RawDomainEvent[] {
    let drained: ReturnType<NativeBinding['drain']>;
    try {
      drained = this.binding.drain();
    } catch (error) {
      // No loop started from this thread (an embedding that drives the addon elsewhere): the pump
      // cannot drain either, so there is nothing queued that this process would see.
      this.logger.debug({ err: error }, 'takeQueued: the native queue cannot be drained here');
      return [];
    }
    const { events, closes, overflowed } = drained;
    if (closes.length > 0 || overflowed > 0) {
      this.#takenCloses.push(...closes);
      this.#takenOverflow += overflowed;
      setImmediate(this.wake);
    }
    return events;
  }

  /** Resolves when everything drained so far has been dispatched. */
  settled(): Promise<void> {
    return this.#idle;
  }

  async #run(): Promise<void> {
    this.#running = true;
    try {
      // Dropped events are newer than every event still queued when they were dropped, so the
      // overflow snapshot waits until those have been dispatched: when a drain empties the queue,
      // or once a whole queue's capacity has been taken since the drop was reported.
      let dropped = 0;
      let drainedSinceDrop = 0;
      do {
        this.#again = false;
        for (;;) {
          const drained = this.binding.drain(CHUNK);
          const { events } = drained;
          // What takeQueued() met came before anything drained now.
          const closes = this.#takenCloses.concat(drained.closes);
          const overflowed = this.#takenOverflow + drained.overflowed;
          this.#takenCloses = [];
          this.#takenOverflow = 0;
          if (overflowed > 0) {
            this.logger.warn(
              { dropped: overflowed },
              'native event queue overflowed; a resync snapshot follows',
            );
            if (dropped === 0) drainedSinceDrop = 0;
            dropped += overflowed;
          }
          if (events.length > 0) await this.targets.events(events);
          drainedSinceDrop += events.length;
          if (
            dropped > 0 &&
            (events.length < CHUNK || drainedSinceDrop >= this.binding.queueStats().capacity)
          ) {
            this.targets.overflow(dropped);
            dropped = 0;
          }
          // Closes after the events that preceded them, so those are dispatched while the state can still be read.
          for (const close of closes) this.targets.close(close);
          if (events.length < CHUNK && closes.length === 0 && overflowed === 0) break;
        }
      } while (this.#again);
    } catch (error) {
      this.logger.error({ err: error }, 'event pump failed');
    } finally {
      this.#running = false;
    }
  }
}

/**
 * Moves events from the native queue into the dispatcher: intake. The addon wakes JavaScript at most
 * once per batch; the pump then drains in chunks and hands each chunk over without waiting for its
 * dispatch (state sampling, journal commit) while the target has room, so the native queue — bounded,
 * its overflow counted and repaired by an `overflow` snapshot — stays a hand-off and the backlog of a
 * load above the broker's ceiling builds up in the journal. Only when the target has no room (the
 * outbox is full, or JavaScript cannot keep up) does the pump wait, and events then wait in the native
 * queue. libvirt's loop thread is never blocked.
 */
import type { NativeBinding, RawCloseEvent, RawDomainEvent } from '../native/contract';
import type { Logger } from '../util/log';

const CHUNK = 4096;

export interface EventPumpTargets {
  /**
   * Takes a batch in order, synchronously; resolves when it is dispatched (in the outbox). The next
   * batch is handed over at once while room() says so.
   */
  events(batch: readonly RawDomainEvent[]): Promise<void>;
  /**
   * undefined when more can be handed over before the earlier batches are dispatched; otherwise a
   * promise of room. Without it the pump waits for each batch's dispatch.
   */
  room?(): Promise<void> | undefined;
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
  /** Dispatch of the last batch handed over. */
  #dispatched: Promise<void> = Promise.resolve();

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
  async settled(): Promise<void> {
    await this.#idle;
    await this.#dispatched;
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
          if (events.length > 0) {
            this.#dispatched = this.targets.events(events);
            // Intake does not wait for sampling, the journal or the broker while the target has room.
            const room = this.targets.room ? this.targets.room() : this.#dispatched;
            if (room) await room;
          }
          drainedSinceDrop += events.length;
          if (
            dropped > 0 &&
            (events.length < CHUNK || drainedSinceDrop >= this.binding.queueStats().capacity)
          ) {
            this.targets.overflow(dropped);
            dropped = 0;
          }
          // Closes after the events that preceded them are dispatched, while the state can still be read.
          if (closes.length > 0) await this.#dispatched;
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

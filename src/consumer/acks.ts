/**
 * Acknowledgement bookkeeping of the consumer's channels, apart from the service that decides what
 * to acknowledge: a delivery's life from the broker to its ack, and the `multiple`-ack window that
 * lets one frame acknowledge a whole batch. Kept apart because its invariants (ack only up to the oldest
 * delivery still in hand; never ack on a closed channel) are its own and are easier to check alone.
 */
import type { Channel, ConfirmChannel, ConsumeMessage } from 'amqplib';
import type { ProcessedInfo } from './service';
import { finishMessageTraces } from '../tracing/consumer';

/** The channels of one broker connection (one generation): consuming, publishing, depth polling. */
export interface Channels {
  readonly generation: number;
  readonly consume: Channel;
  readonly publish: ConfirmChannel;
  depth: Channel | undefined;
  acks: Acks | undefined;
  /** While these are the subscription's channels (subscription-state.ts): closed ones ack nothing. */
  readonly open: boolean;
}

/** A message from its delivery to its acknowledgement. */
export interface Delivery {
  readonly queue: 'lifecycle' | 'result';
  readonly channels: Channels;
  readonly message: ConsumeMessage;
  /**
   * in_hand: being processed; done: to be acknowledged; released: the broker no longer holds it for
   * us (acknowledged, or returned to its queue).
   */
  state: 'in_hand' | 'done' | 'released';
  /** Done out of delivery order (counted in Acks' backlog). */
  behind: boolean;
  info: ProcessedInfo | undefined;
}

/**
 * Acknowledges the deliveries of one channel with as few frames as possible: `multiple` acks up to
 * the newest delivery below which everything is done, so one frame usually covers a whole batch.
 * When deliveries done out of order pile up behind one still in hand (a slow dead-letter publish),
 * they are acknowledged one by one, so the prefetch window keeps moving.
 */
export class Acks {
  #order: Delivery[] = [];
  #head = 0;
  #backlog = 0;

  constructor(
    readonly channels: Channels,
    readonly backlogLimit: number,
    readonly acked: (deliveries: readonly Delivery[]) => void,
    readonly failed: (error: unknown) => void,
  ) {}

  add(delivery: Delivery): void {
    this.#order.push(delivery);
  }

  /** These deliveries are done (their info set): acknowledge them as soon as order allows. */
  complete(deliveries: readonly Delivery[]): void {
    for (const delivery of deliveries) delivery.state = 'done';
    this.#advance();
    for (const delivery of deliveries)
      if (delivery.state === 'done' && !delivery.behind) {
        delivery.behind = true;
        this.#backlog += 1;
      }
    if (this.#backlog >= this.backlogLimit) this.#ackBacklog();
  }

  /** This delivery was returned to its queue (nacked with requeue): nothing to acknowledge. */
  returned(delivery: Delivery): void {
    delivery.state = 'released';
    this.#advance();
  }

  #advance(): void {
    const order = this.#order;
    let last: Delivery | undefined;
    const done: Delivery[] = [];
    while (this.#head < order.length && (order[this.#head] as Delivery).state !== 'in_hand') {
      const delivery = order[this.#head] as Delivery;
      this.#head += 1;
      if (delivery.behind) this.#backlog -= 1;
      if (delivery.state === 'done') {
        delivery.state = 'released';
        last = delivery;
        done.push(delivery);
      }
    }
    if (this.#head > 1024 && this.#head * 2 > order.length) {
      order.splice(0, this.#head);
      this.#head = 0;
    }
    if (last && this.#send(last.message, true)) this.#acked(done);
  }

  #ackBacklog(): void {
    const done: Delivery[] = [];
    const waiting: Delivery[] = [];
    for (let index = this.#head; index < this.#order.length; index += 1) {
      const delivery = this.#order[index] as Delivery;
      if (delivery.state === 'in_hand') waiting.push(delivery);
      else if (delivery.state === 'done') {
        delivery.state = 'released';
        delivery.behind = false;
        if (this.#send(delivery.message, false)) done.push(delivery);
      }
    }
    // Only the deliveries still in hand stay (released ones need no more attention).
    this.#order = waiting;
    this.#head = 0;
    this.#backlog = 0;
    if (done.length > 0) this.#acked(done);
  }

  #acked(done: readonly Delivery[]): void {
    finishMessageTraces(done); // the consumer's spans end at the ack
    this.acked(done);
  }

  #send(message: ConsumeMessage, multiple: boolean): boolean {
    if (!this.channels.open) return false;
    try {
      this.channels.consume.ack(message, multiple);
      return true;
    } catch (error) {
      this.failed(error);
      return false;
    }
  }
}

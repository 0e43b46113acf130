/**
 * Intake first (issue 11, item 5): the event pump hands batches to the dispatcher without waiting for
 * their dispatch while the dispatcher has room; the dispatcher's lane takes what was accepted as one
 * batch (one state query, one append, at most LANE_BATCH) in order; publishing yields to intake while
 * intake is behind, and never while the lane waits for a full outbox. Pure logic with fakes; the real
 * thing under load is bench/overload.ts.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { Dispatcher, INTAKE_LIMIT, LANE_BATCH } from '../../src/bridge/dispatcher';
import { EventPump } from '../../src/bridge/event-pump';
import { IntakeFirstOutbox, INTAKE_PRESSURE, type IntakeState } from '../../src/bridge/intake-first';
import { MemoryOutbox, type OutboxInput } from '../../src/bridge/outbox';
import type { LifecycleMessage } from '../../src/messages/lifecycle';
import type { DrainResult, NativeBinding, NativeConnection, RawDomainEvent } from '../../src/native/contract';
import { createLogger } from '../../src/util/log';
import { idleBridgeMetrics } from '../support/bridge-metrics';

const UUID = '6695eb01-f6a4-8304-79aa-97f2502e193f';
const EVENT_RESUMED = 4;
const logger = createLogger('silent', 'test');

function events(from: number, count: number): RawDomainEvent[] {
  return Array.from({ length: count }, (_, index) => ({
    connectionId: 1,
    eventId: 0,
    type: EVENT_RESUMED,
    detail: 0,
    uuid: UUID,
    name: 'guest',
    nameTruncated: false,
    wallMicros: 1_700_000_000_000_000 + from + index,
    monoMicros: from + index,
    seq: from + index,
  }));
}

function scriptedBinding(script: DrainResult[]): NativeBinding {
  return {
    drain: () => script.shift() ?? { events: [], closes: [], overflowed: 0 },
    queueStats: () => ({ depth: 0, capacity: 16384, highWater: 0, dropped: 0, enqueued: 0 }),
  } as unknown as NativeBinding;
}

/** A dispatch target whose batches stay undispatched until release(). */
function heldTarget() {
  const log: string[] = [];
  const releases: Array<() => void> = [];
  return {
    log,
    release: () => releases.splice(0).forEach((release) => release()),
    events: (batch: readonly RawDomainEvent[]) => {
      log.push(`handed ${batch[0]?.seq}..${batch[batch.length - 1]?.seq}`);
      return new Promise<void>((resolve) =>
        releases.push(() => {
          log.push(`dispatched ${batch[0]?.seq}`);
          resolve();
        }),
      );
    },
    close: () => log.push('close'),
    overflow: (dropped: number) => log.push(`overflow ${dropped}`),
  };
}

describe('intake: the event pump does not wait for dispatch while there is room', () => {
  it('hands every chunk over at once, and asks for the overflow snapshot after them', async () => {
    const target = heldTarget();
    const pump = new EventPump(
      scriptedBinding([
        { events: events(1, 4096), closes: [], overflowed: 3 },
        { events: events(4097, 4096), closes: [], overflowed: 0 },
        { events: events(8193, 5), closes: [], overflowed: 0 },
      ]),
      { ...target, room: () => undefined },
      logger,
    );
    pump.wake();
    await sleep(10);
    assert.deepEqual(target.log, ['handed 1..4096', 'handed 4097..8192', 'handed 8193..8197', 'overflow 3']);
    let settled = false;
    void pump.settled().then(() => (settled = true));
    await sleep(10);
    assert.equal(settled, false, 'settled() still waits for the dispatch');
    target.release();
    await sleep(10);
    assert.equal(settled, true);
  });

  it('without room it waits for the room promised, then goes on', async () => {
    const target = heldTarget();
    let grant: () => void = () => undefined;
    let asked = 0;
    const pump = new EventPump(
      scriptedBinding([
        { events: events(1, 4096), closes: [], overflowed: 0 },
        { events: events(4097, 10), closes: [], overflowed: 0 },
      ]),
      {
        ...target,
        room: () => {
          asked += 1;
          return asked === 1 ? new Promise<void>((resolve) => (grant = resolve)) : undefined;
        },
      },
      logger,
    );
    pump.wake();
    await sleep(10);
    assert.deepEqual(target.log, ['handed 1..4096'], 'no room: the second chunk stays in the native queue');
    grant();
    await sleep(10);
    assert.deepEqual(target.log, ['handed 1..4096', 'handed 4097..4106']);
  });

  it('a close is handled only after the events before it are dispatched', async () => {
    const target = heldTarget();
    const pump = new EventPump(
      scriptedBinding([{ events: events(1, 3), closes: [{ connectionId: 1, reason: 1 }], overflowed: 0 }]),
      { ...target, room: () => undefined },
      logger,
    );
    pump.wake();
    await sleep(10);
    assert.deepEqual(target.log, ['handed 1..3']);
    target.release();
    await pump.settled();
    assert.deepEqual(target.log, ['handed 1..3', 'dispatched 1', 'close']);
  });
});

/** An outbox recording what is appended; its appends stay pending while `hold` is set. */
class SlowOutbox extends MemoryOutbox {
  readonly appended: OutboxInput[] = [];
  appends = 0;
  hold: Promise<void> | undefined;
  constructor() {
    super(1_000_000);
  }
  override async append(inputs: readonly OutboxInput[]): Promise<void> {
    this.appends += 1;
    if (this.hold) await this.hold;
    this.appended.push(...inputs);
    await super.append(inputs);
  }
}

function dispatcherWith(outbox: SlowOutbox, connection: Partial<NativeConnection>) {
  return new Dispatcher({
    host: 'compute-1',
    bootId: 'boot',
    exchange: 'virtbus.lifecycle',
    format: 'json',
    stopDelayMs: 0,
    connection: () => connection as NativeConnection,
    outbox,
    metrics: idleBridgeMetrics(),
    logger,
  });
}

describe('intake: the lane batches what was accepted', () => {
  it('one state query and one append per lane batch of at most LANE_BATCH, in order', async () => {
    const outbox = new SlowOutbox();
    let queries = 0;
    const dispatcher = dispatcherWith(outbox, {
      domainStates: (uuids: readonly string[]) => {
        queries += 1;
        return Promise.resolve(uuids.map(() => ({ state: 1, reason: 1 })));
      },
    });
    const total = 2 * LANE_BATCH + 1000;
    const handed: Array<Promise<void>> = [];
    for (let from = 1; from <= total; from += 4096)
      handed.push(dispatcher.handleEvents(events(from, Math.min(4096, total - from + 1))));
    assert.equal(dispatcher.intakeBacklog, total, 'all accepted synchronously');
    await Promise.all(handed);
    await dispatcher.shutdown(false);
    assert.equal(outbox.appended.length, total);
    assert.equal(queries, 3, 'one state query per batch of at most LANE_BATCH');
    assert.equal(outbox.appends, 3);
    const bodies = outbox.appended.map((input) => JSON.parse(input.body.toString()) as LifecycleMessage);
    const seqs = bodies.map((body) => body.seq);
    assert.ok(
      seqs.every((seq, i) => i === 0 || seq === seqs[i - 1]! + 1),
      'seq follows acceptance order',
    );
    const occurred = outbox.appended.map((input) => input.occurredMicros);
    assert.ok(
      occurred.every((micros, i) => i === 0 || micros > occurred[i - 1]!),
      'events leave in the order they were accepted',
    );
    assert.ok(
      bodies.every((body) => body.power_state === 1),
      'the live state sampled for each',
    );
    assert.equal(dispatcher.intakeBacklog, 0);
  });

  it('has room until INTAKE_LIMIT events wait for the outbox; the lane makes room again', async () => {
    const outbox = new SlowOutbox();
    let open: () => void = () => undefined;
    outbox.hold = new Promise<void>((resolve) => (open = resolve));
    const dispatcher = dispatcherWith(outbox, {
      domainStates: (uuids: readonly string[]) => Promise.resolve(uuids.map(() => ({ state: 1, reason: 1 }))),
    });
    for (let from = 1; from <= INTAKE_LIMIT - 4096; from += 4096)
      void dispatcher.handleEvents(events(from, 4096));
    assert.equal(dispatcher.whenRoom(), undefined, 'below the limit: room');
    void dispatcher.handleEvents(events(INTAKE_LIMIT - 4095, 4096));
    const room = dispatcher.whenRoom();
    assert.ok(room, 'at the limit: a promise of room');
    let roomy = false;
    void room.then(() => (roomy = true));
    while (outbox.appends === 0) await sleep(5); // the lane built its first batch and appends it
    await sleep(80);
    assert.equal(roomy, false, 'no room while the outbox holds the lane');
    assert.equal(dispatcher.appendStalled, true, 'an append pending past a commit time is a stall');
    outbox.hold = undefined;
    open();
    await sleep(20);
    assert.equal(roomy, true, 'room once the lane appended a batch');
    assert.equal(dispatcher.appendStalled, false);
    await dispatcher.shutdown(false);
    assert.equal(outbox.appended.length, INTAKE_LIMIT);
  });
});

describe('intake first: publishing yields while intake is behind', () => {
  function gated(state: { depth: number; backlog: number; stalled: boolean }) {
    const inner = new MemoryOutbox(1000);
    const intake: IntakeState = {
      nativeDepth: () => state.depth,
      backlog: () => state.backlog,
      appendStalled: () => state.stalled,
    };
    const outbox = new IntakeFirstOutbox(inner, intake);
    return { inner, outbox };
  }

  it('hands the publisher nothing while intake is behind and wakes it once intake caught up', async () => {
    const state = { depth: INTAKE_PRESSURE, backlog: 0, stalled: false };
    const { outbox } = gated(state);
    let wakes = 0;
    outbox.onAppend(() => (wakes += 1));
    await outbox.append([
      {
        exchange: 'x',
        routingKey: 'k',
        messageId: 'm',
        type: 't',
        occurredMicros: 1,
        transition: 'resumed',
        body: Buffer.from('{}'),
      },
    ]);
    const afterAppend = wakes;
    assert.deepEqual(outbox.readAfter(0, 10), [], 'intake behind: nothing to publish yet');
    assert.equal(outbox.yields, 1);
    await sleep(20);
    assert.equal(wakes, afterAppend, 'not woken while intake is still behind');
    state.depth = 10;
    state.backlog = INTAKE_PRESSURE - 11;
    await sleep(20);
    assert.equal(wakes, afterAppend + 1, 'woken once intake caught up');
    assert.equal(outbox.readAfter(0, 10).length, 1);
    await outbox.close();
  });

  it('never yields while the lane waits for a full outbox (only confirms make room)', async () => {
    const state = { depth: 16384, backlog: INTAKE_LIMIT, stalled: true };
    const { outbox } = gated(state);
    await outbox.append([
      {
        exchange: 'x',
        routingKey: 'k',
        messageId: 'm',
        type: 't',
        occurredMicros: 1,
        transition: 'resumed',
        body: Buffer.from('{}'),
      },
    ]);
    assert.equal(outbox.readAfter(0, 10).length, 1);
    assert.equal(outbox.yields, 0);
    await outbox.close();
  });
});

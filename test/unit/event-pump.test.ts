/**
 * The event pump's order of work with a scripted queue: an overflow snapshot is asked for only once
 * the events that were queued before the drop have been dispatched (the real queue, with the addon,
 * is exercised by test/native and the overflow fault scenario).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { EventPump } from '../../src/bridge/event-pump';
import type { DrainResult, NativeBinding, QueueStats, RawDomainEvent } from '../../src/native/contract';
import { createLogger } from '../../src/util/log';

function events(from: number, count: number): RawDomainEvent[] {
  return Array.from({ length: count }, (_, index) => ({
    connectionId: 1,
    eventId: 0,
    type: 2,
    detail: 0,
    uuid: '6695eb01-f6a4-8304-79aa-97f2502e193f',
    name: 'guest',
    nameTruncated: false,
    wallMicros: from + index,
    monoMicros: from + index,
    seq: from + index,
  }));
}

/** A binding whose drain() hands out scripted results, then nothing. */
function scriptedBinding(script: DrainResult[], capacity: number): NativeBinding {
  const stats: QueueStats = { depth: 0, capacity, highWater: 0, dropped: 0, enqueued: 0 };
  return {
    drain: () => script.shift() ?? { events: [], closes: [], overflowed: 0 },
    queueStats: () => stats,
  } as unknown as NativeBinding;
}

async function pumpLog(script: DrainResult[], capacity = 16384): Promise<string[]> {
  const log: string[] = [];
  const pump = new EventPump(
    scriptedBinding(script, capacity),
    {
      events: async (batch) => {
        await Promise.resolve();
        log.push(`events ${batch[0]?.seq}..${batch[batch.length - 1]?.seq}`);
      },
      close: () => log.push('close'),
      overflow: (dropped) => log.push(`overflow ${dropped}`),
    },
    createLogger('silent', 'test'),
  );
  pump.wake();
  await pump.settled();
  return log;
}

describe('event pump', () => {
  it('asks for the overflow snapshot after the older events still queued, not before', async () => {
    const log = await pumpLog([
      { events: events(1, 4096), closes: [], overflowed: 7 },
      { events: events(4097, 100), closes: [], overflowed: 0 },
    ]);
    assert.deepEqual(log, ['events 1..4096', 'events 4097..4196', 'overflow 7']);
  });

  it('drops reported over several drains make one snapshot once the queue is empty', async () => {
    const log = await pumpLog([
      { events: events(1, 4096), closes: [], overflowed: 3 },
      { events: events(4097, 4096), closes: [], overflowed: 2 },
      { events: [], closes: [], overflowed: 0 },
    ]);
    assert.deepEqual(log, ['events 1..4096', 'events 4097..8192', 'overflow 5']);
  });

  it('under continuous load the snapshot comes once a whole capacity has been taken', async () => {
    const log = await pumpLog(
      [
        { events: events(1, 4096), closes: [], overflowed: 1 },
        { events: events(4097, 4096), closes: [], overflowed: 0 },
        { events: events(8193, 4096), closes: [], overflowed: 0 },
        { events: events(12289, 10), closes: [], overflowed: 0 },
      ],
      8192,
    );
    assert.deepEqual(log, [
      'events 1..4096',
      'events 4097..8192',
      'overflow 1',
      'events 8193..12288',
      'events 12289..12298',
    ]);
  });
});

describe('event pump: takeQueued (a snapshot accounting for queued events)', () => {
  it('hands the queued events to the caller and leaves the closes and drops it met to the pump', async () => {
    const log: string[] = [];
    const pump = new EventPump(
      scriptedBinding(
        [
          { events: events(1, 3), closes: [{ connectionId: 1, reason: 1 }], overflowed: 2 },
          { events: events(4, 1), closes: [], overflowed: 0 },
        ],
        16384,
      ),
      {
        events: async (batch) => {
          await Promise.resolve();
          log.push(`events ${batch[0]?.seq}..${batch[batch.length - 1]?.seq}`);
        },
        close: () => log.push('close'),
        overflow: (dropped) => log.push(`overflow ${dropped}`),
      },
      createLogger('silent', 'test'),
    );
    const taken = pump.takeQueued();
    assert.deepEqual(
      taken.map((e) => e.seq),
      [1, 2, 3],
    );
    assert.deepEqual(log, [], 'nothing handled synchronously');
    await new Promise((resolve) => setImmediate(resolve));
    await pump.settled();
    assert.deepEqual(log, ['events 4..4', 'overflow 2', 'close']);
  });
});

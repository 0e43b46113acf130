/**
 * The dispatcher's ordering around Nova's delayed STOPPED, with a recording outbox and no libvirt
 * connection (power states then read as unknown): what enters the outbox is what reaches the wire.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { Dispatcher } from '../../src/bridge/dispatcher';
import type { Outbox, OutboxInput, OutboxRecord } from '../../src/bridge/outbox';
import type { DomainInfo, NativeConnection, RawDomainEvent } from '../../src/native/contract';
import { createLogger } from '../../src/util/log';
import { idleBridgeMetrics } from '../support/bridge-metrics';

const UUID = '6695eb01-f6a4-8304-79aa-97f2502e193f';
const EVENT_UNDEFINED = 1;
const EVENT_STARTED = 2;
const EVENT_STOPPED = 5;

class RecordingOutbox implements Outbox {
  readonly appended: OutboxInput[] = [];
  readonly capacity = 1000;
  get depth(): number {
    return this.appended.length;
  }
  oldestMicros(): number | undefined {
    return undefined;
  }
  append(inputs: readonly OutboxInput[]): Promise<void> {
    this.appended.push(...inputs);
    return Promise.resolve();
  }
  readAfter(): OutboxRecord[] {
    return [];
  }
  confirm(): void {}
  onAppend(): void {}
  close(): Promise<void> {
    return Promise.resolve();
  }
}

function event(type: number, seq: number): RawDomainEvent {
  return {
    connectionId: 1,
    eventId: 0,
    type,
    detail: type === EVENT_STOPPED ? 1 : 0,
    uuid: UUID,
    name: 'guest',
    nameTruncated: false,
    wallMicros: Date.now() * 1000 + seq,
    monoMicros: seq,
    seq,
  };
}

function setup(stopDelayMs: number, connection?: Partial<NativeConnection>) {
  const outbox = new RecordingOutbox();
  const dispatcher = new Dispatcher({
    host: 'compute-1',
    bootId: 'boot',
    exchange: 'virtbus.lifecycle',
    format: 'json',
    stopDelayMs,
    connection: () => connection as NativeConnection | undefined,
    outbox,
    metrics: idleBridgeMetrics(),
    logger: createLogger('silent', 'test'),
  });
  const transitions = (): string[] => outbox.appended.map((input) => input.transition);
  return { dispatcher, transitions };
}

describe('dispatcher order around a delayed STOPPED', () => {
  it('a STARTED dispatched in the same turn as the STOPPED is released does not overtake it', async () => {
    const { dispatcher, transitions } = setup(20);
    // In the bridge the STARTED comes from the native wake-up, in the poll phase: after the timer
    // that released the STOPPED, before that turn's setImmediate callbacks. Hold the immediates back
    // to put the STARTED exactly there.
    const deferred: Array<() => void> = [];
    const realSetImmediate = globalThis.setImmediate;
    globalThis.setImmediate = ((callback: () => void) => {
      deferred.push(callback);
    }) as unknown as typeof setImmediate;
    try {
      await dispatcher.handleEvents([event(EVENT_STOPPED, 1)]);
      while (dispatcher.delayedStopsPending > 0) await sleep(5);
      const started = dispatcher.handleEvents([event(EVENT_STARTED, 2)]);
      for (const callback of deferred.splice(0)) callback();
      await started;
    } finally {
      globalThis.setImmediate = realSetImmediate;
    }
    await sleep(5);
    assert.deepEqual(transitions(), ['stopped', 'started']);
  });

  it('a STARTED within the delay cancels the STOPPED (a reboot publishes no stopped)', async () => {
    const { dispatcher, transitions } = setup(50);
    await dispatcher.handleEvents([event(EVENT_STOPPED, 1)]);
    await dispatcher.handleEvents([event(EVENT_STARTED, 2)]);
    await sleep(80);
    assert.deepEqual(transitions(), ['started']);
  });

  it('a stop released in the turn shutdown begins is still published', async () => {
    const { dispatcher, transitions } = setup(20);
    void dispatcher.handleEvents([event(EVENT_STOPPED, 1)]);
    await new Promise<void>((resolve) => {
      setTimeout(() => void dispatcher.shutdown(false).then(resolve), 20);
    });
    assert.deepEqual(transitions(), ['stopped']);
  });
});

describe('dispatcher: events Nova does not see, around a held STOPPED', () => {
  it("a transient guest's undefined waits behind its held stopped and follows it", async () => {
    const { dispatcher, transitions } = setup(30);
    await dispatcher.handleEvents([event(EVENT_STOPPED, 1), event(EVENT_UNDEFINED, 2)]);
    assert.deepEqual(transitions(), [], 'nothing overtakes the held stop');
    await sleep(80);
    assert.deepEqual(transitions(), ['stopped', 'undefined']);
  });

  it('a cancelled stop lets what waited behind it out first; a dropped one at shutdown too', async () => {
    const { dispatcher, transitions } = setup(1000);
    await dispatcher.handleEvents([
      event(EVENT_STOPPED, 1),
      event(EVENT_UNDEFINED, 2),
      event(EVENT_STARTED, 3),
    ]);
    assert.deepEqual(transitions(), ['undefined', 'started']);
    await dispatcher.handleEvents([event(EVENT_STOPPED, 4), event(EVENT_UNDEFINED, 5)]);
    await dispatcher.shutdown(false);
    assert.deepEqual(
      transitions(),
      ['undefined', 'started', 'undefined'],
      'the stop dropped as Nova does, not its follower',
    );
  });
});

describe('dispatcher snapshots', () => {
  const domain: DomainInfo = {
    uuid: UUID,
    name: 'guest',
    active: true,
    persistent: true,
    state: 1,
    reason: 1,
  };

  it('a snapshot whose listing fails is taken again shortly, not at the next periodic one', async () => {
    let calls = 0;
    const { dispatcher, transitions } = setup(0, {
      listAllDomains: () => {
        calls += 1;
        return calls === 1 ? Promise.reject(new Error('libvirt hiccup')) : Promise.resolve([domain]);
      },
    });
    await dispatcher.snapshot('reconnect');
    assert.deepEqual(transitions(), [], 'nothing published by the failed attempt');
    const deadline = Date.now() + 3000;
    while (transitions().length < 2 && Date.now() < deadline) await sleep(50);
    assert.deepEqual(transitions(), ['sync', 'sync_end']);
    assert.equal(calls, 2);
  });

  it('requests of one reason made while one waits in the lane are served by it', async () => {
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let calls = 0;
    const { dispatcher, transitions } = setup(0, {
      listAllDomains: async () => {
        calls += 1;
        await gate;
        return [domain];
      },
    });
    const running = dispatcher.snapshot('overflow'); // starts, blocks in the listing
    await sleep(10);
    const waiting = [
      dispatcher.snapshot('overflow'),
      dispatcher.snapshot('overflow'),
      dispatcher.snapshot('overflow'),
    ];
    const periodic = dispatcher.snapshot('periodic'); // another reason: its own snapshot
    release();
    await Promise.all([running, ...waiting, periodic]);
    assert.equal(calls, 3, 'the running one, one for the three waiting overflow requests, the periodic one');
    assert.equal(transitions().filter((t) => t === 'sync_end').length, 3);
  });
});

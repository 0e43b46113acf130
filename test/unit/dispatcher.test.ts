/**
 * The dispatcher's ordering around Nova's delayed STOPPED, with a recording outbox and no libvirt
 * connection (power states then read as unknown): what enters the outbox is what reaches the wire.
 */
import { libvirtError } from '../support/commands';
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { Dispatcher, type DispatcherOptions } from '../../src/bridge/dispatcher';
import type { LifecycleMessage } from '../../src/messages/lifecycle';
import { ManualTimers } from '../support/manual-timers';
import type { Outbox, OutboxInput, OutboxRecord } from '../../src/bridge/outbox';
import type { DomainInfo, NativeConnection, RawDomainEvent } from '../../src/native/contract';
import { createLogger } from '../../src/util/log';
import { idleBridgeMetrics } from '../support/bridge-metrics';

const UUID = '6695eb01-f6a4-8304-79aa-97f2502e193f';
const EVENT_UNDEFINED = 1;
const EVENT_STARTED = 2;
const EVENT_SUSPENDED = 3;
const DETAIL_SUSPENDED_MIGRATED = 1;
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

function event(type: number, seq: number, detail = type === EVENT_STOPPED ? 1 : 0): RawDomainEvent {
  return {
    connectionId: 1,
    eventId: 0,
    type,
    detail,
    uuid: UUID,
    name: 'guest',
    nameTruncated: false,
    wallMicros: Date.now() * 1000 + seq,
    monoMicros: seq,
    seq,
  };
}

function setup(
  stopDelayMs: number,
  connection?: Partial<NativeConnection>,
  extra: Pick<DispatcherOptions, 'takeQueued' | 'timers' | 'now'> = {},
) {
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
    ...extra,
  });
  const transitions = (): string[] => outbox.appended.map((input) => input.transition);
  const bodies = (): LifecycleMessage[] =>
    outbox.appended.map((input) => JSON.parse(input.body.toString()) as LifecycleMessage);
  return { dispatcher, transitions, bodies };
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
    // Until released (30 ms) and flushed: on a loaded machine the release timer and a fixed sleep can
    // expire in the same turn, before the flush.
    const deadline = Date.now() + 5000;
    while (transitions().length < 2 && Date.now() < deadline) await sleep(10);
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

describe('snapshots and a held STOPPED (issue 9, 4d)', () => {
  const OTHER = '0c3e7bd2-4a0e-4bd1-9a8e-2f6c1f3f8a11';
  const listing: DomainInfo[] = [
    { uuid: UUID, name: 'guest', active: false, persistent: true, state: 5, reason: 2 }, // SHUTOFF
    { uuid: OTHER, name: 'other', active: true, persistent: true, state: 1, reason: 1 },
  ];
  const connection = (more: Partial<NativeConnection> = {}): Partial<NativeConnection> => ({
    listAllDomains: () => Promise.resolve(listing),
    domainStates: (uuids) => Promise.resolve(uuids.map(() => ({ state: 1, reason: 1 }))),
    ...more,
  });
  const syncsOf = (bodies: LifecycleMessage[], uuid: string) =>
    bodies.filter((b) => b.transition === 'sync' && b.instance_uuid === uuid);

  it('a domain whose STOPPED is held gets no sync but stays in sync_end; the STARTED that cancels it follows', async () => {
    const timers = new ManualTimers();
    const { dispatcher, transitions, bodies } = setup(15000, connection(), { timers, now: () => timers.now });
    await dispatcher.handleEvents([event(EVENT_STOPPED, 1)]);
    timers.advance(5000);
    await dispatcher.snapshot('periodic');
    assert.deepEqual(syncsOf(bodies(), UUID), [], 'no sync (power_state 4) for the held domain');
    assert.equal(syncsOf(bodies(), OTHER).length, 1, 'the other domain is described');
    const end = bodies().find((b) => b.transition === 'sync_end');
    assert.deepEqual([...(end?.instance_uuids ?? [])].sort(), [OTHER, UUID].sort(), 'listed: not vanished');
    assert.equal(end?.snapshot?.count, 1, 'count is the number of sync messages');
    await dispatcher.handleEvents([event(EVENT_STARTED, 2)]);
    timers.advance(60000);
    await sleep(5);
    assert.deepEqual(transitions(), ['sync', 'sync_end', 'started'], 'no stopped: the reboot window closed');
  });

  it('a STOPPED held through a snapshot and then released is published as stopped after it', async () => {
    const timers = new ManualTimers();
    const { dispatcher, transitions, bodies } = setup(15000, connection(), { timers, now: () => timers.now });
    await dispatcher.handleEvents([event(EVENT_STOPPED, 1)]);
    await dispatcher.snapshot('periodic');
    timers.advance(15000);
    while (transitions().length < 3) await sleep(2);
    assert.deepEqual(transitions(), ['sync', 'sync_end', 'stopped']);
    assert.equal(bodies()[2]?.delayed_ms, 15000);
  });

  it('a STOPPED still in the native queue when the listing returns is held before the snapshot decides', async () => {
    const timers = new ManualTimers();
    const order: string[] = [];
    let queued: RawDomainEvent[] = [event(EVENT_STOPPED, 1)];
    const { dispatcher, transitions, bodies } = setup(
      15000,
      connection({
        listAllDomains: () => {
          order.push('list');
          return Promise.resolve(listing);
        },
      }),
      {
        timers,
        now: () => timers.now,
        takeQueued: () => {
          order.push('take');
          const taken = queued;
          queued = [];
          return taken;
        },
      },
    );
    await dispatcher.snapshot('reconnect');
    assert.deepEqual(order, ['list', 'take'], 'the queue is taken after the listing');
    assert.deepEqual(syncsOf(bodies(), UUID), []);
    assert.equal(dispatcher.delayedStopsPending, 1, 'the taken STOPPED is held, as any other');
    await dispatcher.handleEvents([event(EVENT_STARTED, 2)]);
    assert.deepEqual(transitions(), ['sync', 'sync_end', 'started']);
  });

  it('a hold cancelled while the listing runs still withholds the domain; the cancelling STARTED follows the snapshot', async () => {
    const timers = new ManualTimers();
    const late: { dispatcher?: Dispatcher } = {};
    const built = setup(
      15000,
      connection({
        listAllDomains: () => {
          // The guest starts again while libvirt answers: the listing may still show it SHUTOFF.
          void late.dispatcher?.handleEvents([event(EVENT_STARTED, 2)]);
          return Promise.resolve(listing);
        },
      }),
      { timers, now: () => timers.now },
    );
    const dispatcher = built.dispatcher;
    late.dispatcher = dispatcher;
    await dispatcher.handleEvents([event(EVENT_STOPPED, 1)]);
    await dispatcher.snapshot('periodic');
    await dispatcher.handleEvents([]);
    assert.deepEqual(syncsOf(built.bodies(), UUID), []);
    assert.deepEqual(built.transitions(), ['sync', 'sync_end', 'started']);
  });

  it('a domain not held is described as before, even when stopped and released earlier', async () => {
    const timers = new ManualTimers();
    const { dispatcher, transitions, bodies } = setup(15000, connection(), { timers, now: () => timers.now });
    await dispatcher.handleEvents([event(EVENT_STOPPED, 1)]);
    timers.advance(15000);
    while (transitions().length < 1) await sleep(2);
    await dispatcher.snapshot('periodic');
    assert.deepEqual(transitions(), ['stopped', 'sync', 'sync', 'sync_end']);
    assert.equal(syncsOf(bodies(), UUID)[0]?.power_state, 4, 'a guest that stayed off is reported off');
  });
});

describe('SUSPENDED/MIGRATED job check (issue 9, 4f)', () => {
  const states = (uuids: readonly string[]) => Promise.resolve(uuids.map(() => ({ state: 3, reason: 2 })));
  const migrated = () => [event(EVENT_SUSPENDED, 1, DETAIL_SUSPENDED_MIGRATED)];

  it('a job query failing with an unexpected libvirt error publishes nothing, as Nova queues nothing', async () => {
    const { dispatcher, transitions } = setup(0, {
      jobType: () => Promise.reject(libvirtError(1, 'internal error: unexpected')),
      domainStates: states,
    });
    await dispatcher.handleEvents(migrated());
    await dispatcher.handleEvents([event(EVENT_STARTED, 2)]);
    assert.deepEqual(transitions(), ['started'], 'the lane goes on with the next event');
  });

  it('nothing either without a libvirt connection (the reconnect snapshot carries the state)', async () => {
    const { dispatcher, transitions } = setup(0);
    await dispatcher.handleEvents(migrated());
    assert.deepEqual(transitions(), []);
  });

  it("Nova's decided cases are still published: completed, vanished, failed", async () => {
    const cases: Array<[Partial<NativeConnection>, string]> = [
      [{ jobType: () => Promise.resolve(3) }, 'migration_completed'],
      [{ jobType: () => Promise.reject(libvirtError(42, 'no domain')) }, 'migration_completed'],
      [{ jobType: () => Promise.resolve(4) }, 'paused'],
      [{ jobType: () => Promise.resolve(0), isActive: () => Promise.resolve(true) }, 'paused'],
      [
        {
          jobType: () => Promise.resolve(0),
          isActive: () => Promise.reject(libvirtError(1, 'internal error')),
        },
        'paused',
      ],
    ];
    for (const [fake, expected] of cases) {
      const { dispatcher, transitions } = setup(0, { ...fake, domainStates: states });
      await dispatcher.handleEvents(migrated());
      assert.deepEqual(transitions(), [expected]);
    }
  });
});

describe('snapshots and an off state whose STOPPED has not arrived (issue 9, 4d)', () => {
  const EVENT_SHUTDOWN = 6;
  const listed = (state: number): DomainInfo[] => [
    { uuid: UUID, name: 'guest', active: state !== 5, persistent: true, state, reason: 1 },
  ];
  const syncs = (bodies: LifecycleMessage[]) =>
    bodies.filter((b) => b.transition === 'sync' && b.instance_uuid === UUID);

  function rig(state: number) {
    const timers = new ManualTimers();
    let listing = listed(state);
    const built = setup(
      15000,
      {
        listAllDomains: () => Promise.resolve(listing),
        domainStates: (uuids) => Promise.resolve(uuids.map(() => ({ state: 1, reason: 1 }))),
      },
      { timers, now: () => timers.now },
    );
    return { ...built, timers, relist: (next: number) => (listing = listed(next)) };
  }

  it('a guest last seen started and now listed SHUTOFF is withheld until its STOPPED arrives and is held', async () => {
    const { dispatcher, transitions, bodies } = rig(5);
    await dispatcher.handleEvents([event(EVENT_STARTED, 1)]);
    await dispatcher.snapshot('periodic');
    assert.deepEqual(syncs(bodies()), [], 'libvirt shows SHUTOFF before it emits STOPPED: no sync');
    const end = bodies().find((b) => b.transition === 'sync_end');
    assert.ok(end?.instance_uuids?.includes(UUID), 'still listed');
    // The destroy's events arrive, then the start of the hard reboot: no stopped, no off sync.
    await dispatcher.handleEvents([event(EVENT_SHUTDOWN, 2), event(EVENT_STOPPED, 3)]);
    await dispatcher.snapshot('periodic');
    await dispatcher.handleEvents([event(EVENT_STARTED, 4)]);
    assert.deepEqual(syncs(bodies()), []);
    assert.deepEqual(transitions(), ['started', 'sync_end', 'shutdown', 'sync_end', 'started']);
  });

  it("QEMU's destroy: SHUTDOWN (host request) seen, state SHUTDOWN listed before STOPPED: withheld", async () => {
    const { dispatcher, bodies } = rig(4);
    await dispatcher.handleEvents([event(EVENT_STARTED, 1), event(EVENT_SHUTDOWN, 2)]);
    await dispatcher.snapshot('periodic');
    assert.deepEqual(syncs(bodies()), []);
  });

  it('an off state no STOPPED explains for a whole stop delay is reported', async () => {
    const { dispatcher, bodies, timers } = rig(6); // CRASHED, kept (on_crash=preserve): no STOPPED
    await dispatcher.handleEvents([event(EVENT_STARTED, 1)]);
    await dispatcher.snapshot('periodic');
    assert.deepEqual(syncs(bodies()), []);
    timers.advance(14_999);
    await dispatcher.snapshot('periodic');
    assert.deepEqual(syncs(bodies()), [], 'within the delay from the first snapshot that saw it');
    timers.advance(1);
    await dispatcher.snapshot('periodic');
    assert.deepEqual(
      syncs(bodies()).map((b) => b.power_state),
      [6],
    );
  });

  it('libvirt state SHUTDOWN (being shut down) is withheld even with no event known, for at most the delay', async () => {
    // A reconnect or overflow snapshot forgets the last events, yet a domain in libvirt's transient
    // SHUTDOWN state (QEMU got SIGTERM from a destroy) always reaches SHUTOFF and emits STOPPED
    // shortly: reporting power_state 4 now would let Nova's 4b stop a guest inside a hard reboot.
    const { dispatcher, bodies, timers } = rig(4);
    await dispatcher.handleEvents([event(EVENT_STARTED, 1)]);
    await dispatcher.snapshot('reconnect');
    assert.deepEqual(syncs(bodies()), [], 'state SHUTDOWN after a reconnect: withheld');
    const end = bodies().find((b) => b.transition === 'sync_end');
    assert.ok(end?.instance_uuids?.includes(UUID), 'still listed in sync_end');
    timers.advance(14_999);
    await dispatcher.snapshot('periodic');
    assert.deepEqual(syncs(bodies()), [], 'within the delay from the first snapshot that saw it');
    timers.advance(1);
    await dispatcher.snapshot('periodic');
    assert.deepEqual(
      syncs(bodies()).map((b) => b.power_state),
      [4],
      'stuck in SHUTDOWN for a whole delay: reported, and Nova rules on it',
    );
  });

  it('libvirt state SHUTDOWN is withheld at the start snapshot too (nothing known yet)', async () => {
    const { dispatcher, bodies } = rig(4);
    await dispatcher.snapshot('start');
    assert.deepEqual(syncs(bodies()), []);
    const end = bodies().find((b) => b.transition === 'sync_end');
    assert.ok(end?.instance_uuids?.includes(UUID), 'still listed in sync_end');
  });

  it('after a STOPPED, with no event known, and after a reconnect the off state is reported at once', async () => {
    const { dispatcher, bodies } = rig(5);
    await dispatcher.snapshot('start');
    assert.equal(syncs(bodies()).length, 1, 'nothing known: reported');
    await dispatcher.handleEvents([event(EVENT_STARTED, 1)]);
    await dispatcher.snapshot('reconnect');
    assert.equal(syncs(bodies()).length, 2, 'events may have been lost while disconnected: reported');
    const zero = setup(0, { listAllDomains: () => Promise.resolve(listed(5)) });
    await zero.dispatcher.handleEvents([event(EVENT_STARTED, 1), event(EVENT_STOPPED, 2)]);
    await zero.dispatcher.snapshot('periodic');
    assert.equal(
      zero.bodies().filter((b) => b.transition === 'sync').length,
      1,
      'last event stopped: explained',
    );
  });
});

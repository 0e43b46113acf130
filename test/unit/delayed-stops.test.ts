import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DelayedStops } from '../../src/bridge/delayed-stops';
import { ManualTimers } from '../support/manual-timers';

function setup(delay = 15000) {
  const timers = new ManualTimers();
  const released: Array<{ item: string; heldMs: number }> = [];
  const stops = new DelayedStops<string>(
    delay,
    (item, heldMs) => released.push({ item, heldMs }),
    timers,
    () => timers.now,
  );
  return { timers, released, stops };
}

describe('DelayedStops (Nova _event_emit_delayed)', () => {
  it('releases a lone STOPPED after the delay, with how long it was held', () => {
    const { timers, released, stops } = setup();
    stops.hold('a', 'stop-a');
    timers.advance(14999);
    assert.deepEqual(released, []);
    assert.equal(stops.size, 1);
    timers.advance(1);
    assert.deepEqual(released, [{ item: 'stop-a', heldMs: 15000 }]);
    assert.equal(stops.size, 0);
  });

  it('a later event for the same domain cancels it (reboot: STOPPED then STARTED)', () => {
    const { timers, released, stops } = setup();
    stops.hold('a', 'stop-a');
    timers.advance(3000);
    assert.equal(stops.cancel('a'), true);
    timers.advance(20000);
    assert.deepEqual(released, []);
    assert.equal(timers.pending, 0);
  });

  it('an event for another domain does not cancel it', () => {
    const { timers, released, stops } = setup();
    stops.hold('a', 'stop-a');
    assert.equal(stops.cancel('b'), false);
    timers.advance(15000);
    assert.deepEqual(
      released.map((r) => r.item),
      ['stop-a'],
    );
  });

  it('a second STOPPED restarts the window; at most one is pending per domain', () => {
    const { timers, released, stops } = setup();
    stops.hold('a', 'first');
    timers.advance(10000);
    stops.hold('a', 'second');
    assert.equal(stops.size, 1);
    timers.advance(10000);
    assert.deepEqual(released, []);
    timers.advance(5000);
    assert.deepEqual(released, [{ item: 'second', heldMs: 15000 }]);
  });

  it('takeAll empties the map in hold order and no timer fires afterwards', () => {
    const { timers, released, stops } = setup();
    stops.hold('a', 'stop-a');
    timers.advance(1000);
    stops.hold('b', 'stop-b');
    timers.advance(500);
    const all = stops.takeAll();
    assert.deepEqual(all, [
      { item: 'stop-a', heldMs: 1500, followers: [] },
      { item: 'stop-b', heldMs: 500, followers: [] },
    ]);
    timers.advance(60000);
    assert.deepEqual(released, []);
    assert.equal(stops.size, 0);
  });

  it('events Nova does not see wait behind a held STOPPED and go out with it, in order', () => {
    const timers = new ManualTimers();
    const released: Array<{ item: string; followers: readonly string[] }> = [];
    const stops = new DelayedStops<string>(
      15000,
      (item, _heldMs, followers) => released.push({ item, followers }),
      timers,
      () => timers.now,
    );
    assert.equal(stops.follow('a', 'undefined-a'), false, 'nothing held: not queued');
    stops.hold('a', 'stop-a');
    assert.equal(stops.follow('a', 'undefined-a'), true);
    assert.equal(stops.follow('b', 'defined-b'), false, 'another domain is not held back');
    timers.advance(15000);
    assert.deepEqual(released, [{ item: 'stop-a', followers: ['undefined-a'] }]);
    stops.hold('a', 'stop-a2');
    stops.follow('a', 'rebooted-a');
    assert.deepEqual(stops.cancelWithFollowers('a'), ['rebooted-a'], 'cancelled: the followers go out now');
    assert.equal(stops.cancelWithFollowers('a'), undefined);
  });
});

describe('DelayedStops: which domains are held (for snapshots)', () => {
  it('lists exactly the domains with a pending STOPPED, across hold, cancel and release', () => {
    const { timers, stops } = setup(1000);
    stops.hold('a', 'stop-a');
    timers.advance(500);
    stops.hold('b', 'stop-b');
    assert.deepEqual([...stops.heldUuids()].sort(), ['a', 'b']);
    stops.cancel('b');
    assert.deepEqual([...stops.heldUuids()], ['a']);
    timers.advance(500);
    assert.deepEqual([...stops.heldUuids()], [], 'released: no longer held');
  });
});

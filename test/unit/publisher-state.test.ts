/**
 * The publisher's channel life (src/bridge/publisher-state.ts) transition by transition: each named
 * transition from the states it is allowed in, and IllegalTransitionError from the others. The
 * races fixed earlier read here as transitions: a confirm or a close from a channel that is gone
 * (isCurrent false), a setup finishing after a newer one started (isOpening false).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { IllegalTransitionError, PublisherLifecycle } from '../../src/bridge/publisher-state';

type Model = { name: string };
type Channel = { id: number };
const A: Model = { name: 'A' };
const B: Model = { name: 'B' };
const make = (): PublisherLifecycle<Model, Channel> => new PublisherLifecycle<Model, Channel>();
const timer = (): NodeJS.Timeout => setTimeout(() => assert.fail('a cancelled timer fired'), 60_000).unref();
const illegal = (fn: () => unknown, transition: string): void =>
  assert.throws(
    fn,
    (error: unknown) => error instanceof IllegalTransitionError && error.message.includes(transition),
  );

describe('PublisherLifecycle', () => {
  it('idle → opening → open → channelLost → idle, with a fresh cursor per channel', () => {
    const life = make();
    assert.equal(life.kind, 'idle');
    const attempt = life.opening(A);
    assert.equal(life.kind, 'opening');
    assert.ok(life.isOpening(attempt));
    const open = life.opened(attempt, { id: 1 });
    assert.equal(life.kind, 'open');
    assert.deepEqual(
      { cursor: open.cursor, inFlight: open.inFlight, waitingForDrain: open.waitingForDrain },
      { cursor: 0, inFlight: 0, waitingForDrain: false },
    );
    open.cursor = 7;
    open.inFlight = 3;
    const lost = life.channelLost();
    assert.equal(lost, open);
    assert.equal(lost.inFlight, 3, 'what was in flight is reported by the caller');
    assert.equal(life.kind, 'idle');
    assert.equal(life.isCurrent(open), false, 'confirms of the lost channel are ignored');
    const next = life.opened(life.opening(A), { id: 2 });
    assert.equal(next.cursor, 0, 'a new channel republishes from the first unconfirmed record');
  });

  it('a newer connection supersedes a setup in progress; the older one can neither open nor abandon', () => {
    const life = make();
    const older = life.opening(A);
    const newer = life.opening(B);
    assert.equal(life.isOpening(older), false);
    illegal(() => life.opened(older, { id: 1 }), 'opened');
    illegal(() => life.abandon(older), 'abandon');
    life.opened(newer, { id: 2 });
    assert.equal(life.kind, 'open');
  });

  it('abandon: a setup that failed returns to idle', () => {
    const life = make();
    const attempt = life.opening(A);
    life.abandon(attempt);
    assert.equal(life.kind, 'idle');
  });

  it('reopenWait: from idle only; reopenDue back to idle; opening or close cancel its timer', () => {
    const life = make();
    const first = timer();
    life.waitToReopen(first);
    assert.equal(life.kind, 'reopenWait');
    illegal(() => life.waitToReopen(timer()), 'waitToReopen');
    life.reopenDue();
    assert.equal(life.kind, 'idle');
    illegal(() => life.reopenDue(), 'reopenDue');
    life.waitToReopen(timer());
    life.opening(A); // cancels the timer (it would fail the test if it fired)
    assert.equal(life.kind, 'opening');
    const other = make();
    other.waitToReopen(timer());
    other.close();
    assert.equal(other.kind, 'closed');
  });

  it('connectionDown from every live state: idle, and the lost open channel returned', () => {
    for (const setup of [
      (life: PublisherLifecycle<Model, Channel>) => life,
      (life: PublisherLifecycle<Model, Channel>) => (life.opening(A), life),
      (life: PublisherLifecycle<Model, Channel>) => (life.waitToReopen(timer()), life),
    ]) {
      const life = setup(make());
      assert.equal(life.connectionDown(), undefined);
      assert.equal(life.kind, 'idle');
    }
    const life = make();
    const open = life.opened(life.opening(A), { id: 1 });
    assert.equal(life.connectionDown(), open);
    assert.equal(life.kind, 'idle');
  });

  it('channelLost only from open; opening not from open', () => {
    const life = make();
    illegal(() => life.channelLost(), 'channelLost');
    life.opened(life.opening(A), { id: 1 });
    illegal(() => life.opening(B), 'opening');
    illegal(() => life.waitToReopen(timer()), 'waitToReopen');
  });

  it('closed is final: every transition throws', () => {
    const life = make();
    const open = life.opened(life.opening(A), { id: 1 });
    const from = life.close();
    assert.equal(from, open, 'close returns the open channel to close');
    assert.equal(life.kind, 'closed');
    assert.equal(life.isCurrent(open), false);
    illegal(() => life.opening(A), 'opening');
    illegal(() => life.connectionDown(), 'connectionDown');
    illegal(() => life.waitToReopen(timer()), 'waitToReopen');
    illegal(() => life.channelLost(), 'channelLost');
    illegal(() => life.close(), 'close');
  });
});

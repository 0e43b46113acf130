/**
 * The consumer subscription's state machine, driven directly: every named transition from every
 * state it leaves, the calls that are illegal in a state (they throw, as amqplib's channel does on a
 * closed channel), and the races the flags it replaced got wrong, each as the sequence of
 * transitions that now shows it.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  IllegalTransition,
  SubscriptionMachine,
  type StateName,
  type SubscriptionState,
} from '../../src/consumer/subscription-state';

interface Ch {
  readonly id: string;
}
const A: Ch = { id: 'a' };
const B: Ch = { id: 'b' };
const TAGS = ['amq.ctag-1', 'amq.ctag-2'];

function machine(): { m: SubscriptionMachine<Ch>; seen: string[] } {
  const seen: string[] = [];
  const m = new SubscriptionMachine<Ch>((from, to) => seen.push(`${from.name}>${to.name}`));
  return { m, seen };
}

/** A machine brought to `name` on channels A by legal transitions. */
function inState(name: StateName): SubscriptionMachine<Ch> {
  const { m } = machine();
  if (name === 'detached') return m;
  if (name === 'stopped') {
    m.attach(A);
    m.toStopped();
    return m;
  }
  m.attach(A);
  if (name === 'idle') return m;
  m.toSubscribing();
  if (name === 'subscribing') return m;
  m.toConsuming(A, TAGS);
  if (name === 'consuming') return m;
  m.toCancelling();
  return m;
}

const ALL: StateName[] = ['detached', 'idle', 'subscribing', 'consuming', 'cancelling', 'stopped'];

function channelsOf(state: SubscriptionState<Ch>): Ch | undefined {
  return state.name === 'detached' ? undefined : state.channels;
}

describe('subscription state: transitions', () => {
  it('starts detached, with no channels, not consuming, not stopped', () => {
    const { m } = machine();
    assert.equal(m.state.name, 'detached');
    assert.equal(m.channels, undefined);
    assert.equal(m.consuming, false);
    assert.equal(m.stopped, false);
  });

  it('the full life: attach, subscribe, consume, cancel, idle, subscribe again, detach', () => {
    const { m, seen } = machine();
    m.attach(A);
    assert.equal(m.toSubscribing(), A);
    assert.equal(m.toConsuming(A, TAGS), true);
    assert.equal(m.consuming, true);
    assert.deepEqual(m.state, { name: 'consuming', channels: A, tags: TAGS });
    assert.deepEqual(m.toCancelling(), { channels: A, tags: TAGS });
    assert.equal(m.consuming, false);
    m.toIdle(A);
    m.toSubscribing();
    assert.equal(m.detach(A), true);
    assert.deepEqual(seen, [
      'detached>idle',
      'idle>subscribing',
      'subscribing>consuming',
      'consuming>cancelling',
      'cancelling>idle',
      'idle>subscribing',
      'subscribing>detached',
    ]);
  });

  for (const from of ALL.filter((name) => name !== 'stopped'))
    it(`attach from ${from}: idle on the new channels`, () => {
      const m = inState(from);
      m.attach(B);
      assert.deepEqual(m.state, { name: 'idle', channels: B });
    });

  it('attach and detach while stopped only swap its channels; it stays stopped', () => {
    const m = inState('stopped');
    assert.equal(m.detach(A), true);
    assert.deepEqual(m.state, { name: 'stopped', channels: undefined });
    m.attach(B);
    assert.deepEqual(m.state, { name: 'stopped', channels: B });
    assert.equal(m.stopped, true);
  });

  for (const from of ALL.filter((name) => name !== 'detached' && name !== 'stopped'))
    it(`detach from ${from}: detached; a late close of other channels changes nothing`, () => {
      const m = inState(from);
      assert.equal(m.detach(B), false, 'not the channels in use');
      assert.equal(m.state.name, from);
      assert.equal(m.detach(A), true);
      assert.deepEqual(m.state, { name: 'detached' });
      assert.equal(m.detach(A), false, 'a second close is not news');
      assert.equal(m.detach(), false);
    });

  it('detach without channels (the connection went down) leaves any channels', () => {
    const m = inState('consuming');
    assert.equal(m.detach(), true);
    assert.equal(m.channels, undefined);
  });

  for (const from of ALL)
    it(`toStopped from ${from}: stopped, returning the consumers to cancel only when consuming`, () => {
      const m = inState(from);
      if (from === 'stopped') {
        assert.throws(() => m.toStopped(), IllegalTransition, 'stopping twice is a bug');
        return;
      }
      const consumers = m.toStopped();
      assert.equal(m.stopped, true);
      assert.equal(m.consuming, false);
      assert.equal(channelsOf(m.state), from === 'detached' ? undefined : A, 'channels kept for the drain');
      assert.deepEqual(consumers, from === 'consuming' ? { channels: A, tags: TAGS } : undefined);
    });

  it('subscribeFailed: back to idle on those channels; ignored once the state moved on', () => {
    const m = inState('subscribing');
    m.subscribeFailed(A);
    assert.deepEqual(m.state, { name: 'idle', channels: A });
    m.toSubscribing();
    m.attach(B);
    m.subscribeFailed(A);
    assert.deepEqual(m.state, { name: 'idle', channels: B });
  });
});

describe('subscription state: illegal calls throw', () => {
  const legal: Record<'toSubscribing' | 'toCancelling', StateName> = {
    toSubscribing: 'idle',
    toCancelling: 'consuming',
  };
  for (const [transition, only] of Object.entries(legal) as Array<[keyof typeof legal, StateName]>)
    for (const from of ALL.filter((name) => name !== only))
      it(`${transition} in ${from}`, () => {
        const m = inState(from);
        const before = m.state;
        assert.throws(
          () => m[transition](),
          (error: unknown) => {
            assert.ok(error instanceof IllegalTransition);
            assert.match(error.message, new RegExp(`${transition} is illegal in state ${from}`));
            return true;
          },
        );
        assert.equal(m.state, before, 'an illegal call changes nothing');
      });

  for (const from of ['idle', 'consuming', 'cancelling'] as const)
    it(`toConsuming on the channels in use while ${from} (no subscribe was in flight)`, () => {
      const m = inState(from);
      assert.throws(() => m.toConsuming(A, TAGS), IllegalTransition);
    });

  for (const from of ['idle', 'subscribing', 'consuming'] as const)
    it(`toIdle on the channels in use while ${from} (no cancel was in flight)`, () => {
      const m = inState(from);
      assert.throws(() => m.toIdle(A), IllegalTransition);
    });
});

describe('subscription state: the races, as transitions', () => {
  it('stop() while subscribing: the consume calls that return after it are refused (the caller cancels them)', () => {
    const m = inState('subscribing');
    assert.equal(m.toStopped(), undefined, 'nothing to cancel yet');
    assert.equal(m.toConsuming(A, TAGS), false);
    assert.equal(m.stopped, true);
    assert.equal(m.consuming, false);
  });

  it('channels closed while subscribing: the late tags are refused, the newer channels untouched', () => {
    const m = inState('subscribing');
    m.detach(A);
    m.attach(B);
    assert.equal(m.toConsuming(A, TAGS), false);
    assert.deepEqual(m.state, { name: 'idle', channels: B });
  });

  it('an outage that begins and ends while subscribing: consuming when the step ends, then the driver decides', () => {
    // The old flags lost the outage's resume here (resumeAgain patched it). Now the outage only
    // asks the driver to reconcile, which waits for the step to end: the state after it is exact.
    const m = inState('subscribing');
    assert.throws(() => m.toCancelling(), IllegalTransition, 'cannot cancel what is not yet subscribed');
    assert.equal(m.toConsuming(A, TAGS), true);
    assert.deepEqual(m.toCancelling(), { channels: A, tags: TAGS });
  });

  it('a cancel that ends after stop() or after the channels closed changes nothing', () => {
    const stopped = inState('cancelling');
    stopped.toStopped();
    stopped.toIdle(A);
    assert.equal(stopped.state.name, 'stopped');
    const closed = inState('cancelling');
    closed.detach(A);
    closed.toIdle(A);
    assert.equal(closed.state.name, 'detached');
  });

  it('a cancel of older channels ending after newer ones attached leaves the newer ones alone', () => {
    const m = inState('cancelling');
    m.attach(B);
    m.toIdle(A);
    assert.deepEqual(m.state, { name: 'idle', channels: B });
  });

  it('reports every change to its listener, in order, with from and to', () => {
    const { m, seen } = machine();
    m.attach(A);
    m.toStopped();
    m.detach(A);
    assert.deepEqual(seen, ['detached>idle', 'idle>stopped', 'stopped>stopped']);
  });
});

/**
 * The command subscription's channel life (src/bridge/commands/channel-state.ts) transition by
 * transition: the consumer (idle, opening, consuming, waiting, stopped) and the result channel
 * (none, opening, open, waiting), and IllegalTransitionError where a transition is not allowed.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SubscriptionLifecycle } from '../../src/bridge/commands/channel-state';
import { IllegalTransitionError } from '../../src/bridge/publisher-state';

type Model = { name: string };
type Channel = { id: number };
const A: Model = { name: 'A' };
const B: Model = { name: 'B' };
const make = (): SubscriptionLifecycle<Model, Channel, Channel> =>
  new SubscriptionLifecycle<Model, Channel, Channel>();
const timer = (): NodeJS.Timeout => setTimeout(() => assert.fail('a cancelled timer fired'), 60_000).unref();
const illegal = (fn: () => unknown, transition: string): void =>
  assert.throws(
    fn,
    (error: unknown) => error instanceof IllegalTransitionError && error.message.includes(transition),
  );

describe('SubscriptionLifecycle: consumer', () => {
  it('idle → opening → consuming → consumerLost → idle → waiting → consumerRetryDue → idle', () => {
    const life = make();
    assert.equal(life.consumer.kind, 'idle');
    const attempt = life.consumerOpening(A);
    const consuming = life.consumerStarted(attempt, { id: 1 }, 'tag-1');
    assert.deepEqual(life.consumer, { kind: 'consuming', model: A, channel: { id: 1 }, tag: 'tag-1' });
    assert.ok(life.isConsumer(consuming));
    life.consumerLost(consuming);
    assert.equal(life.consumer.kind, 'idle');
    illegal(() => life.consumerLost(consuming), 'consumerLost');
    life.consumerWait(A, timer());
    assert.equal(life.consumer.kind, 'waiting');
    illegal(() => life.consumerWait(A, timer()), 'consumerWait');
    life.consumerRetryDue();
    assert.equal(life.consumer.kind, 'idle');
    illegal(() => life.consumerRetryDue(), 'consumerRetryDue');
  });

  it('a setup superseded by a newer connection can neither start nor abandon', () => {
    const life = make();
    const older = life.consumerOpening(A);
    const newer = life.consumerOpening(B);
    assert.equal(life.isConsumer(older), false);
    illegal(() => life.consumerStarted(older, { id: 1 }, 't'), 'consumerStarted');
    illegal(() => life.consumerAbandon(older), 'consumerAbandon');
    life.consumerAbandon(newer);
    assert.equal(life.consumer.kind, 'idle');
  });

  it('opening from waiting cancels the retry; not from consuming', () => {
    const life = make();
    life.consumerWait(A, timer());
    const attempt = life.consumerOpening(B);
    life.consumerStarted(attempt, { id: 1 }, 't');
    illegal(() => life.consumerOpening(B), 'consumerOpening');
    illegal(() => life.consumerWait(B, timer()), 'consumerWait');
  });

  it('stop is final for the consumer, returns what it left, and cancels a pending result reopen', () => {
    const life = make();
    const consuming = life.consumerStarted(life.consumerOpening(A), { id: 1 }, 't');
    life.resultsWait(A, timer());
    assert.equal(life.stop(), consuming, 'the caller cancels this consumer');
    assert.equal(life.consumer.kind, 'stopped');
    assert.equal(life.results.kind, 'none');
    assert.ok(life.stopped);
    illegal(() => life.consumerOpening(A), 'consumerOpening');
    illegal(() => life.stop(), 'stop');
    illegal(() => life.resultsOpening(A), 'resultsOpening');
    illegal(() => life.resultsWait(A, timer()), 'resultsWait');
    life.connectionDown();
    assert.equal(life.consumer.kind, 'stopped', 'a connection loss does not undo stop');
  });

  it('stop keeps an open result channel usable (running commands still answer)', () => {
    const life = make();
    const open = life.resultsOpened(life.resultsOpening(A), { id: 9 }, new Set());
    life.stop();
    assert.equal(life.resultsOpen, open);
  });
});

describe('SubscriptionLifecycle: results', () => {
  it('none → opening → open → resultsLost → none → waiting → resultsReopenDue → none', () => {
    const life = make();
    assert.equal(life.resultsOpen, undefined);
    const returned = new Set<string>();
    const open = life.resultsOpened(life.resultsOpening(A), { id: 2 }, returned);
    assert.equal(life.resultsOpen, open);
    assert.equal(open.returned, returned);
    illegal(() => life.resultsOpening(B), 'resultsOpening');
    life.resultsLost(open);
    assert.equal(life.results.kind, 'none');
    illegal(() => life.resultsLost(open), 'resultsLost');
    life.resultsWait(A, timer());
    illegal(() => life.resultsWait(A, timer()), 'resultsWait');
    life.resultsReopenDue();
    assert.equal(life.results.kind, 'none');
    illegal(() => life.resultsReopenDue(), 'resultsReopenDue');
  });

  it('a superseded result setup can neither open nor abandon; opening from waiting cancels it', () => {
    const life = make();
    life.resultsWait(A, timer());
    const older = life.resultsOpening(A);
    const newer = life.resultsOpening(B);
    illegal(() => life.resultsOpened(older, { id: 1 }, new Set()), 'resultsOpened');
    illegal(() => life.resultsAbandon(older), 'resultsAbandon');
    life.resultsAbandon(newer);
    assert.equal(life.results.kind, 'none');
  });
});

describe('SubscriptionLifecycle: connectionDown', () => {
  it('drops both channels and cancels pending retries', () => {
    const life = make();
    life.consumerStarted(life.consumerOpening(A), { id: 1 }, 't');
    life.resultsOpened(life.resultsOpening(A), { id: 2 }, new Set());
    life.connectionDown();
    assert.deepEqual(life.state, { consumer: { kind: 'idle' }, results: { kind: 'none' } });
    life.consumerWait(A, timer());
    life.resultsWait(A, timer());
    life.connectionDown(); // the timers would fail the test if they fired
    assert.deepEqual(life.state, { consumer: { kind: 'idle' }, results: { kind: 'none' } });
  });
});

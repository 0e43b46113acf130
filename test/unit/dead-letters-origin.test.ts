/**
 * Who sent a message, across dead-lettering and replay (src/consumer/dead-letters-origin.ts): the
 * rules the replay's sender check rests on, case by case — in particular every way a host might try
 * to pass a message off as a replay or plant a believable dead letter.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Message } from 'amqplib';
import {
  deadLetterOrigin,
  deliveryOrigin,
  ORIGINAL_USER_HEADER,
  REPLAY_HEADER,
} from '../../src/consumer/dead-letters-origin';
import { deadLetterOptions } from '../../src/consumer/publishing';

const SELF = 'virtbus-consumer';

function message(
  fields: { exchange: string; routingKey: string },
  properties: { userId?: string; headers?: Record<string, unknown> },
): Message {
  return {
    content: Buffer.from('{}'),
    fields: { deliveryTag: 1, redelivered: false, ...fields },
    properties: { headers: {}, ...properties },
  } as unknown as Message;
}

const REPLAY = {
  [REPLAY_HEADER]: '2026-12-07T08:00:00.000000Z',
  'x-virtbus-original-routing-key': 'cmp-b.stopped',
  [ORIGINAL_USER_HEADER]: 'cmp-b',
};

describe('delivery origin', () => {
  it('an ordinary message is what the broker says: its routing key and user_id', () => {
    const origin = deliveryOrigin(
      message({ exchange: 'virtbus.lifecycle', routingKey: 'cmp-a.stopped' }, { userId: 'cmp-a' }),
      SELF,
    );
    assert.deepEqual(origin, { routingKey: 'cmp-a.stopped', userId: 'cmp-a', replay: false });
  });

  it("a replay by the consumer's own user to its queue carries the recorded origin", () => {
    const origin = deliveryOrigin(
      message({ exchange: '', routingKey: 'virtbus.consumer' }, { userId: SELF, headers: REPLAY }),
      SELF,
    );
    assert.deepEqual(origin, { routingKey: 'cmp-b.stopped', userId: 'cmp-b', replay: true });
  });

  it('a "replay" from a host, on any exchange, or with no known consumer user is forged', () => {
    const cases = [
      message(
        { exchange: 'virtbus.lifecycle', routingKey: 'cmp-a.stopped' },
        { userId: 'cmp-a', headers: REPLAY },
      ),
      message({ exchange: '', routingKey: 'virtbus.consumer' }, { userId: 'cmp-a', headers: REPLAY }),
      message({ exchange: '', routingKey: 'virtbus.consumer' }, { headers: REPLAY }),
      message(
        { exchange: 'virtbus.lifecycle', routingKey: 'cmp-a.stopped' },
        { userId: SELF, headers: REPLAY },
      ),
    ];
    for (const forged of cases) assert.ok('forged' in deliveryOrigin(forged, SELF));
    const own = message({ exchange: '', routingKey: 'virtbus.consumer' }, { userId: SELF, headers: REPLAY });
    assert.ok('forged' in deliveryOrigin(own, ''), 'no consumer user known: nobody replays');
  });
});

describe('dead-letter origin', () => {
  it("the consumer's copy records the original user and is published as the consumer", () => {
    const original = message(
      { exchange: 'virtbus.lifecycle', routingKey: 'cmp-a.paused' },
      {
        userId: 'cmp-a',
        // A host-supplied "original user" header must not survive into the believed copy.
        headers: { [ORIGINAL_USER_HEADER]: 'cmp-b' },
      },
    );
    const options = deadLetterOptions(original as never, 'sender not verified: …', 'virtbus.consumer', SELF);
    assert.equal(options.userId, SELF);
    const headers = options.headers as Record<string, unknown>;
    assert.equal(headers[ORIGINAL_USER_HEADER], 'cmp-a');
    assert.equal(headers['x-virtbus-original-routing-key'], 'cmp-a.paused');
    const copy = message({ exchange: 'virtbus.dead-letter', routingKey: 'cmp-a.paused' }, options);
    const origin = deadLetterOrigin(copy, SELF);
    assert.equal(origin.source, 'consumer');
    assert.equal(origin.userId, 'cmp-a');
    assert.equal(origin.queue, 'virtbus.consumer');
    assert.equal(origin.unreplayable, undefined);
  });

  it('a copy of a failed replay keeps the original sender, not the consumer', () => {
    const replay = message(
      { exchange: '', routingKey: 'virtbus.consumer' },
      { userId: SELF, headers: REPLAY },
    );
    const headers = deadLetterOptions(replay as never, 'again', 'virtbus.consumer', SELF).headers as Record<
      string,
      unknown
    >;
    assert.equal(headers[ORIGINAL_USER_HEADER], 'cmp-b');
    assert.equal(headers['x-virtbus-original-routing-key'], 'cmp-b.stopped');
  });

  it('a consumer-style dead letter from anyone else is not believed, nor one cut short', () => {
    const planted = message(
      { exchange: 'virtbus.dead-letter', routingKey: 'cmp-b.stopped' },
      {
        userId: 'cmp-a',
        headers: {
          'x-virtbus-reason': 'x',
          'x-virtbus-queue': 'virtbus.consumer',
          [ORIGINAL_USER_HEADER]: 'cmp-b',
        },
      },
    );
    const origin = deadLetterOrigin(planted, SELF);
    assert.equal(origin.userId, undefined);
    assert.match(origin.unreplayable ?? '', /not written by the consumer's broker user/);
    const cut = message(
      { exchange: 'virtbus.dead-letter', routingKey: 'cmp-a.paused' },
      {
        userId: SELF,
        headers: { 'x-virtbus-reason': 'body too large', 'x-virtbus-original-bytes': 5_000_000 },
      },
    );
    assert.match(deadLetterOrigin(cut, SELF).unreplayable ?? '', /prefix/);
  });

  it('a broker dead letter (x-death) keeps the original user_id and routing key', () => {
    const dead = message(
      { exchange: 'virtbus.dead-letter', routingKey: 'cmp-a.paused' },
      {
        userId: 'cmp-a',
        headers: {
          'x-death': [
            {
              queue: 'virtbus.consumer',
              reason: 'delivery_limit',
              count: 5,
              time: 1_780_000_000,
              'routing-keys': ['cmp-a.paused'],
            },
          ],
        },
      },
    );
    const origin = deadLetterOrigin(dead, SELF);
    assert.equal(origin.source, 'broker');
    assert.equal(origin.userId, 'cmp-a');
    assert.equal(origin.routingKey, 'cmp-a.paused');
    assert.equal(origin.deadLetteredAt, new Date(1_780_000_000_000).toISOString());
    assert.match(origin.reason, /delivery_limit \(count 5\)/);
    const none = message(
      { exchange: 'virtbus.dead-letter', routingKey: 'cmp-b.stopped' },
      { userId: 'cmp-a' },
    );
    assert.match(deadLetterOrigin(none, SELF).unreplayable ?? '', /directly/);
  });
});

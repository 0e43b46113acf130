import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryOutbox } from '../../src/bridge/outbox';
import { outboxContract, outboxInput } from '../support/outbox-contract';

const input = outboxInput;

outboxContract('MemoryOutbox', () => Promise.resolve(new MemoryOutbox(100_000)));

describe('MemoryOutbox: a bound in records', () => {
  it('append waits while full and continues when a confirm makes room', async () => {
    const outbox = new MemoryOutbox(2);
    await outbox.append([input(1), input(2)]);
    let done = false;
    const pending = outbox.append([input(3)]).then(() => (done = true));
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(done, false);
    outbox.confirm(1);
    await pending;
    assert.equal(done, true);
    assert.deepEqual(
      outbox.readAfter(0, 10).map((r) => r.id),
      [2, 3],
    );
  });

  it('a batch larger than the free space tells the publisher what it added before waiting', async () => {
    const outbox = new MemoryOutbox(2);
    // A publisher that only reads (and here confirms) when it is told something was appended.
    let cursor = 0;
    outbox.onAppend(() => {
      for (const record of outbox.readAfter(cursor, 100)) {
        cursor = record.id;
        setImmediate(() => outbox.confirm(record.id));
      }
    });
    const appended = outbox.append([input(1), input(2), input(3), input(4), input(5)]);
    const outcome = await Promise.race([
      appended.then(() => 'appended'),
      new Promise((resolve) => setTimeout(() => resolve('stuck'), 1000)),
    ]);
    assert.equal(outcome, 'appended');
    assert.equal(cursor, 5, 'every record reached the publisher');
  });
});

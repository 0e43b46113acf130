import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryOutbox, type OutboxInput } from '../../src/bridge/outbox';

const input = (n: number): OutboxInput => ({
  exchange: 'x',
  routingKey: `h.t${n}`,
  messageId: `m${n}`,
  type: 't',
  occurredMicros: n,
  transition: 'started',
  body: Buffer.from(String(n)),
});

describe('MemoryOutbox', () => {
  it('assigns increasing ids and reads unconfirmed records after a cursor', async () => {
    const outbox = new MemoryOutbox(100);
    await outbox.append([input(1), input(2), input(3)]);
    const all = outbox.readAfter(0, 10);
    assert.deepEqual(
      all.map((r) => r.messageId),
      ['m1', 'm2', 'm3'],
    );
    assert.deepEqual(
      all.map((r) => r.id),
      [1, 2, 3],
    );
    assert.deepEqual(
      outbox.readAfter(1, 10).map((r) => r.id),
      [2, 3],
    );
    assert.deepEqual(
      outbox.readAfter(0, 2).map((r) => r.id),
      [1, 2],
    );
    assert.equal(outbox.depth, 3);
  });

  it('confirms in any order; reading from 0 again yields only the unconfirmed, in order', async () => {
    const outbox = new MemoryOutbox(100);
    await outbox.append([input(1), input(2), input(3), input(4)]);
    outbox.confirm(2);
    outbox.confirm(1);
    outbox.confirm(1); // duplicate confirm after a republish is harmless
    assert.equal(outbox.depth, 2);
    assert.deepEqual(
      outbox.readAfter(0, 10).map((r) => r.id),
      [3, 4],
    );
    assert.equal(outbox.oldestMicros(), 3);
    outbox.confirm(4);
    assert.deepEqual(
      outbox.readAfter(0, 10).map((r) => r.id),
      [3],
    );
    outbox.confirm(3);
    assert.equal(outbox.depth, 0);
    assert.equal(outbox.oldestMicros(), undefined);
    await outbox.append([input(5)]);
    assert.deepEqual(
      outbox.readAfter(0, 10).map((r) => r.id),
      [5],
    );
  });

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

  it('keeps ids dense over many confirms (compaction)', async () => {
    const outbox = new MemoryOutbox(100_000);
    const inputs = Array.from({ length: 20_000 }, (_, i) => input(i));
    await outbox.append(inputs);
    for (let id = 1; id <= 19_990; id += 1) outbox.confirm(id);
    assert.equal(outbox.depth, 10);
    assert.deepEqual(
      outbox.readAfter(19_995, 100).map((r) => r.id),
      [19_996, 19_997, 19_998, 19_999, 20_000],
    );
    assert.equal(outbox.readAfter(0, 100).length, 10);
  });

  it('notifies append listeners', async () => {
    const outbox = new MemoryOutbox(10);
    let calls = 0;
    outbox.onAppend(() => (calls += 1));
    await outbox.append([input(1)]);
    await outbox.append([input(2), input(3)]);
    assert.equal(calls, 2);
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

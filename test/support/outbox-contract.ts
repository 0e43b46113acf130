/**
 * The Outbox contract (src/bridge/outbox.ts), written once and run against every implementation —
 * the in-memory outbox and the journal — so the publisher can rely on the same behaviour from both.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Outbox, OutboxInput } from '../../src/bridge/outbox';

/** The n-th test record: occurredMicros n, a distinct routing key, message id and body. */
export const outboxInput = (n: number): OutboxInput => ({
  exchange: 'x',
  routingKey: `h.t${n}`,
  messageId: `m${n}`,
  type: 't',
  occurredMicros: n,
  transition: 'started',
  body: Buffer.from(String(n)),
});

/** Runs the contract; `open` returns a fresh, empty outbox holding at least 20,000 records. */
export function outboxContract(name: string, open: () => Promise<Outbox>): void {
  const input = outboxInput;
  describe(`${name}: the Outbox contract`, () => {
    it('assigns increasing ids and reads unconfirmed records after a cursor', async () => {
      const outbox = await open();
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
      assert.deepEqual(all[1], { ...input(2), id: 2 });
      assert.deepEqual(
        outbox.readAfter(1, 10).map((r) => r.id),
        [2, 3],
      );
      assert.deepEqual(
        outbox.readAfter(0, 2).map((r) => r.id),
        [1, 2],
      );
      assert.equal(outbox.depth, 3);
      await outbox.close();
    });

    it('confirms in any order; reading from 0 again yields only the unconfirmed, in order', async () => {
      const outbox = await open();
      await outbox.append([input(1), input(2), input(3), input(4)]);
      outbox.confirm(2);
      outbox.confirm(1);
      outbox.confirm(1); // duplicate confirm after a republish is harmless
      outbox.confirm(99); // never appended: ignored
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
      await outbox.close();
    });

    it('keeps ids dense over many confirms', async () => {
      const outbox = await open();
      await outbox.append(Array.from({ length: 20_000 }, (_, i) => input(i)));
      for (let id = 1; id <= 19_990; id += 1) outbox.confirm(id);
      assert.equal(outbox.depth, 10);
      assert.deepEqual(
        outbox.readAfter(19_995, 100).map((r) => r.id),
        [19_996, 19_997, 19_998, 19_999, 20_000],
      );
      const rest = outbox.readAfter(0, 100);
      assert.equal(rest.length, 10);
      assert.deepEqual(rest[0], { ...input(19_990), id: 19_991 });
      await outbox.close();
    });

    it('notifies append listeners once per append, after the records are readable', async () => {
      const outbox = await open();
      const seen: number[] = [];
      outbox.onAppend(() => seen.push(outbox.readAfter(0, 100).length));
      await outbox.append([input(1)]);
      await outbox.append([input(2), input(3)]);
      assert.deepEqual(seen, [1, 3]);
      await outbox.close();
    });
  });
}

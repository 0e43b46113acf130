import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loadNativeBinding } from '../../src/native/binding';
import type { QueueStats } from '../../src/native/contract';

const DEFAULT_CAPACITY = 16384;

void describe('native queue', () => {
  const binding = loadNativeBinding();

  function delta(after: QueueStats, before: QueueStats): { enqueued: number; dropped: number } {
    return { enqueued: after.enqueued - before.enqueued, dropped: after.dropped - before.dropped };
  }

  void it('starts with the default capacity', () => {
    assert.equal(binding.queueStats().capacity, DEFAULT_CAPACITY);
  });

  void it('overflows without blocking: drops the rest, counts them, reports overflow once', async () => {
    assert.equal(binding.eventLoopRunning(), false);
    binding.drain();
    binding.setQueueCapacity(8);
    try {
      const before = binding.queueStats();
      assert.equal(before.capacity, 8);
      assert.equal(before.highWater, 0);
      await binding.injectSyntheticEvents(1000, 4);
      const full = binding.queueStats();
      assert.deepEqual(delta(full, before), { enqueued: 8, dropped: 992 });
      assert.equal(full.depth, 8);
      assert.equal(full.highWater, 8);

      // No resize while items are queued.
      assert.throws(() => binding.setQueueCapacity(16), RangeError);

      const first = binding.drain();
      assert.equal(first.events.length, 8);
      assert.equal(first.overflowed, 992);
      // The 8 survivors are the first 8 injected, in order, cycling over 4 synthetic domains.
      const seqs = first.events.map((e) => e.seq);
      for (let i = 1; i < seqs.length; i++) assert.equal(seqs[i], seqs[i - 1]! + 1);
      assert.equal(new Set(first.events.map((e) => e.uuid)).size, 4);
      for (const e of first.events) {
        assert.equal(e.connectionId, 0);
        assert.equal(e.eventId, 0);
        assert.equal(e.detail, 0);
        assert.match(e.name, /^synthetic-[0-3]$/);
      }
      // One round over the 4 domains per type: STARTED x4, then SUSPENDED x4.
      assert.deepEqual(
        first.events.map((e) => e.type),
        [2, 2, 2, 2, 3, 3, 3, 3],
      );
      const second = binding.drain();
      assert.equal(second.events.length, 0);
      assert.equal(second.overflowed, 0);
      const after = binding.queueStats();
      assert.equal(after.depth, 0);
      assert.equal(after.highWater, 8);

      // Dropped events consumed sequence numbers: the next event's seq shows the gap.
      await binding.injectSyntheticEvents(1, 1);
      const next = binding.drain().events[0]!;
      assert.equal(next.seq, seqs[0]! + 1000);
    } finally {
      binding.drain();
      binding.setQueueCapacity(DEFAULT_CAPACITY);
    }
    assert.equal(binding.queueStats().capacity, DEFAULT_CAPACITY);
  });

  void it('drain(max) takes at most max, oldest first', async () => {
    binding.drain();
    await binding.injectSyntheticEvents(10, 2);
    const a = binding.drain(3);
    const b = binding.drain(0);
    const c = binding.drain();
    assert.equal(a.events.length, 3);
    assert.equal(b.events.length, 0);
    assert.equal(c.events.length, 7);
    assert.ok(a.events[2]!.seq < c.events[0]!.seq);
    // Types cycle STARTED, SUSPENDED, RESUMED per round over the domains.
    assert.deepEqual(
      [...a.events, ...c.events].map((e) => e.type),
      [2, 2, 3, 3, 4, 4, 2, 2, 3, 3],
    );
  });

  void it('a drain that throws after taking events reports them as overflowed on the next drain', async () => {
    binding.drain();
    await binding.injectSyntheticEvents(5, 1);
    const before = binding.queueStats();
    assert.equal(before.depth, 5);
    // drain() sets 'events' on its result object: an inherited setter that throws makes it fail
    // after the events were taken out of the ring.
    Object.defineProperty(Object.prototype, 'events', {
      configurable: true,
      set() {
        throw new Error('result setter failed');
      },
    });
    try {
      assert.throws(() => binding.drain(), /result setter failed/);
    } finally {
      delete (Object.prototype as { events?: unknown }).events;
    }
    assert.equal(binding.queueStats().depth, 0);
    const next = binding.drain();
    assert.equal(next.events.length, 0);
    assert.equal(next.overflowed, 5, 'the lost events must be reported as an overflow (resync needed)');
    assert.equal(binding.drain().overflowed, 0);
    // Not dropped for lack of room: enqueued + dropped still counts pushes.
    assert.equal(binding.queueStats().dropped, before.dropped);
  });

  void it('hands 1,000,000 synthetic events to JavaScript without loss (waitWhenFull)', async () => {
    const count = 1_000_000;
    const domains = 64;
    const lastSeqByUuid = new Map<string, number>();
    let received = 0;
    let lastSeq = 0;
    let wakes = 0;
    let violations = 0;
    let overflowed = 0;
    const before = binding.queueStats();
    binding.startEventLoop(() => {
      wakes++;
      for (;;) {
        const batch = binding.drain();
        overflowed += batch.overflowed;
        for (const e of batch.events) {
          if (e.seq <= lastSeq) violations++;
          lastSeq = e.seq;
          const prev = lastSeqByUuid.get(e.uuid);
          if (prev !== undefined && e.seq <= prev) violations++;
          lastSeqByUuid.set(e.uuid, e.seq);
        }
        received += batch.events.length;
        if (batch.events.length === 0) break;
      }
    });
    try {
      const started = process.hrtime.bigint();
      await binding.injectSyntheticEvents(count, domains, { waitWhenFull: true });
      const deadline = Date.now() + 30_000;
      while (received < count && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const after = binding.queueStats();
      console.log(
        `native hand-off: ${count} synthetic events in ${seconds.toFixed(3)} s = ` +
          `${Math.round(count / seconds)} events/s, ${wakes} wakes, highWater ${after.highWater}/${after.capacity}`,
      );
      assert.equal(received, count);
      assert.equal(violations, 0);
      assert.equal(lastSeqByUuid.size, domains);
      assert.equal(overflowed, 0);
      assert.deepEqual(delta(after, before), { enqueued: count, dropped: 0 });
      assert.ok(wakes < count / 10, `expected batched wakes, got ${wakes} for ${count} events`);
    } finally {
      binding.stopEventLoop();
    }
  });

  void it('accounts for every event in drop mode: delivered + dropped = injected', async () => {
    const count = 500_000;
    let received = 0;
    let overflowed = 0;
    const before = binding.queueStats();
    binding.startEventLoop(() => {
      for (;;) {
        const batch = binding.drain();
        overflowed += batch.overflowed;
        received += batch.events.length;
        if (batch.events.length === 0) break;
      }
    });
    try {
      await binding.injectSyntheticEvents(count, 16);
      const deadline = Date.now() + 30_000;
      while (binding.queueStats().depth > 0 && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 5));
      await new Promise((r) => setTimeout(r, 20));
      const d = delta(binding.queueStats(), before);
      console.log(`native drop mode: ${count} injected, ${d.enqueued} delivered, ${d.dropped} dropped`);
      assert.equal(d.enqueued + d.dropped, count);
      assert.equal(received, d.enqueued);
      assert.equal(overflowed, d.dropped);
    } finally {
      binding.stopEventLoop();
    }
  });
});

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loadNativeBinding } from '../../src/native/binding';
import { Collector, NO_KEEPALIVE, TEST_URI, domainXml, sleep } from '../support/native-collector';

void describe('native event loop', () => {
  const binding = loadNativeBinding();

  void it('reflects its state, and stopEventLoop is idempotent', () => {
    assert.equal(binding.eventLoopRunning(), false);
    binding.stopEventLoop();
    binding.startEventLoop(() => binding.drain());
    assert.equal(binding.eventLoopRunning(), true);
    assert.throws(() => binding.startEventLoop(() => undefined), /already running/);
    binding.stopEventLoop();
    assert.equal(binding.eventLoopRunning(), false);
    binding.stopEventLoop();
    assert.equal(binding.eventLoopRunning(), false);
  });

  void it('survives 20 start/stop cycles and still delivers events after each', async () => {
    const collector = new Collector(binding);
    for (let cycle = 0; cycle < 20; cycle++) {
      collector.start();
      assert.equal(binding.eventLoopRunning(), true);
      const before = collector.events.length;
      await binding.injectSyntheticEvents(3, 1);
      await collector.waitFor(`3 events in cycle ${cycle}`, () => collector.events.length >= before + 3);
      const started = Date.now();
      binding.stopEventLoop();
      assert.ok(Date.now() - started < 1000, 'stop must not wait for a poll timeout');
      assert.equal(binding.eventLoopRunning(), false);
    }
    assert.equal(collector.events.length, 60);
  });

  void it('refuses setQueueCapacity while running', () => {
    binding.startEventLoop(() => binding.drain());
    try {
      assert.throws(() => binding.setQueueCapacity(64), RangeError);
    } finally {
      binding.stopEventLoop();
    }
  });

  void it('delivers libvirt events of a connection opened before a restart of the loop', async () => {
    const collector = new Collector(binding);
    collector.start();
    const conn = await binding.openConnection(TEST_URI, NO_KEEPALIVE);
    try {
      binding.stopEventLoop();
      collector.start();
      const from = collector.events.length;
      const dom = await conn.createXML(domainXml('loop-restart'));
      const event = await collector.nextFor(dom.uuid, from);
      assert.equal(event.connectionId, conn.id);
      assert.equal(event.type, 2);
      await conn.destroy(dom.uuid);
    } finally {
      await conn.close();
      binding.stopEventLoop();
    }
  });

  void it('wakes again for events queued while the loop was stopped', async () => {
    binding.drain();
    await binding.injectSyntheticEvents(5, 1);
    assert.equal(binding.queueStats().depth, 5);
    const collector = new Collector(binding);
    collector.start();
    try {
      await collector.waitFor('the 5 queued events', () => collector.events.length === 5);
    } finally {
      binding.stopEventLoop();
    }
  });

  void it('re-arms the wake when drain(max) leaves events behind', async () => {
    let wakes = 0;
    let taken = 0;
    binding.startEventLoop(() => {
      wakes++;
      taken += binding.drain(2).events.length;
    });
    try {
      await binding.injectSyntheticEvents(10, 1);
      const deadline = Date.now() + 5000;
      while (taken < 10 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      assert.equal(taken, 10);
      assert.ok(wakes >= 5, `expected at least 5 wakes, got ${wakes}`);
    } finally {
      binding.stopEventLoop();
    }
  });

  void it("never calls a stopped loop's onWake, even for a wake queued before the stop", async () => {
    binding.drain();
    let oldWakes = 0;
    let oldTaken = 0;
    binding.startEventLoop(() => {
      oldWakes++;
      oldTaken += binding.drain().events.length;
    });
    const injected = binding.injectSyntheticEvents(3, 1);
    // Stay on the JS thread: the injector's wake is queued on the first loop's wake function but
    // cannot be delivered before the restart below.
    const deadline = Date.now() + 5000;
    while (binding.queueStats().depth < 3 && Date.now() < deadline) {
      // spin
    }
    const settle = Date.now() + 20;
    while (Date.now() < settle) {
      // let the injector thread's RequestWake (right after its push) queue the call
    }
    assert.equal(binding.queueStats().depth, 3);
    binding.stopEventLoop();
    let newTaken = 0;
    binding.startEventLoop(() => {
      newTaken += binding.drain().events.length;
    });
    try {
      await injected;
      const until = Date.now() + 5000;
      while (oldTaken + newTaken < 3 && Date.now() < until) await sleep(5);
      await sleep(50);
      assert.deepEqual({ oldWakes, oldTaken, newTaken }, { oldWakes: 0, oldTaken: 0, newTaken: 3 });
    } finally {
      binding.stopEventLoop();
    }
  });

  void it('keepalive needs the loop running', async () => {
    assert.equal(binding.eventLoopRunning(), false);
    await assert.rejects(
      binding.openConnection(TEST_URI, { readOnly: false, keepaliveInterval: 5, keepaliveCount: 3 }),
      (e: unknown) => {
        assert.ok(e instanceof Error);
        assert.match(e.message, /keepalive needs the event loop running/);
        assert.equal((e as Error & { code?: string }).code, 'ERR_VIRTBUS_LOOP_NOT_RUNNING');
        return true;
      },
    );
    // With the loop running, a local driver without keepalive support is accepted.
    binding.startEventLoop(() => binding.drain());
    try {
      const conn = await binding.openConnection(TEST_URI, {
        readOnly: false,
        keepaliveInterval: 5,
        keepaliveCount: 3,
      });
      await conn.close();
    } finally {
      binding.stopEventLoop();
    }
  });
});

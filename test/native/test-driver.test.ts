/**
 * The addon against libvirt's in-process test driver (test:///default): no daemon involved.
 * What that driver emits (libvirt 9.0): create/start -> STARTED BOOTED, suspend -> SUSPENDED
 * PAUSED, resume -> RESUMED UNPAUSED, destroy -> STOPPED DESTROYED, shutdown -> STOPPED SHUTDOWN,
 * define -> DEFINED ADDED, undefine -> UNDEFINED REMOVED; reboot emits nothing.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  VIR_ERR_NO_DOMAIN,
  VIR_ERR_NO_SUPPORT,
  VIR_ERR_OPERATION_INVALID,
  isLibvirtError,
  loadNativeBinding,
} from '../../src/native/binding';
import type { NativeConnection, RawDomainEvent } from '../../src/native/contract';
import { Collector, NO_KEEPALIVE, TEST_URI, domainXml } from '../support/native-collector';

const UNKNOWN_UUID = '0badc0de-0000-4000-8000-000000000001';

void describe('native addon on test:///default', () => {
  const binding = loadNativeBinding();
  const collector = new Collector(binding);
  let conn: NativeConnection;

  before(async () => {
    collector.start();
    conn = await binding.openConnection(TEST_URI, NO_KEEPALIVE);
  });

  after(async () => {
    await conn.close();
    binding.stopEventLoop();
  });

  /** Runs `action` and returns the first event for `uuid` that follows it. */
  async function expectEvent(uuid: string, action: () => Promise<unknown>): Promise<RawDomainEvent> {
    const from = collector.events.length;
    await action();
    return collector.nextFor(uuid, from);
  }

  function assertFilled(event: RawDomainEvent, uuid: string, name: string): void {
    assert.equal(event.connectionId, conn.id);
    assert.equal(event.eventId, 0);
    assert.equal(event.uuid, uuid);
    assert.match(event.uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    assert.equal(event.name, name);
    assert.equal(event.nameTruncated, false);
    const nowMicros = Date.now() * 1000;
    assert.ok(
      Math.abs(event.wallMicros - nowMicros) < 60e6,
      `wallMicros ${event.wallMicros} vs ${nowMicros}`,
    );
    assert.ok(event.monoMicros > 0);
    assert.ok(Number.isInteger(event.seq) && event.seq > 0);
  }

  void it('is alive and reports the library version', async () => {
    assert.equal(conn.isAlive(), true);
    const version = await conn.libVersion();
    assert.ok(version >= 9_000_000, `libVersion ${version}`);
  });

  void it('lists the default domain `test` running', async () => {
    const domains = await conn.listAllDomains();
    const test = domains.find((d) => d.name === 'test');
    assert.ok(test, JSON.stringify(domains));
    assert.equal(test.state, 1);
    assert.equal(test.active, true);
    assert.equal(test.persistent, true);
    assert.match(test.uuid, /^[0-9a-f-]{36}$/);
    assert.deepEqual(await conn.domainState(test.uuid), { state: 1, reason: test.reason });
  });

  void it('delivers STARTED/SUSPENDED/RESUMED/STOPPED for a transient domain, with increasing seq', async () => {
    const from = collector.events.length;
    const dom = await conn.createXML(domainXml('x'));
    const uuid = dom.uuid;
    assert.equal(dom.name, 'x');
    const e1 = await collector.nextFor(uuid, from);
    assertFilled(e1, uuid, 'x');
    assert.deepEqual([e1.type, e1.detail], [2, 0]);

    const e2 = await expectEvent(uuid, () => conn.suspend(uuid));
    assertFilled(e2, uuid, 'x');
    assert.deepEqual([e2.type, e2.detail], [3, 0]);
    assert.deepEqual(await conn.domainState(uuid), { state: 3, reason: 1 });

    const e3 = await expectEvent(uuid, () => conn.resume(uuid));
    assert.deepEqual([e3.type, e3.detail], [4, 0]);
    assert.equal(await conn.isActive(uuid), true);

    const e4 = await expectEvent(uuid, () => conn.destroy(uuid));
    assertFilled(e4, uuid, 'x');
    assert.deepEqual([e4.type, e4.detail], [5, 1]);

    const seqs = [e1, e2, e3, e4].map((e) => e.seq);
    for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i]! > seqs[i - 1]!, `seq ${seqs.join(',')}`);
    const monos = [e1, e2, e3, e4].map((e) => e.monoMicros);
    for (let i = 1; i < monos.length; i++) assert.ok(monos[i]! >= monos[i - 1]!);

    // A transient domain is gone once destroyed.
    await assert.rejects(conn.domainState(uuid), (e: unknown) => isLibvirtError(e) && e.libvirtCode === 42);
  });

  void it('delivers DEFINED, STARTED, STOPPED SHUTDOWN and UNDEFINED for a persistent domain', async () => {
    const from = collector.events.length;
    const dom = await conn.defineXML(domainXml('persistent-y'));
    const defined = await collector.nextFor(dom.uuid, from);
    assertFilled(defined, dom.uuid, 'persistent-y');
    assert.deepEqual([defined.type, defined.detail], [0, 0]);
    assert.equal(await conn.isActive(dom.uuid), false);
    assert.deepEqual((await conn.domainState(dom.uuid)).state, 5);

    const startedEvent = await expectEvent(dom.uuid, () => conn.start(dom.uuid));
    assert.deepEqual([startedEvent.type, startedEvent.detail], [2, 0]);
    const listed = (await conn.listAllDomains()).find((d) => d.uuid === dom.uuid);
    assert.deepEqual(
      listed && { active: listed.active, persistent: listed.persistent, state: listed.state },
      {
        active: true,
        persistent: true,
        state: 1,
      },
    );

    await conn.reboot(dom.uuid); // the test driver accepts it and emits no event

    const stopped = await expectEvent(dom.uuid, () => conn.shutdown(dom.uuid));
    assert.deepEqual([stopped.type, stopped.detail], [5, 0]);
    await assert.rejects(conn.destroy(dom.uuid), (e: unknown) => {
      assert.ok(isLibvirtError(e), String(e));
      assert.equal(e.libvirtCode, VIR_ERR_OPERATION_INVALID); // "domain is not running"
      assert.equal(e.name, 'LibvirtError');
      assert.ok(e.message.length > 0);
      return true;
    });

    const undefinedEvent = await expectEvent(dom.uuid, () => conn.undefine(dom.uuid));
    assert.deepEqual([undefinedEvent.type, undefinedEvent.detail], [1, 0]);
    await assert.rejects(conn.isActive(dom.uuid), (e: unknown) => isLibvirtError(e) && e.libvirtCode === 42);
  });

  void it('rejects domainState of an unknown uuid with a LibvirtError 42', async () => {
    await assert.rejects(conn.domainState(UNKNOWN_UUID), (e: unknown) => {
      assert.ok(isLibvirtError(e), String(e));
      assert.equal(e.libvirtCode, VIR_ERR_NO_DOMAIN);
      assert.equal(e.libvirtDomain, 12); // VIR_FROM_TEST
      assert.equal(e.libvirtLevel, 2); // VIR_ERR_ERROR
      assert.match(e.message, /not found/i);
      return true;
    });
  });

  void it('answers domainStates in one batch with null for an unknown domain', async () => {
    const domains = await conn.listAllDomains();
    const test = domains.find((d) => d.name === 'test')!;
    const states = await conn.domainStates([test.uuid, UNKNOWN_UUID, test.uuid]);
    assert.equal(states.length, 3);
    assert.deepEqual(states[0], { state: 1, reason: test.reason });
    assert.equal(states[1], null);
    assert.deepEqual(states[2], states[0]);
    assert.deepEqual(await conn.domainStates([]), []);
  });

  void it('jobType: the test driver has no job statistics and says so with a LibvirtError', async () => {
    const test = (await conn.listAllDomains()).find((d) => d.name === 'test')!;
    await assert.rejects(conn.jobType(test.uuid), (e: unknown) => {
      assert.ok(isLibvirtError(e), String(e));
      assert.equal(e.libvirtCode, VIR_ERR_NO_SUPPORT);
      return true;
    });
    await assert.rejects(
      conn.jobType(UNKNOWN_UUID),
      (e: unknown) => isLibvirtError(e) && e.libvirtCode === 42,
    );
  });

  void it("passes the test driver's own error codes through", async () => {
    const dom = await conn.defineXML(domainXml('not-paused'));
    try {
      await assert.rejects(conn.resume(dom.uuid), (e: unknown) => {
        assert.ok(isLibvirtError(e), String(e));
        assert.equal(e.libvirtCode, 1); // VIR_ERR_INTERNAL_ERROR "domain 'not-paused' not paused"
        assert.equal(e.libvirtDomain, 12);
        assert.match(e.message, /not paused/);
        return true;
      });
    } finally {
      await conn.undefine(dom.uuid);
    }
  });

  void it('rejects a malformed domain XML with a libvirt error code', async () => {
    await assert.rejects(conn.createXML('<domain'), (e: unknown) => {
      assert.ok(isLibvirtError(e), String(e));
      assert.ok(e.libvirtCode > 0);
      return true;
    });
  });

  void it('truncates a long name at 255 bytes on a character boundary', async () => {
    const longName = 'n'.repeat(250) + 'ééééé'; // 260 bytes
    const from = collector.events.length;
    const dom = await conn.createXML(domainXml(longName));
    const event = await collector.nextFor(dom.uuid, from);
    assert.equal(event.nameTruncated, true);
    assert.equal(event.name, 'n'.repeat(250) + 'éé');
    assert.ok(Buffer.byteLength(event.name) <= 255);
    await conn.destroy(dom.uuid);
  });

  void it('runs many jobs concurrently and close() racing them is safe', async () => {
    const other = await binding.openConnection(TEST_URI, NO_KEEPALIVE);
    const test = (await other.listAllDomains()).find((d) => d.name === 'test')!;
    const jobs = Array.from({ length: 200 }, (_, i) =>
      i % 2 === 0 ? other.domainState(test.uuid) : other.listAllDomains(),
    );
    const closing = other.close();
    assert.equal(other.close(), closing, 'close() is idempotent and returns the same promise');
    const results = await Promise.allSettled(jobs);
    await closing;
    for (const r of results) {
      if (r.status === 'rejected') {
        assert.equal((r.reason as { code?: string }).code, 'ERR_VIRTBUS_CONNECTION_CLOSED');
      }
    }
    assert.equal(other.isAlive(), false);
    await assert.rejects(other.libVersion(), /is closed/);
  });

  void it('opens a read-only connection that still receives events', async () => {
    const ro = await binding.openConnection(TEST_URI, {
      readOnly: true,
      keepaliveInterval: 0,
      keepaliveCount: 0,
    });
    try {
      assert.ok((await ro.listAllDomains()).length >= 1);
      const from = collector.events.length;
      const dom = await conn.createXML(domainXml('seen-by-ro'));
      await collector.waitFor('the event on both connections', () => {
        const ids = new Set(
          collector.events
            .slice(from)
            .filter((e) => e.uuid === dom.uuid)
            .map((e) => e.connectionId),
        );
        return ids.has(conn.id) && ids.has(ro.id);
      });
      await assert.rejects(ro.destroy(dom.uuid), (e: unknown) => isLibvirtError(e) && e.libvirtCode === 29);
      await conn.destroy(dom.uuid);
    } finally {
      await ro.close();
    }
  });

  void it('rejects an unknown URI scheme with a LibvirtError', async () => {
    await assert.rejects(binding.openConnection('nosuchdriver:///x', NO_KEEPALIVE), (e: unknown) => {
      assert.ok(isLibvirtError(e), String(e));
      assert.ok(e.libvirtCode > 0);
      return true;
    });
  });
});

/**
 * The addon against a private libvirtd serving the test driver over a unix socket: events travel
 * over libvirt's remote protocol, and keepalive and the close callback are real.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CloseReason, isLibvirtError, loadNativeBinding } from '../../src/native/binding';
import type { NativeConnection } from '../../src/native/contract';
import { startLibvirtd, type LibvirtdSandbox } from '../../src/sandbox';
import { Collector, domainXml } from '../support/native-collector';

const KEEPALIVE = { readOnly: false, keepaliveInterval: 1, keepaliveCount: 2 } as const;

void describe('native addon against a private libvirtd', () => {
  const binding = loadNativeBinding();
  const collector = new Collector(binding);
  let daemon: LibvirtdSandbox;

  before(async () => {
    daemon = await startLibvirtd();
    collector.start();
  });

  after(async () => {
    binding.stopEventLoop();
    await daemon?.dispose();
  });

  async function withConnection<T>(
    uri: string,
    options: typeof KEEPALIVE | { readOnly: boolean; keepaliveInterval: number; keepaliveCount: number },
    body: (conn: NativeConnection) => Promise<T>,
  ): Promise<T> {
    const conn = await binding.openConnection(uri, options);
    try {
      return await body(conn);
    } finally {
      await conn.close();
    }
  }

  void it('delivers lifecycle events over the remote protocol, on every connection', async () => {
    await withConnection(daemon.uri, KEEPALIVE, async (conn) => {
      assert.equal(conn.isAlive(), true);
      assert.ok((await conn.libVersion()) >= 9_000_000);
      const listed = await conn.listAllDomains();
      assert.deepEqual(
        listed.filter((d) => d.name === 'test').map((d) => [d.state, d.active, d.persistent]),
        [[1, true, true]],
      );
      await withConnection(daemon.uri, KEEPALIVE, async (other) => {
        const from = collector.events.length;
        const dom = await conn.createXML(domainXml('remote-x'));
        await conn.suspend(dom.uuid);
        // virsh is an independent client of the same daemon: its actions reach us too.
        await daemon.virsh('resume', dom.uuid);
        const seen = await collector.waitFor('3 events on each connection', () => {
          const mine = collector.events.slice(from).filter((e) => e.uuid === dom.uuid);
          const byConn = (id: number) =>
            mine.filter((e) => e.connectionId === id).map((e) => [e.type, e.detail]);
          return byConn(conn.id).length >= 3 && byConn(other.id).length >= 3
            ? { a: byConn(conn.id), b: byConn(other.id) }
            : undefined;
        });
        const expected = [
          [2, 0],
          [3, 0],
          [4, 0],
        ];
        assert.deepEqual(seen.a, expected);
        assert.deepEqual(seen.b, expected);
        const states = await other.domainStates([dom.uuid, '0badc0de-0000-4000-8000-000000000002']);
        assert.deepEqual(states[0]?.state, 1);
        assert.equal(states[1], null);
        await conn.destroy(dom.uuid);
        await assert.rejects(other.domainState(dom.uuid), (e: unknown) => {
          assert.ok(isLibvirtError(e), String(e));
          assert.equal(e.libvirtCode, 42);
          return true;
        });
      });
    });
  });

  void it('answers a domainStates batch in one job, null for destroyed and unknown domains', async () => {
    await withConnection(daemon.uri, KEEPALIVE, async (conn) => {
      const doms = [];
      for (let i = 0; i < 20; i++) doms.push(await conn.createXML(domainXml(`batch-${i}`)));
      for (let i = 1; i < 20; i += 2) await conn.suspend(doms[i]!.uuid);
      await conn.destroy(doms[4]!.uuid); // transient: gone, but its pointer is still cached
      const uuids = [...doms.map((d) => d.uuid), '0badc0de-0000-4000-8000-000000000003', doms[0]!.uuid];
      const states = await conn.domainStates(uuids);
      const expected = doms.map((_, i) => (i === 4 ? null : i % 2 === 1 ? 3 : 1));
      assert.deepEqual(
        states.map((s) => (s === null ? null : s.state)),
        [...expected, null, 1],
      );
      for (const [i, d] of doms.entries()) if (i !== 4) await conn.destroy(d.uuid);
    });
  });

  void it('opens read-only: queries and events work, changes are denied', async () => {
    await withConnection(daemon.readOnlyUri, { ...KEEPALIVE, readOnly: true }, async (ro) => {
      await withConnection(daemon.uri, KEEPALIVE, async (rw) => {
        const test = (await ro.listAllDomains()).find((d) => d.name === 'test');
        assert.ok(test);
        const from = collector.events.length;
        await rw.suspend(test.uuid);
        await rw.resume(test.uuid);
        await collector.waitFor('the read-only connection to see both events', () => {
          const types = collector.events
            .slice(from)
            .filter((e) => e.connectionId === ro.id && e.uuid === test.uuid)
            .map((e) => e.type);
          return types.length >= 2 && types;
        });
        await assert.rejects(ro.suspend(test.uuid), (e: unknown) => {
          assert.ok(isLibvirtError(e), String(e));
          assert.equal(e.libvirtCode, 29, e.message); // VIR_ERR_OPERATION_DENIED
          return true;
        });
      });
    });
  });

  void it('reports a close event with a reason when the daemon is killed, and reopens after restart', async () => {
    const conn = await binding.openConnection(daemon.uri, KEEPALIVE);
    try {
      await conn.listAllDomains();
      const fromCloses = collector.closes.length;
      await daemon.kill();
      const close = await collector.waitFor(
        `a close event for connection ${conn.id}`,
        () => collector.closes.slice(fromCloses).find((c) => c.connectionId === conn.id),
        10_000,
      );
      assert.ok(
        [CloseReason.ERROR, CloseReason.EOF, CloseReason.KEEPALIVE].includes(close.reason as 0 | 1 | 2),
        `reason ${close.reason}`,
      );
      assert.equal(conn.isAlive(), false);
      await assert.rejects(conn.libVersion(), (e: unknown) => {
        assert.ok(isLibvirtError(e), String(e));
        assert.ok(e.libvirtCode > 0);
        return true;
      });
    } finally {
      await conn.close(); // deregistering on a dead connection must still complete
    }
    await daemon.start();
    await withConnection(daemon.uri, KEEPALIVE, async (again) => {
      assert.notEqual(again.id, conn.id);
      assert.ok((await again.listAllDomains()).some((d) => d.name === 'test'));
    });
  });

  void it('detects a hung daemon through keepalive (close reason KEEPALIVE)', async () => {
    const conn = await binding.openConnection(daemon.uri, KEEPALIVE);
    const pid = daemon.pid;
    assert.ok(pid);
    const fromCloses = collector.closes.length;
    process.kill(pid, 'SIGSTOP');
    try {
      const close = await collector.waitFor(
        `a keepalive close for connection ${conn.id}`,
        () => collector.closes.slice(fromCloses).find((c) => c.connectionId === conn.id),
        15_000,
      );
      assert.equal(close.reason, CloseReason.KEEPALIVE);
      assert.equal(conn.isAlive(), false);
    } finally {
      process.kill(pid, 'SIGCONT');
      await conn.close();
    }
  });

  void it('accepts credentials in the options without prompting', async () => {
    // auth "none" on this socket: the credentials are never asked for, so the open succeeds; a
    // prompt on the terminal would hang this test instead.
    await withConnection(
      daemon.uri,
      { ...KEEPALIVE, username: 'nobody', password: 'secret' } as typeof KEEPALIVE,
      async (c) => {
        assert.equal(c.isAlive(), true);
        assert.ok((await c.libVersion()) > 0);
      },
    );
  });
});

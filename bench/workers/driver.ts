/**
 * Worker: a libvirt client that makes lifecycle events happen on the bench's libvirtd, through the
 * addon's client calls (each one a job on this process's libuv thread pool). Several such processes
 * with several concurrent workers each drive the test driver as fast as it goes, or at a set rate.
 */
import type { NativeConnection } from '../../src/native/contract';
import { createDomains, domainXml, openDriver } from '../../test/support/domains';
import { serve } from '../lib/ipc';
import { syntheticDomain } from '../lib/amqp';

let driver: NativeConnection | undefined;

async function connection(uri: string): Promise<NativeConnection> {
  driver ??= await openDriver(uri);
  return driver;
}

async function pool<T>(
  items: readonly T[],
  concurrency: number,
  task: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) await task(items[next++]!);
    }),
  );
}

serve({
  /**
   * Makes sure synthetic domains first..first+count-1 exist and run (named and numbered as the
   * native injector names its synthetic events), so the bridge's live state sampling finds them.
   */
  async ensureSynthetic(params: { uri: string; count: number }) {
    const conn = await connection(params.uri);
    const existing = new Set((await conn.listAllDomains()).map((d) => d.uuid));
    const missing: number[] = [];
    for (let i = 0; i < params.count; i += 1) if (!existing.has(syntheticDomain(i).uuid)) missing.push(i);
    const started = performance.now();
    await pool(missing, 8, async (i) => {
      const { uuid, name } = syntheticDomain(i);
      await conn.createXML(domainXml(name, uuid));
    });
    return { created: missing.length, seconds: (performance.now() - started) / 1000 };
  },

  /** Creates `count` running domains `${prefix}-<i>`; returns their UUIDs. */
  async create(params: { uri: string; prefix: string; count: number }) {
    const refs = await createDomains(await connection(params.uri), params.prefix, params.count);
    return refs.map((r) => r.uuid);
  },

  /**
   * Suspends and resumes `uuids` (each worker owns a slice and alternates suspend-all / resume-all)
   * until `events` operations are done, at most `rate` operations/s in total (0: as fast as it goes).
   * Every successful operation is one lifecycle event.
   */
  async drive(params: { uri: string; uuids: string[]; workers: number; events: number; rate: number }) {
    const conn = await connection(params.uri);
    const { workers, events, rate } = params;
    let issued = 0;
    let done = 0;
    let errors = 0;
    let firstError: string | undefined;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: workers }, async (_, w) => {
        const mine = params.uuids.filter((_, i) => i % workers === w);
        if (mine.length === 0) return;
        let suspend = true;
        for (;;) {
          for (const uuid of mine) {
            if (issued >= events) return;
            issued += 1;
            if (rate > 0) {
              const due = started + (issued / rate) * 1000;
              const wait = due - performance.now();
              if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait));
            }
            try {
              await (suspend ? conn.suspend(uuid) : conn.resume(uuid));
              done += 1;
            } catch (error) {
              errors += 1;
              firstError ??= error instanceof Error ? error.message : String(error);
            }
          }
          suspend = !suspend;
        }
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    return { events: done, errors, firstError, seconds, rate: done / seconds, finishedAtMs: Date.now() };
  },

  async close() {
    // A connection libvirtd already dropped cannot be closed cleanly: it is gone either way.
    await driver?.close().catch(() => undefined);
    driver = undefined;
    return {};
  },
});

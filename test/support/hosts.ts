/**
 * Shared by the hosts-view tests: `hosts list` of one host, and a bridge's
 * complete snapshot (one sync per domain and the sync_end) announcing its periodic interval.
 */
import { randomUUID } from 'node:crypto';
import type { PowerStateCode } from '../../src/libvirt/constants';
import { buildLifecycleMessage, type LifecycleMessage } from '../../src/messages/lifecycle';
import { isoMicros } from '../../src/util/time';
import { virtbusCli } from './cli';
import type { EventFactory } from './consumer';

export { virtbusCli } from './cli';

/** `hosts list --json` of one host, parsed. */
export async function listedHost(dbUrl: string, host: string): Promise<Record<string, unknown> | undefined> {
  const run = await virtbusCli(['hosts', 'list', '--json', '--db-url', dbUrl]);
  if (run.code !== 0) throw new Error(`hosts list exited ${run.code}: ${run.stderr}`);
  const hosts = JSON.parse(run.stdout) as Array<Record<string, unknown>>;
  return hosts.find((entry) => entry.host === host);
}

/** Snapshot messages' seq: above any EventFactory's, so a snapshot comes after the events before it. */
let snapshotSeq = 1_000_000_000;

/** A periodic snapshot of `host`: each domain's live state, then the sync_end listing them. */
export function snapshotMessages(
  events: EventFactory,
  host: string,
  states: ReadonlyMap<string, PowerStateCode>,
  intervalSeconds: number | undefined,
): LifecycleMessage[] {
  const takenUs = events.tick();
  const snapshot = {
    id: randomUUID(),
    reason: 'periodic' as const,
    count: states.size,
    taken_at: isoMicros(takenUs),
    ...(intervalSeconds === undefined ? {} : { interval_seconds: intervalSeconds }),
  };
  const message = (uuid: string | null, power: PowerStateCode | null): LifecycleMessage =>
    buildLifecycleMessage({
      host,
      instanceUuid: uuid,
      domainName: uuid === null ? null : `instance-${uuid.slice(0, 8)}`,
      transition: uuid === null ? 'sync_end' : 'sync',
      libvirt: uuid === null ? null : { event: 'STATE', detail: 'X', event_code: -1, detail_code: 1 },
      powerState: power,
      occurredMicros: takenUs,
      publishedMicros: takenUs + 100,
      delayedMs: 0,
      seq: (snapshotSeq += 1),
      bootId: events.bootId,
      snapshot,
      ...(uuid === null ? { instanceUuids: [...states.keys()] } : {}),
    });
  return [...[...states].map(([uuid, power]) => message(uuid, power)), message(null, null)];
}

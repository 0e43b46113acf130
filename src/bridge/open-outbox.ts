/**
 * Builds the bridge's outbox from configuration: the durable journal (default; survives broker
 * outages, crashes and restarts) or the in-memory one.
 */
import type { VirtbusConfig } from '../config/load';
import type { Logger } from '../util/log';
import { JournalOutbox } from './journal-outbox';
import { MemoryOutbox, type Outbox } from './outbox';

export async function openOutbox(config: VirtbusConfig, logger: Logger): Promise<Outbox> {
  const settings = config.bridge.outbox;
  if (settings.kind === 'memory') return new MemoryOutbox(settings.memoryCapacity);
  return JournalOutbox.open({
    dir: settings.dir,
    maxBytes: settings.maxBytes,
    segmentBytes: settings.segmentBytes,
    fsyncIntervalMs: settings.fsyncIntervalMs,
    logger: logger.child({ module: 'outbox' }),
  });
}

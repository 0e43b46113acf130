/**
 * Bridge metrics for tests of one bridge part (dispatcher, publisher, command executor) that needs
 * them but never scrapes them: a registry of their own, sources that read as an idle bridge.
 */
import { Registry } from 'prom-client';
import { createBridgeMetrics, type BridgeMetrics } from '../../src/bridge/metrics';

export function idleBridgeMetrics(): BridgeMetrics {
  return createBridgeMetrics(
    {
      queueStats: () => ({ depth: 0, capacity: 1, highWater: 0, dropped: 0, enqueued: 0 }),
      unconfirmed: () => 0,
      delayedStopsPending: () => 0,
      outboxDepth: () => 0,
      outboxOldestMicros: () => undefined,
      libvirtUp: () => true,
      amqpUp: () => true,
    },
    new Registry(),
  );
}

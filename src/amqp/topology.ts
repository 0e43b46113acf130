/**
 * Topology as data: exchanges, queues and bindings described from configuration, applied step by
 * step on every (re)connect so a broker that lost its definitions (or a new cluster node) is
 * repaired by the next connection — or, for a process that may configure nothing shared (a bridge),
 * checked passively. deploy/rabbitmq/definitions.json declares the same objects.
 */
import type { Channel } from 'amqplib';

export interface ExchangeSpec {
  readonly name: string;
  readonly type: 'topic' | 'fanout' | 'direct';
  readonly durable: boolean;
  readonly arguments?: Readonly<Record<string, unknown>>;
}

export interface QueueSpec {
  readonly name: string;
  readonly durable: boolean;
  readonly arguments?: Readonly<Record<string, unknown>>;
}

export interface BindingSpec {
  readonly queue: string;
  readonly exchange: string;
  readonly pattern: string;
}

export interface Topology {
  readonly exchanges: readonly ExchangeSpec[];
  readonly queues: readonly QueueSpec[];
  readonly bindings: readonly BindingSpec[];
}

export async function assertTopology(channel: Channel, topology: Topology): Promise<void> {
  for (const exchange of topology.exchanges) {
    await channel.assertExchange(exchange.name, exchange.type, {
      durable: exchange.durable,
      ...(exchange.arguments ? { arguments: { ...exchange.arguments } } : {}),
    });
  }
  for (const queue of topology.queues) {
    await channel.assertQueue(queue.name, {
      durable: queue.durable,
      ...(queue.arguments ? { arguments: { ...queue.arguments } } : {}),
    });
  }
  for (const binding of topology.bindings) {
    await channel.bindQueue(binding.queue, binding.exchange, binding.pattern);
  }
}

/** Merges topologies, keeping the first declaration of each name (they must agree anyway). */
export function mergeTopologies(...parts: readonly Topology[]): Topology {
  const unique = <T>(items: T[], key: (item: T) => string): T[] => {
    const seen = new Set<string>();
    return items.filter((item) => {
      const k = key(item);
      if (seen.has(k)) return false;
      seen.add(k);
      return true;
    });
  };
  return {
    exchanges: unique(
      parts.flatMap((p) => [...p.exchanges]),
      (e) => e.name,
    ),
    queues: unique(
      parts.flatMap((p) => [...p.queues]),
      (q) => q.name,
    ),
    bindings: unique(
      parts.flatMap((p) => [...p.bindings]),
      (b) => `${b.queue}\u0000${b.exchange}\u0000${b.pattern}`,
    ),
  };
}

/**
 * The lifecycle exchange with its alternate exchange: a message no binding matches lands in the
 * unroutable queue instead of vanishing (docs/reliability.md: unroutable messages are kept, never silently lost).
 */
export function lifecycleExchangeTopology(exchange: string, unroutable: string): Topology {
  return {
    exchanges: [
      { name: unroutable, type: 'fanout', durable: true },
      { name: exchange, type: 'topic', durable: true, arguments: { 'alternate-exchange': unroutable } },
    ],
    queues: [{ name: unroutable, durable: true, arguments: { 'x-queue-type': 'quorum' } }],
    bindings: [{ queue: unroutable, exchange: unroutable, pattern: '' }],
  };
}

/** How an operator creates what a passive check found missing. */
export const MISSING_TOPOLOGY_HINT =
  'create it from the shipped broker definitions (deploy/rabbitmq/definitions.json, or the per-host ' +
  'definitions the `virtbus broker definitions` generator writes; see docs/security.md), or set ' +
  'bridge.declareTopology=true (VIRTBUS_BRIDGE_DECLARE_TOPOLOGY) on a development broker';

/** A passive check found an object missing or refused; the message names it and how to create it. */
export class MissingTopologyError extends Error {
  constructor(
    readonly kind: 'exchange' | 'queue',
    readonly objectName: string,
    cause: unknown,
  ) {
    const why = cause instanceof Error ? cause.message : String(cause);
    super(
      `${kind} ${JSON.stringify(objectName)} is missing or not accessible (${why}); ${MISSING_TOPOLOGY_HINT}`,
    );
    this.name = 'MissingTopologyError';
  }
}

/**
 * Checks passively that the exchanges and queues of a topology exist, declaring nothing: a process
 * that must configure nothing shared (a bridge holding one host's credentials) uses this instead of
 * assertTopology. Bindings cannot be checked passively in AMQP 0-9-1; they come with the definitions.
 * The first missing object fails the check (the broker closes the channel at a 404).
 */
export async function checkTopology(channel: Channel, topology: Topology): Promise<void> {
  for (const exchange of topology.exchanges) {
    try {
      await channel.checkExchange(exchange.name);
    } catch (error) {
      throw new MissingTopologyError('exchange', exchange.name, error);
    }
  }
  for (const queue of topology.queues) {
    try {
      await channel.checkQueue(queue.name);
    } catch (error) {
      throw new MissingTopologyError('queue', queue.name, error);
    }
  }
}

/** assertTopology when declare is true (development), checkTopology otherwise. */
export function prepareTopology(channel: Channel, topology: Topology, declare: boolean): Promise<void> {
  return declare ? assertTopology(channel, topology) : checkTopology(channel, topology);
}

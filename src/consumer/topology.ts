/**
 * The consumer's broker objects, as data (applied on every (re)connect):
 * - the lifecycle exchange (as the bridge declares it, with its alternate exchange);
 * - the consumer queue: durable, quorum by default, dead-lettering to the dead-letter exchange, with
 *   a delivery limit (quorum) so a message that keeps killing consumers cannot loop forever; bound
 *   with consumer.bindings (default #) or, in per-host mode, <host-segment>.* per host;
 * - the dead-letter exchange (topic) and queue (bound #): malformed messages land there with the
 *   reason in header x-virtbus-reason, broker-side dead-letters (delivery limit) with x-death;
 * - the command exchange and the results queue (bound *.stop_result, or per host).
 */
import { lifecycleExchangeTopology, mergeTopologies, type Topology } from '../amqp/topology';
import { hostSegment } from '../messages/lifecycle';

export interface ConsumerTopologySettings {
  readonly amqp: {
    readonly exchange: string;
    readonly unroutableExchange: string;
    readonly commandExchange: string;
  };
  readonly consumer: {
    readonly queue: string;
    /** quorum or classic (validated by the configuration schema). */
    readonly queueType: string;
    readonly bindings: readonly string[];
    readonly hosts: readonly string[];
    readonly deliveryLimit: number;
    readonly deadLetterExchange: string;
    readonly deadLetterQueue: string;
    readonly resultQueue: string;
  };
}

export function queueArguments(
  type: 'quorum' | 'classic',
  deadLetterExchange: string | undefined,
  deliveryLimit: number,
): Record<string, unknown> {
  const args: Record<string, unknown> = { 'x-queue-type': type };
  if (deadLetterExchange) args['x-dead-letter-exchange'] = deadLetterExchange;
  if (type === 'quorum' && deadLetterExchange) args['x-delivery-limit'] = deliveryLimit;
  return args;
}

export function lifecycleBindings(settings: ConsumerTopologySettings['consumer']): string[] {
  return settings.hosts.length > 0
    ? settings.hosts.map((host) => `${hostSegment(host)}.*`)
    : [...settings.bindings];
}

export function resultBindings(settings: ConsumerTopologySettings['consumer']): string[] {
  return settings.hosts.length > 0
    ? settings.hosts.map((host) => `${hostSegment(host)}.stop_result`)
    : ['*.stop_result'];
}

export function consumerTopology(settings: ConsumerTopologySettings): Topology {
  const { amqp, consumer } = settings;
  const type = consumer.queueType === 'classic' ? 'classic' : 'quorum';
  const args = queueArguments(type, consumer.deadLetterExchange, consumer.deliveryLimit);
  return mergeTopologies(lifecycleExchangeTopology(amqp.exchange, amqp.unroutableExchange), {
    exchanges: [
      { name: consumer.deadLetterExchange, type: 'topic', durable: true },
      { name: amqp.commandExchange, type: 'topic', durable: true },
    ],
    queues: [
      {
        name: consumer.deadLetterQueue,
        durable: true,
        arguments: queueArguments(type, undefined, consumer.deliveryLimit),
      },
      { name: consumer.queue, durable: true, arguments: args },
      { name: consumer.resultQueue, durable: true, arguments: args },
    ],
    bindings: [
      { queue: consumer.deadLetterQueue, exchange: consumer.deadLetterExchange, pattern: '#' },
      ...lifecycleBindings(consumer).map((pattern) => ({
        queue: consumer.queue,
        exchange: amqp.exchange,
        pattern,
      })),
      ...resultBindings(consumer).map((pattern) => ({
        queue: consumer.resultQueue,
        exchange: amqp.commandExchange,
        pattern,
      })),
    ],
  });
}

/**
 * Reads the consumer queue's and the dead-letter queue's depths from the broker (passive declares on
 * a channel of their own, so a failed read cannot close the consuming channel) for the
 * virtbus_consumer_queue_depth and virtbus_consumer_dead_letter_depth gauges.
 */
import type { ChannelModel } from 'amqplib';
import type { Logger } from '../util/log';
import type { Channels } from './acks';
import type { ConsumerMetrics } from './metrics';

export async function pollQueueDepth(
  channels: Channels | undefined,
  model: ChannelModel | undefined,
  queues: { readonly queue: string; readonly deadLetterQueue: string },
  metrics: Pick<ConsumerMetrics, 'queueDepth' | 'deadLetterDepth'>,
  logger: Logger,
): Promise<void> {
  if (!channels?.open || !model) return;
  try {
    if (!channels.depth) {
      const depth = await model.createChannel();
      depth.on('error', () => undefined);
      depth.on('close', () => {
        if (channels.depth === depth) channels.depth = undefined;
      });
      channels.depth = depth;
    }
    const main = await channels.depth.checkQueue(queues.queue);
    metrics.queueDepth.set(main.messageCount);
    const dead = await channels.depth.checkQueue(queues.deadLetterQueue);
    metrics.deadLetterDepth.set(dead.messageCount);
  } catch (error) {
    logger.debug({ err: error }, 'queue depth not read');
  }
}

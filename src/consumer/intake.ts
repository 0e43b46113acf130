/**
 * One delivery from bytes to a work item, apart from the service's flow control: the size bound
 * (checked before anything is decoded, so an oversized body costs no parsing), the schema
 * (validate.ts), then the sender (senders.ts). What is unusable comes back as a reason for the
 * dead-letter queue, never as an exception: nothing a message says may throw out of the intake.
 */
import type { ConsumeMessage } from 'amqplib';
import type { WorkItem } from './handler';
import { deliveryOrigin } from './dead-letters-origin';
import type { ConsumerMetrics } from './metrics';
import { verifySender, type SenderPolicy } from './senders';
import { validateCommandResult, validateLifecycle } from './validate';
import { binaryCloudEventMismatch } from '../messages/cloudevents';
import { startMessageTrace } from '../tracing/consumer';

export interface IntakeSettings {
  readonly maxMessageBytes: number;
  readonly maxFutureSkewMs: number;
  readonly senders: SenderPolicy;
  /**
   * The consumer's own broker user: only a message it published to its queue may be a replay of a
   * dead letter, checked against the sender it records (dead-letters-origin.ts). '' or absent: none is.
   */
  readonly selfUser?: string;
}

/** Why a delivery is unusable; `truncated`: dead-letter only a prefix of its body (it is oversized). */
export interface Rejected {
  readonly reason: string;
  readonly truncated?: boolean;
}

export function readDelivery(
  queue: 'lifecycle' | 'result',
  message: ConsumeMessage,
  nowUs: number,
  settings: IntakeSettings,
  metrics: Pick<ConsumerMetrics, 'oversized' | 'senderRejections'>,
): WorkItem | Rejected {
  try {
    return read(queue, message, nowUs, settings, metrics);
  } catch (error) {
    return { reason: `unreadable message: ${(error as Error).message}` };
  }
}

function read(
  queue: 'lifecycle' | 'result',
  message: ConsumeMessage,
  nowUs: number,
  settings: IntakeSettings,
  metrics: Pick<ConsumerMetrics, 'oversized' | 'senderRejections'>,
): WorkItem | Rejected {
  const trace = queue === 'lifecycle' ? startMessageTrace(message) : undefined;
  if (message.content.length > settings.maxMessageBytes) {
    metrics.oversized.inc();
    return {
      reason: `body too large: ${message.content.length} bytes, over consumer.maxMessageBytes (${settings.maxMessageBytes})`,
      truncated: true,
    };
  }
  let item: WorkItem;
  let host: string;
  if (queue === 'lifecycle') {
    const validated = validateLifecycle(message.content, nowUs, settings.maxFutureSkewMs, trace);
    if (!validated.ok) return validated;
    // A binary-mode CloudEvent's ce- headers must say what its body says (issue 13).
    const mismatch = binaryCloudEventMismatch(message.properties.headers, validated.value);
    if (mismatch) return { reason: mismatch };
    item = { kind: 'lifecycle', event: validated.value };
    host = validated.value.host;
  } else {
    const validated = validateCommandResult(message.content, nowUs, settings.maxFutureSkewMs);
    if (!validated.ok) return validated;
    item = { kind: 'result', result: validated.value };
    host = validated.value.host;
  }
  // A replay is checked as its original publish was: the recorded routing key and user.
  const origin = deliveryOrigin(message, settings.selfUser ?? '');
  if ('forged' in origin) {
    metrics.senderRejections.inc({ reason: 'forged_replay' });
    return { reason: `sender not verified: ${origin.forged}` };
  }
  const verdict = verifySender(settings.senders, host, origin.routingKey, origin.userId);
  if (verdict) {
    metrics.senderRejections.inc({ reason: verdict.rejection });
    return verdict;
  }
  return item;
}

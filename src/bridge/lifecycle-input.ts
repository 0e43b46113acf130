/**
 * Builds one outbox record of a lifecycle message (JSON, the oslo envelope or a CloudEvent) from what the
 * dispatcher decided. Kept apart from the dispatcher, which decides *what* goes out and in which
 * order; this only spells the message and its AMQP properties. The caller assigns `seq`: it is the
 * dispatcher's serial lane that orders messages.
 */
import type { LibvirtCodes, Transition } from '../libvirt/translate';
import type { powerStateOf } from '../libvirt/power-state';
import {
  buildLifecycleMessage,
  lifecycleRoutingKey,
  LIFECYCLE_MESSAGE_TYPE,
  type LifecycleMessage,
} from '../messages/lifecycle';
import { encodeLifecycleBody, type LifecycleFormat } from '../messages/formats';
import { nowMicros } from '../util/time';
import type { OutboxInput } from './outbox';

export interface LifecycleSource {
  readonly host: string;
  readonly bootId: string;
  readonly exchange: string;
  readonly format: LifecycleFormat;
}

export interface LifecycleFields {
  readonly instanceUuid: string | null;
  readonly domainName: string | null;
  readonly transition: Transition;
  readonly libvirt: LibvirtCodes | null;
  readonly powerState: ReturnType<typeof powerStateOf> | null;
  readonly occurredMicros: number;
  readonly delayedMs: number;
  readonly snapshot?: LifecycleMessage['snapshot'];
  readonly instanceUuids?: readonly string[];
}

export function lifecycleInput(source: LifecycleSource, seq: number, fields: LifecycleFields): OutboxInput {
  const { host, bootId, exchange, format } = source;
  const published = nowMicros();
  // Every field spelled out (no spread): this runs once per event.
  const message = buildLifecycleMessage({
    host,
    bootId,
    seq,
    publishedMicros: published,
    instanceUuid: fields.instanceUuid,
    domainName: fields.domainName,
    transition: fields.transition,
    libvirt: fields.libvirt,
    powerState: fields.powerState,
    occurredMicros: fields.occurredMicros,
    delayedMs: fields.delayedMs,
    snapshot: fields.snapshot,
    instanceUuids: fields.instanceUuids,
  });
  const body = encodeLifecycleBody(format, message, published);
  return {
    exchange,
    routingKey: lifecycleRoutingKey(host, fields.transition),
    messageId: message.event_id,
    type: LIFECYCLE_MESSAGE_TYPE,
    occurredMicros: fields.occurredMicros,
    transition: fields.transition,
    body: Buffer.from(JSON.stringify(body)),
  };
}

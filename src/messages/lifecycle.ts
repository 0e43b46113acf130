/**
 * The lifecycle message (bridge → bus), schema `virtbus.lifecycle/1`: see docs/message-format.md (every
 * field, with captured examples). Consumers ignore unknown fields; a breaking change bumps the schema.
 */
import { randomUUID } from 'node:crypto';
import type { PowerStateCode } from '../libvirt/constants';
import { NOVA_TRANSITION, type LibvirtCodes, type Transition } from '../libvirt/translate';
import { powerStateName } from '../libvirt/power-state';
import { isoMicros, osloTimestamp } from '../util/time';
import { isStructuredCloudEvent, structuredCloudEventData } from './cloudevents';

export const LIFECYCLE_SCHEMA = 'virtbus.lifecycle/1';
export const LIFECYCLE_MESSAGE_TYPE = 'virtbus.lifecycle.v1';
export const APP_ID = 'virtbus';

export type SnapshotReason = 'start' | 'reconnect' | 'periodic' | 'overflow';

export interface SnapshotInfo {
  /** One id for the N sync messages and the sync_end of one snapshot. */
  readonly id: string;
  readonly reason: SnapshotReason;
  /** Number of per-domain sync messages in this snapshot. */
  readonly count: number;
  /** When the domain list was read: rows not changed since then and absent from the list have vanished. */
  readonly taken_at: string;
  /**
   * The bridge's periodic snapshot interval (bridge.resyncIntervalSeconds; 0: periodic snapshots
   * disabled), so consumers can tell when this host's next snapshot is overdue. Optional: bridges
   * before it omit it, and consumers ignore unknown fields.
   */
  readonly interval_seconds?: number;
}

export interface LifecycleMessage {
  readonly schema: typeof LIFECYCLE_SCHEMA;
  readonly event_id: string;
  readonly host: string;
  readonly instance_uuid: string | null;
  readonly domain_name: string | null;
  readonly transition: Transition;
  readonly nova_transition: string | null;
  /** The raw libvirt codes (for sync: event STATE with the virDomainState); null for sync_end. */
  readonly libvirt: LibvirtCodes | null;
  /** Live Nova power_state sampled at dispatch (after any delay); null for sync_end. */
  readonly power_state: PowerStateCode | null;
  readonly power_state_name: string | null;
  readonly occurred_at: string;
  readonly published_at: string;
  readonly delayed_ms: number;
  readonly seq: number;
  readonly boot_id: string;
  readonly snapshot?: SnapshotInfo;
  /** sync_end only: every domain in the snapshot. */
  readonly instance_uuids?: readonly string[];
}

/**
 * The routing-key host segment: lower-cased, every character outside [a-z0-9_-] replaced by `_`, so a
 * dotted host name stays one topic word (cmp-01.example.org → cmp-01_example_org).
 */
export function hostSegment(host: string): string {
  return host.toLowerCase().replace(/[^a-z0-9_-]/g, '_');
}

/** host → its segment; a bridge has one host, so this is built once per run (bounded anyway). */
const segments = new Map<string, string>();

export function lifecycleRoutingKey(host: string, transition: Transition): string {
  let segment = segments.get(host);
  if (segment === undefined) {
    if (segments.size >= 64) segments.clear();
    segment = hostSegment(host);
    segments.set(host, segment);
  }
  return `${segment}.${transition}`;
}

export interface LifecycleFields {
  readonly host: string;
  readonly instanceUuid: string | null;
  readonly domainName: string | null;
  readonly transition: Transition;
  readonly libvirt: LibvirtCodes | null;
  readonly powerState: PowerStateCode | null;
  readonly occurredMicros: number;
  readonly publishedMicros: number;
  readonly delayedMs: number;
  readonly seq: number;
  readonly bootId: string;
  readonly snapshot?: SnapshotInfo;
  readonly instanceUuids?: readonly string[];
}

/**
 * isoMicros with the text up to the seconds cached: the dispatcher formats two timestamps per
 * event, nearly always within the same second or two (a delayed STOPPED: occurred 15 s earlier).
 */
const isoSeconds = [Number.NaN, Number.NaN];
const isoPrefixes = ['', ''];
let isoOldest = 0;
function isoMicrosFast(epochMicros: number): string {
  const second = Math.floor(epochMicros / 1e6);
  let slot = isoSeconds[0] === second ? 0 : isoSeconds[1] === second ? 1 : -1;
  if (slot < 0) {
    slot = isoOldest;
    isoOldest = 1 - slot;
    const whole = isoMicros(second * 1e6); // "…:SS.000000Z"
    isoPrefixes[slot] = whole.slice(0, whole.length - 7);
    isoSeconds[slot] = second;
  }
  return `${isoPrefixes[slot]}${String(Math.floor(epochMicros - second * 1e6) + 1e6).slice(1)}Z`;
}

export function buildLifecycleMessage(fields: LifecycleFields): LifecycleMessage {
  // One object literal with every field in contract order (no conditional spreads): V8 keeps it a
  // fast-mode object, cheaper to build and to JSON.stringify on the per-event path.
  const message: {
    -readonly [K in keyof LifecycleMessage]: LifecycleMessage[K];
  } = {
    schema: LIFECYCLE_SCHEMA,
    event_id: randomUUID(),
    host: fields.host,
    instance_uuid: fields.instanceUuid,
    domain_name: fields.domainName,
    transition: fields.transition,
    nova_transition: NOVA_TRANSITION[fields.transition],
    libvirt: fields.libvirt,
    power_state: fields.powerState,
    power_state_name: fields.powerState === null ? null : powerStateName(fields.powerState),
    occurred_at: isoMicrosFast(fields.occurredMicros),
    published_at: isoMicrosFast(fields.publishedMicros),
    delayed_ms: fields.delayedMs,
    seq: fields.seq,
    boot_id: fields.bootId,
  };
  if (fields.snapshot) message.snapshot = fields.snapshot;
  if (fields.instanceUuids) message.instance_uuids = fields.instanceUuids;
  return message;
}

/**
 * amqp.format = oslo: the same fields as the payload of an oslo.messaging v2 envelope, whose
 * `oslo.message` is a JSON *string* (oslo.messaging's serialize_msg, _drivers/common.py).
 */
export function osloEnvelope(message: LifecycleMessage, publishedMicros: number): object {
  const inner = {
    message_id: message.event_id,
    publisher_id: `virtbus:${message.host}`,
    event_type: 'libvirt.domain.lifecycle',
    priority: 'INFO',
    payload: message,
    timestamp: osloTimestamp(publishedMicros),
    _unique_id: randomUUID().replace(/-/g, ''),
  };
  return { 'oslo.version': '2.0', 'oslo.message': JSON.stringify(inner) };
}

/**
 * Accepts a lifecycle body in any format and returns the inner object (not yet validated): the oslo
 * v2 envelope, the v1 un-enveloped notification, a structured CloudEvent (its data; throws a
 * CloudEventError when its attributes contradict it), or the plain virtbus object (which is also
 * the body of a binary-mode CloudEvent).
 */
export function unwrapLifecycleBody(parsed: unknown): unknown {
  if (parsed === null || typeof parsed !== 'object') return parsed;
  const record = parsed as Record<string, unknown>;
  if (typeof record['oslo.message'] === 'string') {
    const inner = JSON.parse(record['oslo.message']) as unknown;
    return inner !== null && typeof inner === 'object' && 'payload' in inner ? inner.payload : inner;
  }
  if ('event_type' in record && 'payload' in record) return record.payload;
  if (isStructuredCloudEvent(record)) return structuredCloudEventData(record);
  return parsed;
}

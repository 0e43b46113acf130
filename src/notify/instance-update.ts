/**
 * Nova's versioned `instance.update` notification (InstanceUpdatePayload 2.1) in the oslo.messaging
 * v2 envelope, as nova-lifecycle.md §6 describes it: `oslo.message` is a JSON *string*; timestamp is
 * Python's str(utcnow()) ("2026-08-21 21:01:48.123456"); message_id a dashed UUID, _unique_id hex;
 * payload objects in the ovo primitive form; power_state as its string; datetimes "…T…Z" with
 * seconds. state_update follows notify_on_state_change = vm_and_task_state: old/new when vm_state
 * or task_state changed, otherwise the current values on both sides (a power_state-only save).
 */
import { randomUUID } from 'node:crypto';
import { POWER_STATE_NAMES, type PowerStateCode } from '../libvirt/constants';
import type { InstanceRow } from '../store/types';
import { novaDateTime, osloTimestamp, parseIsoMicros } from '../util/time';

export const INSTANCE_UPDATE_EVENT = 'instance.update';

export interface NovaObject<T> {
  readonly 'nova_object.name': string;
  readonly 'nova_object.namespace': 'nova';
  readonly 'nova_object.version': string;
  readonly 'nova_object.data': T;
}

function novaObject<T>(name: string, version: string, data: T): NovaObject<T> {
  return {
    'nova_object.name': name,
    'nova_object.namespace': 'nova',
    'nova_object.version': version,
    'nova_object.data': data,
  };
}

export interface StateUpdate {
  readonly old_state: string | null;
  readonly state: string | null;
  readonly old_task_state: string | null;
  readonly new_task_state: string | null;
}

/** The notification's inner message (what `oslo.message` holds, decoded). */
export interface InstanceUpdateMessage {
  readonly message_id: string;
  readonly publisher_id: string;
  readonly event_type: typeof INSTANCE_UPDATE_EVENT;
  readonly priority: 'INFO';
  readonly payload: NovaObject<Record<string, unknown>>;
  readonly timestamp: string;
  readonly _unique_id: string;
  readonly [context: `_context_${string}`]: unknown;
}

export interface OsloEnvelope {
  readonly 'oslo.version': '2.0';
  readonly 'oslo.message': string;
}

function powerStateString(code: number): string {
  return POWER_STATE_NAMES[code as PowerStateCode] ?? 'pending';
}

/** A row time (ISO µs) → Nova's notification datetime, or null. */
function novaTime(value: string | null | undefined): string | null {
  if (!value) return null;
  const micros = parseIsoMicros(value);
  return Number.isNaN(micros) ? null : novaDateTime(micros);
}

/** Nova's current audit period under the default `month` unit: first of this month → now. */
function auditPeriod(nowMicros: number): NovaObject<Record<string, string>> {
  const now = new Date(Math.floor(nowMicros / 1000));
  const beginning = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1);
  return novaObject('AuditPeriodPayload', '1.0', {
    audit_period_beginning: novaDateTime(beginning * 1000),
    audit_period_ending: novaDateTime(nowMicros),
  });
}

function attr(row: InstanceRow, key: string, fallback: unknown = null): unknown {
  return key in row.attrs ? row.attrs[key] : fallback;
}

/**
 * The InstanceUpdatePayload for `row` (the state after the save). `before` is the row before it:
 * its vm_state and task_state give state_update when either changed.
 */
export function instanceUpdatePayload(
  row: InstanceRow,
  before: Pick<InstanceRow, 'vm_state' | 'task_state'>,
  nowMicros: number,
): NovaObject<Record<string, unknown>> {
  const changed = before.vm_state !== row.vm_state || before.task_state !== row.task_state;
  const stateUpdate: StateUpdate = changed
    ? {
        old_state: before.vm_state,
        state: row.vm_state,
        old_task_state: before.task_state,
        new_task_state: row.task_state,
      }
    : {
        old_state: row.vm_state,
        state: row.vm_state,
        old_task_state: row.task_state,
        new_task_state: row.task_state,
      };
  const displayName = attr(row, 'display_name');
  const data: Record<string, unknown> = {
    uuid: row.uuid,
    user_id: attr(row, 'user_id'),
    tenant_id: attr(row, 'tenant_id', attr(row, 'project_id')),
    reservation_id: attr(row, 'reservation_id'),
    display_name: displayName,
    display_description: attr(row, 'display_description'),
    host_name: attr(row, 'host_name', attr(row, 'hostname', displayName)),
    host: row.host,
    node: attr(row, 'node', row.host),
    os_type: attr(row, 'os_type'),
    architecture: attr(row, 'architecture'),
    availability_zone: attr(row, 'availability_zone'),
    flavor: attr(row, 'flavor'),
    image_uuid: attr(row, 'image_uuid'),
    key_name: attr(row, 'key_name'),
    kernel_id: attr(row, 'kernel_id', ''),
    ramdisk_id: attr(row, 'ramdisk_id', ''),
    created_at: novaTime(row.created_at),
    launched_at: novaTime(row.launched_at),
    terminated_at: attr(row, 'terminated_at'),
    deleted_at: attr(row, 'deleted_at'),
    updated_at: novaTime(row.updated_at),
    state: row.vm_state,
    power_state: powerStateString(row.power_state),
    task_state: row.task_state,
    progress: attr(row, 'progress', 0),
    ip_addresses: attr(row, 'ip_addresses', []),
    block_devices: null,
    metadata: attr(row, 'metadata', {}),
    locked: attr(row, 'locked', false),
    auto_disk_config: attr(row, 'auto_disk_config', 'MANUAL'),
    request_id: null,
    action_initiator_user: null,
    action_initiator_project: null,
    locked_reason: attr(row, 'locked_reason'),
    shares: null,
    state_update: novaObject('InstanceStateUpdatePayload', '1.0', stateUpdate),
    audit_period: auditPeriod(nowMicros),
    old_display_name: null,
    tags: attr(row, 'tags', []),
  };
  return novaObject('InstanceUpdatePayload', '2.1', data);
}

/**
 * The whole notification: the inner message (for logs and tests) and the v2 envelope that goes on
 * the wire. The context is Nova's admin context of the event/sync path: no user or project,
 * is_admin, read_deleted 'yes'.
 */
export function buildInstanceUpdate(
  row: InstanceRow,
  before: Pick<InstanceRow, 'vm_state' | 'task_state'>,
  options: { readonly nowMicros: number; readonly publisherService?: string },
): { readonly message: InstanceUpdateMessage; readonly envelope: OsloEnvelope } {
  const requestId = `req-${randomUUID()}`;
  const timestamp = osloTimestamp(options.nowMicros);
  const message: InstanceUpdateMessage = {
    message_id: randomUUID(),
    publisher_id: `${options.publisherService ?? 'nova-compute'}:${row.host ?? 'unknown'}`,
    event_type: INSTANCE_UPDATE_EVENT,
    priority: 'INFO',
    payload: instanceUpdatePayload(row, before, options.nowMicros),
    timestamp,
    _unique_id: randomUUID().replace(/-/g, ''),
    _context_request_id: requestId,
    _context_global_request_id: null,
    _context_user_id: null,
    _context_project_id: null,
    _context_domain_id: null,
    _context_user_domain_id: null,
    _context_project_domain_id: null,
    _context_is_admin: true,
    _context_read_only: false,
    _context_show_deleted: false,
    _context_read_deleted: 'yes',
    _context_roles: [],
    _context_remote_address: null,
    _context_timestamp: timestamp.replace(' ', 'T'),
    _context_user_name: null,
    _context_project_name: null,
  };
  return { message, envelope: { 'oslo.version': '2.0', 'oslo.message': JSON.stringify(message) } };
}

/** The routing key oslo uses: `<topic>.<priority lower-cased>`. */
export function notificationRoutingKey(topic: string): string {
  return `${topic}.info`;
}

/** Decodes an envelope (v2) or a bare v1 message, as oslo's deserialize_msg does. */
export function decodeNotification(body: Buffer | string): InstanceUpdateMessage {
  const parsed = JSON.parse(typeof body === 'string' ? body : body.toString('utf8')) as Record<
    string,
    unknown
  >;
  if (typeof parsed['oslo.message'] === 'string' && 'oslo.version' in parsed)
    return JSON.parse(parsed['oslo.message']) as InstanceUpdateMessage;
  return parsed as unknown as InstanceUpdateMessage;
}

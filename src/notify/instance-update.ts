/**
 * Nova's versioned `instance.update` notification (InstanceUpdatePayload 2.1, or 2.0 for consumers on
 * Nova releases before `shares`: consumer.notifications.payloadVersion) in the oslo.messaging
 * v2 envelope (docs/consumer.md#notifications; nova/notifications/objects/instance.py and
 * oslo.messaging's serialize_msg in _drivers/common.py): `oslo.message` is a JSON *string*; timestamp is
 * Python's str(utcnow()) ("2026-08-21 21:01:48.123456"); message_id a dashed UUID, _unique_id hex;
 * payload objects in the ovo primitive form; power_state as its string; datetimes "…T…Z" with
 * seconds. state_update follows notify_on_state_change = vm_and_task_state: old/new when vm_state
 * or task_state changed, otherwise the current values on both sides (a power_state-only save).
 */
import { randomUUID } from 'node:crypto';
import { POWER_STATE_NAMES, type PowerStateCode } from '../libvirt/constants';
import type { InstanceRow } from '../store/types';
import { normalizeTime } from '../store/input';
import { novaDateTime, osloTimestamp, parseIsoMicros } from '../util/time';
import { flavorPayload } from './flavor';

export const INSTANCE_UPDATE_EVENT = 'instance.update';

/**
 * InstanceUpdatePayload versions virtbus writes: 2.1 (today's Nova: `shares` added) and 2.0 (Nova up
 * to 2024.1, e.g. Nova 26 "Zed" in Debian 12: no `shares`, which its objects would reject).
 */
export const PAYLOAD_VERSIONS = ['2.0', '2.1'] as const;
export type PayloadVersion = (typeof PAYLOAD_VERSIONS)[number];
export const DEFAULT_PAYLOAD_VERSION: PayloadVersion = '2.1';

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

/**
 * A datetime attribute (terminated_at, deleted_at) → Nova's notification datetime, as the columns
 * are: imports normalise them, and a value stored before that is normalised here; else null.
 */
function novaAttrTime(row: InstanceRow, key: string): string | null {
  const value = row.attrs[key];
  if (typeof value !== 'string') return null;
  return novaTimeFast(normalizeTime(value));
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
  version: PayloadVersion = DEFAULT_PAYLOAD_VERSION,
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
    flavor: flavorPayload(row.attrs),
    image_uuid: attr(row, 'image_uuid'),
    key_name: attr(row, 'key_name'),
    kernel_id: attr(row, 'kernel_id', ''),
    ramdisk_id: attr(row, 'ramdisk_id', ''),
    created_at: novaTime(row.created_at),
    launched_at: novaTime(row.launched_at),
    terminated_at: novaAttrTime(row, 'terminated_at'),
    deleted_at: novaAttrTime(row, 'deleted_at'),
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
    ...(version === '2.0' ? {} : { shares: null }),
    state_update: novaObject('InstanceStateUpdatePayload', '1.0', stateUpdate),
    audit_period: auditPeriod(nowMicros),
    old_display_name: null,
    tags: attr(row, 'tags', []),
  };
  return novaObject('InstanceUpdatePayload', version, data);
}

export interface NotificationOptions {
  readonly nowMicros: number;
  readonly publisherService?: string;
  /** InstanceUpdatePayload version (default 2.1). */
  readonly payloadVersion?: PayloadVersion;
  /** The random UUIDs (message_id, the request id, _unique_id before its dashes go); tests fix them. */
  readonly ids?: { readonly message: string; readonly request: string; readonly unique: string };
}

function newIds(): { message: string; request: string; unique: string } {
  return { message: randomUUID(), request: randomUUID(), unique: randomUUID() };
}

/**
 * The whole notification: the inner message (for logs and tests) and the v2 envelope that goes on
 * the wire. The context is Nova's admin context of the event/sync path: no user or project,
 * is_admin, read_deleted 'yes'.
 */
export function buildInstanceUpdate(
  row: InstanceRow,
  before: Pick<InstanceRow, 'vm_state' | 'task_state'>,
  options: NotificationOptions,
): { readonly message: InstanceUpdateMessage; readonly envelope: OsloEnvelope } {
  const ids = options.ids ?? newIds();
  const requestId = `req-${ids.request}`;
  const timestamp = osloTimestamp(options.nowMicros);
  const message: InstanceUpdateMessage = {
    message_id: ids.message,
    publisher_id: `${options.publisherService ?? 'nova-compute'}:${row.host ?? 'unknown'}`,
    event_type: INSTANCE_UPDATE_EVENT,
    priority: 'INFO',
    payload: instanceUpdatePayload(row, before, options.nowMicros, options.payloadVersion),
    timestamp,
    _unique_id: ids.unique.replace(/-/g, ''),
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

// ---- the wire form, written directly ---------------------------------------------------------
//
// encodeInstanceUpdate produces exactly JSON.stringify(buildInstanceUpdate(…).envelope) — the same
// bytes — without building the payload objects or escaping the inner JSON a second time: the fixed
// parts are written already escaped for their place inside the `oslo.message` string, and only the
// row's values are serialised (and escaped) one by one. It is the consumer's hottest path (one or two
// notifications per applied event); buildInstanceUpdate stays the readable reference, and a test
// compares the two byte for byte.

/** Characters JSON.stringify escapes in a string (quote, backslash, controls, lone surrogates). */
// eslint-disable-next-line no-control-regex -- the control characters are what it looks for
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;

/**
 * `value`'s JSON text, escaped to sit inside a JSON string (as the envelope carries the message);
 * undefined for what JSON.stringify leaves out of an object.
 */
function nested(value: unknown): string | undefined {
  if (value === null) return 'null';
  if (typeof value === 'string')
    return NEEDS_ESCAPE.test(value) ? JSON.stringify(JSON.stringify(value)).slice(1, -1) : `\\"${value}\\"`;
  if (typeof value === 'number' || typeof value === 'boolean') return JSON.stringify(value);
  const json = JSON.stringify(value) as string | undefined;
  return json === undefined ? undefined : JSON.stringify(json).slice(1, -1);
}

/** `,"key":value` inside the message string; nothing when the value is one JSON.stringify drops. */
function member(key: string, value: unknown): string {
  const text = nested(value);
  return text === undefined ? '' : `,\\"${key}\\":${text}`;
}

/** What the payload carries for an attribute the row does not have (Nova's empty defaults). */
const ATTR_DEFAULTS: Readonly<Record<string, unknown>> = {
  user_id: null,
  reservation_id: null,
  display_description: null,
  os_type: null,
  architecture: null,
  availability_zone: null,
  image_uuid: null,
  key_name: null,
  kernel_id: '',
  ramdisk_id: '',
  progress: 0,
  ip_addresses: [],
  metadata: {},
  locked: false,
  auto_disk_config: 'MANUAL',
  locked_reason: null,
  tags: [],
};
/** The members for absent attributes, written once. */
const ABSENT_MEMBERS: ReadonlyMap<string, string> = new Map(
  Object.entries(ATTR_DEFAULTS).map(([key, value]) => [key, member(key, value)]),
);

/** The member of an attribute with a fixed default: the row's value, or the default's text. */
function attrMember(attrs: InstanceRow['attrs'], key: string): string {
  return key in attrs ? member(key, attrs[key]) : (ABSENT_MEMBERS.get(key) as string);
}

function novaObjectHead(name: string, version: string): string {
  return `{\\"nova_object.name\\":\\"${name}\\",\\"nova_object.namespace\\":\\"nova\\",\\"nova_object.version\\":\\"${version}\\",\\"nova_object.data\\":`;
}

const PAYLOAD_HEADS: Readonly<Record<PayloadVersion, string>> = {
  '2.0': novaObjectHead('InstanceUpdatePayload', '2.0'),
  '2.1': novaObjectHead('InstanceUpdatePayload', '2.1'),
};

/** Attributes a FlavorPayload is built from (flavor.ts); a row with none of them gets the default. */
const FLAVOR_SOURCES = [
  'flavor',
  'memory_mb',
  'ram',
  'vcpus',
  'root_gb',
  'disk',
  'ephemeral_gb',
  'OS-FLV-EXT-DATA:ephemeral',
  'instance_type_flavorid',
];
const DEFAULT_FLAVOR_MEMBER = member('flavor', flavorPayload({}));

function flavorMember(attrs: InstanceRow['attrs']): string {
  for (const key of FLAVOR_SOURCES) if (key in attrs) return member('flavor', flavorPayload(attrs));
  return DEFAULT_FLAVOR_MEMBER;
}
const STATE_UPDATE_HEAD = novaObjectHead('InstanceStateUpdatePayload', '1.0');
const AUDIT_PERIOD_HEAD = novaObjectHead('AuditPeriodPayload', '1.0');
const CONTEXT_TAIL =
  ',\\"_context_global_request_id\\":null,\\"_context_user_id\\":null,\\"_context_project_id\\":null' +
  ',\\"_context_domain_id\\":null,\\"_context_user_domain_id\\":null,\\"_context_project_domain_id\\":null' +
  ',\\"_context_is_admin\\":true,\\"_context_read_only\\":false,\\"_context_show_deleted\\":false' +
  ',\\"_context_read_deleted\\":\\"yes\\",\\"_context_roles\\":[]';

/** Per second: the oslo timestamp's date and clock, and the two audit-period ends. */
interface SecondTexts {
  readonly second: number;
  /** "2026-08-21 21:01:48" */
  readonly oslo: string;
  /** "2026-08-21T21:01:48" */
  readonly iso: string;
  /** audit_period_beginning, "2026-08-01T00:00:00Z" */
  readonly monthStart: string;
}

let lastSecond: SecondTexts | undefined;

function secondTexts(second: number): SecondTexts {
  if (lastSecond?.second === second) return lastSecond;
  const oslo = osloTimestamp(second * 1_000_000);
  const ending = novaDateTime(second * 1_000_000);
  const date = new Date(second * 1000);
  const monthStart = novaDateTime(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), 1) * 1000);
  lastSecond = { second, oslo, iso: ending.slice(0, -1), monthStart };
  return lastSecond;
}

/** novaTime of stored times, cached by their whole-seconds part (all the result depends on). */
const novaTimes = new Map<string, string | null>();

function novaTimeFast(value: string | null | undefined): string | null {
  if (!value) return null;
  // The store writes "YYYY-MM-DDTHH:MM:SS.ffffffZ": the result depends on the first 19 characters only.
  if (value.length !== 27 || value.charCodeAt(19) !== 46 || value.charCodeAt(26) !== 90)
    return novaTime(value);
  for (let index = 20; index < 26; index += 1) {
    const code = value.charCodeAt(index);
    if (code < 48 || code > 57) return novaTime(value);
  }
  const key = value.slice(0, 19);
  let cached = novaTimes.get(key);
  if (cached === undefined) {
    cached = novaTime(value);
    if (novaTimes.size >= 4096) novaTimes.clear();
    novaTimes.set(key, cached);
  }
  return cached;
}

/**
 * The notification's wire body, byte for byte JSON.stringify(buildInstanceUpdate(…).envelope), and
 * its message_id.
 */
export function encodeInstanceUpdate(
  row: InstanceRow,
  before: Pick<InstanceRow, 'vm_state' | 'task_state'>,
  options: NotificationOptions,
): { readonly messageId: string; readonly body: Buffer } {
  const ids = options.ids ?? newIds();
  const version = options.payloadVersion ?? DEFAULT_PAYLOAD_VERSION;
  const now = Math.floor(options.nowMicros);
  const second = Math.floor(now / 1_000_000);
  const texts = secondTexts(second);
  const fraction = now - second * 1_000_000;
  const micros = fraction === 0 ? '' : `.${String(fraction).padStart(6, '0')}`;
  const timestamp = `${texts.oslo}${micros}`;
  const changed = before.vm_state !== row.vm_state || before.task_state !== row.task_state;
  const attrs = row.attrs;
  const displayName = attr(row, 'display_name');
  const data =
    `{\\"uuid\\":${nested(row.uuid) ?? 'null'}` +
    attrMember(attrs, 'user_id') +
    member('tenant_id', attr(row, 'tenant_id', attr(row, 'project_id'))) +
    attrMember(attrs, 'reservation_id') +
    member('display_name', displayName) +
    attrMember(attrs, 'display_description') +
    member('host_name', attr(row, 'host_name', attr(row, 'hostname', displayName))) +
    member('host', row.host) +
    member('node', attr(row, 'node', row.host)) +
    attrMember(attrs, 'os_type') +
    attrMember(attrs, 'architecture') +
    attrMember(attrs, 'availability_zone') +
    flavorMember(attrs) +
    attrMember(attrs, 'image_uuid') +
    attrMember(attrs, 'key_name') +
    attrMember(attrs, 'kernel_id') +
    attrMember(attrs, 'ramdisk_id') +
    member('created_at', novaTimeFast(row.created_at)) +
    member('launched_at', novaTimeFast(row.launched_at)) +
    member('terminated_at', novaAttrTime(row, 'terminated_at')) +
    member('deleted_at', novaAttrTime(row, 'deleted_at')) +
    member('updated_at', novaTimeFast(row.updated_at)) +
    member('state', row.vm_state) +
    member('power_state', powerStateString(row.power_state)) +
    member('task_state', row.task_state) +
    attrMember(attrs, 'progress') +
    attrMember(attrs, 'ip_addresses') +
    ',\\"block_devices\\":null' +
    attrMember(attrs, 'metadata') +
    attrMember(attrs, 'locked') +
    attrMember(attrs, 'auto_disk_config') +
    ',\\"request_id\\":null,\\"action_initiator_user\\":null,\\"action_initiator_project\\":null' +
    attrMember(attrs, 'locked_reason') +
    (version === '2.0' ? '' : ',\\"shares\\":null') +
    ',\\"state_update\\":' +
    STATE_UPDATE_HEAD +
    `{\\"old_state\\":${nested(changed ? before.vm_state : row.vm_state) ?? 'null'}` +
    member('state', row.vm_state) +
    member('old_task_state', changed ? before.task_state : row.task_state) +
    member('new_task_state', row.task_state) +
    '}},\\"audit_period\\":' +
    AUDIT_PERIOD_HEAD +
    `{\\"audit_period_beginning\\":\\"${texts.monthStart}\\",\\"audit_period_ending\\":\\"${texts.iso}Z\\"}}` +
    ',\\"old_display_name\\":null' +
    attrMember(attrs, 'tags') +
    '}';
  const body =
    `{"oslo.version":"2.0","oslo.message":"{\\"message_id\\":\\"${ids.message}\\"` +
    member('publisher_id', `${options.publisherService ?? 'nova-compute'}:${row.host ?? 'unknown'}`) +
    `,\\"event_type\\":\\"${INSTANCE_UPDATE_EVENT}\\",\\"priority\\":\\"INFO\\",\\"payload\\":` +
    PAYLOAD_HEADS[version] +
    data +
    `},\\"timestamp\\":\\"${timestamp}\\",\\"_unique_id\\":\\"${ids.unique.replace(/-/g, '')}\\"` +
    `,\\"_context_request_id\\":\\"req-${ids.request}\\"` +
    CONTEXT_TAIL +
    `,\\"_context_remote_address\\":null,\\"_context_timestamp\\":\\"${texts.iso}${micros}\\"` +
    ',\\"_context_user_name\\":null,\\"_context_project_name\\":null}"}';
  return { messageId: ids.message, body: Buffer.from(body) };
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

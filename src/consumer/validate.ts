/**
 * Validation of what arrives on the consumer's queues. Anything that cannot be processed (not JSON,
 * not UTF-8, wrong or unknown schema, missing or ill-typed fields, absurd values) yields a reason
 * string, which goes with the message to the dead-letter exchange (header x-virtbus-reason). Unknown
 * extra fields are ignored (the schema's compatibility rule).
 */
import { TRANSITIONS, type Transition } from '../libvirt/translate';
import { LIFECYCLE_SCHEMA, unwrapLifecycleBody } from '../messages/lifecycle';
import { CloudEventError } from '../messages/cloudevents';
import type { MessageTrace } from '../tracing/consumer';
import { COMMAND_RESULT_SCHEMA, type CommandAction, type CommandOutcome } from '../messages/command';
import { isPowerStateCode } from '../store/types';
import { UUID_PATTERN } from '../store/input';
import { parseIsoMicros } from '../util/time';

/** A lifecycle message the consumer can act on, with times parsed and the UUID lower-cased. */
export interface LifecycleEventIn {
  readonly eventId: string;
  readonly host: string;
  /** null only for sync_end. */
  readonly instanceUuid: string | null;
  readonly transition: Transition;
  /** Live power_state sampled by the bridge; null when it could not read it (and for sync_end). */
  readonly powerState: number | null;
  readonly occurredUs: number;
  readonly seq: number;
  readonly bootId: string;
  readonly snapshot:
    | {
        readonly id: string;
        readonly takenUs: number;
        /** The bridge's periodic snapshot interval (seconds), when its message says (hosts view). */
        readonly intervalSeconds?: number;
      }
    | undefined;
  /** sync_end: every domain of the snapshot (lower-cased). */
  readonly instanceUuids: readonly string[] | undefined;
  /**
   * libvirt's event and detail codes (for sync: event_code -1 and the virDomainState); null when
   * the message has none. The detail tells a migration's STARTED/RESUMED/STOPPED from others.
   */
  readonly libvirt: { readonly eventCode: number; readonly detailCode: number | null } | null;
  /** Trace context from the message's traceparent header (set by the intake; src/tracing/consumer.ts). */
  readonly trace?: MessageTrace;
}

export interface CommandResultIn {
  readonly commandId: string;
  readonly action: CommandAction;
  readonly host: string;
  readonly instanceUuid: string;
  readonly outcome: CommandOutcome;
  readonly method: string;
  readonly powerState: number | null;
  readonly error: string | null;
  /**
   * The bridge's finished_at (epoch microseconds, the bridge's clock like occurred_at): a successful
   * result is a position in the row's event order. null when absent (then it is not one).
   */
  readonly finishedUs: number | null;
}

export type Validated<T> =
  { readonly ok: true; readonly value: T } | { readonly ok: false; readonly reason: string };

/** Earliest plausible occurred_at: libvirt lifecycle events did not exist before. */
const EARLIEST_US = Date.UTC(2000, 0, 1) * 1000;
const MAX_TEXT = 255;
/**
 * Most domains one sync_end may list. A hypervisor runs hundreds of guests at most; the bound keeps
 * one message from costing the consumer a million-row scan (a larger list is dead-lettered).
 */
export const MAX_SNAPSHOT = 100_000;
const OUTCOMES: readonly CommandOutcome[] = [
  'stopped',
  'already_stopped',
  'failed',
  'expired',
  'refused',
  'skipped',
  'not_found',
];

class Invalid extends Error {}

function fail(reason: string): never {
  throw new Invalid(reason);
}

function describe(value: unknown): string {
  if (value === undefined) return 'missing';
  const text = JSON.stringify(value) ?? typeof value;
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function text(record: Record<string, unknown>, key: string, max = MAX_TEXT): string {
  const value = record[key];
  if (value === undefined) fail(`missing field ${key}`);
  if (typeof value !== 'string') fail(`field ${key}: expected a string, got ${describe(value)}`);
  if (value.length === 0) fail(`field ${key}: empty`);
  if (value.length > max) fail(`field ${key}: longer than ${max} characters`);
  return value;
}

function uuid(value: unknown, key: string): string {
  if (typeof value !== 'string' || !UUID_PATTERN.test(value))
    fail(`field ${key}: not a UUID (${describe(value)})`);
  return value.toLowerCase();
}

function time(record: Record<string, unknown>, key: string, maxFutureUs: number): number {
  const value = text(record, key, 40);
  const micros = parseIsoMicros(value);
  if (Number.isNaN(micros)) fail(`field ${key}: not an ISO-8601 UTC time (${describe(value)})`);
  if (micros < EARLIEST_US) fail(`field ${key}: ${value} is before 2000`);
  if (micros > maxFutureUs) fail(`field ${key}: ${value} lies in the future beyond the allowed clock skew`);
  return micros;
}

/** Strict UTF-8 (a malformed sequence throws instead of becoming U+FFFD); stateless between calls. */
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

function parseJson(body: Buffer): unknown {
  let textBody: string;
  try {
    textBody = UTF8.decode(body);
  } catch {
    fail('body is not UTF-8');
  }
  try {
    return JSON.parse(textBody) as unknown;
  } catch (error) {
    fail(`body is not JSON: ${(error as Error).message}`);
  }
}

function object(value: unknown, what: string): Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    fail(`${what} is not a JSON object`);
  return value as Record<string, unknown>;
}

function wrap<T>(validate: () => T): Validated<T> {
  try {
    return { ok: true, value: validate() };
  } catch (error) {
    if (error instanceof Invalid) return { ok: false, reason: error.message };
    return { ok: false, reason: `unreadable message: ${(error as Error).message}` };
  }
}

/**
 * A lifecycle body in any accepted format (plain virtbus object, which is also a binary-mode
 * CloudEvent's body, oslo v2 envelope, oslo v1 message, structured CloudEvent).
 * @param nowUs the consumer's clock, for the future-skew bound.
 * @param trace the message's trace context (src/tracing/consumer.ts), carried on the event.
 */
export function validateLifecycle(
  body: Buffer,
  nowUs: number,
  maxFutureSkewMs: number,
  trace?: MessageTrace,
): Validated<LifecycleEventIn> {
  return wrap(() => {
    let inner: unknown;
    try {
      inner = unwrapLifecycleBody(parseJson(body));
    } catch (error) {
      if (error instanceof Invalid) throw error;
      if (error instanceof CloudEventError) fail(error.message);
      fail(`oslo.message is not JSON: ${(error as Error).message}`);
    }
    const record = object(inner, 'the message');
    if (record.schema === undefined) fail('missing field schema');
    if (record.schema !== LIFECYCLE_SCHEMA)
      fail(`unknown schema ${describe(record.schema)} (this consumer reads ${LIFECYCLE_SCHEMA})`);
    const maxFutureUs = nowUs + maxFutureSkewMs * 1000;
    const eventId = text(record, 'event_id', 100);
    const host = text(record, 'host');
    const transitionValue = record.transition;
    if (transitionValue === undefined) fail('missing field transition');
    if (typeof transitionValue !== 'string' || !(TRANSITIONS as readonly string[]).includes(transitionValue))
      fail(`field transition: unknown transition ${describe(transitionValue)}`);
    const transition = transitionValue as Transition;
    if (!('instance_uuid' in record)) fail('missing field instance_uuid');
    const instanceUuid =
      transition === 'sync_end'
        ? record.instance_uuid === null
          ? null
          : fail('field instance_uuid: must be null in sync_end')
        : uuid(record.instance_uuid, 'instance_uuid');
    if (!('power_state' in record)) fail('missing field power_state');
    const power = record.power_state;
    if (power !== null && !isPowerStateCode(power))
      fail(`field power_state: ${describe(power)} is not a Nova power_state code (0, 1, 3, 4, 6, 7) or null`);
    const occurredUs = time(record, 'occurred_at', maxFutureUs);
    const seq = record.seq;
    if (seq === undefined) fail('missing field seq');
    if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0)
      fail(`field seq: expected a non-negative integer, got ${describe(seq)}`);
    const bootId = text(record, 'boot_id', 100);
    let snapshot: LifecycleEventIn['snapshot'];
    if (record.snapshot !== undefined && record.snapshot !== null) {
      const snap = object(record.snapshot, 'field snapshot');
      // A snapshot without taken_at (docs/message-format.md: {id, reason, count, taken_at}) counts
      // as taken when its messages say they occurred.
      const takenUs =
        snap.taken_at === undefined || snap.taken_at === null
          ? occurredUs
          : time(snap, 'taken_at', maxFutureUs);
      const interval = snap.interval_seconds;
      if (
        interval !== undefined &&
        interval !== null &&
        (typeof interval !== 'number' || !Number.isSafeInteger(interval) || interval < 0)
      )
        fail(`field snapshot.interval_seconds: expected a non-negative integer, got ${describe(interval)}`);
      snapshot = {
        id: text(snap, 'id', 100),
        takenUs,
        ...(typeof interval === 'number' ? { intervalSeconds: interval } : {}),
      };
    }
    let libvirt: LifecycleEventIn['libvirt'] = null;
    if (record.libvirt !== undefined && record.libvirt !== null) {
      const codes = object(record.libvirt, 'field libvirt');
      const eventCode = codes.event_code;
      const detailCode = codes.detail_code;
      if (typeof eventCode !== 'number' || !Number.isSafeInteger(eventCode))
        fail(`field libvirt.event_code: expected an integer, got ${describe(eventCode)}`);
      if (
        detailCode !== null &&
        detailCode !== undefined &&
        (typeof detailCode !== 'number' || !Number.isSafeInteger(detailCode))
      )
        fail(`field libvirt.detail_code: expected an integer or null, got ${describe(detailCode)}`);
      libvirt = { eventCode, detailCode: typeof detailCode === 'number' ? detailCode : null };
    }
    let instanceUuids: string[] | undefined;
    if (transition === 'sync_end') {
      if (!snapshot) fail('sync_end without snapshot');
      const list = record.instance_uuids;
      if (!Array.isArray(list)) fail(`field instance_uuids: expected an array, got ${describe(list)}`);
      if (list.length > MAX_SNAPSHOT) fail(`field instance_uuids: more than ${MAX_SNAPSHOT} entries`);
      instanceUuids = list.map((item, index) => uuid(item, `instance_uuids[${index}]`));
    }
    return {
      eventId,
      host,
      instanceUuid,
      transition,
      powerState: power,
      occurredUs,
      seq,
      bootId,
      snapshot,
      instanceUuids,
      libvirt,
      trace, // the message's trace context, from its headers (issue 13)
    };
  });
}

/**
 * A stop-command result from a bridge.
 * @param nowUs the consumer's clock, for the future-skew bound on finished_at.
 */
export function validateCommandResult(
  body: Buffer,
  nowUs: number,
  maxFutureSkewMs: number,
): Validated<CommandResultIn> {
  return wrap(() => {
    const record = object(parseJson(body), 'the message');
    if (record.schema !== COMMAND_RESULT_SCHEMA)
      fail(`unknown schema ${describe(record.schema)} (this consumer reads ${COMMAND_RESULT_SCHEMA})`);
    const action = record.action;
    if (action !== 'stop' && action !== 'force_stop')
      fail(`field action: unknown action ${describe(action)}`);
    const outcome = record.outcome;
    if (typeof outcome !== 'string' || !(OUTCOMES as readonly string[]).includes(outcome))
      fail(`field outcome: unknown outcome ${describe(outcome)}`);
    if (!('power_state' in record)) fail('missing field power_state');
    const power = record.power_state;
    if (power !== null && !isPowerStateCode(power))
      fail(`field power_state: ${describe(power)} is not a Nova power_state code (0, 1, 3, 4, 6, 7) or null`);
    const error = record.error;
    if (error !== undefined && error !== null && typeof error !== 'string')
      fail(`field error: expected a string or null, got ${describe(error)}`);
    return {
      commandId: uuid(record.command_id, 'command_id'),
      action,
      host: text(record, 'host'),
      instanceUuid: uuid(record.instance_uuid, 'instance_uuid'),
      outcome: outcome as CommandOutcome,
      method: typeof record.method === 'string' ? record.method : 'none',
      powerState: power,
      error: typeof error === 'string' ? error.slice(0, 1000) : null,
      finishedUs:
        record.finished_at === undefined || record.finished_at === null
          ? null
          : time(record, 'finished_at', nowUs + maxFutureSkewMs * 1000),
    };
  });
}

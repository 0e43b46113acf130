/**
 * Sender verification: a message about host B is believed only when host B sent it. A lifecycle
 * message or a stop result names its host twice outside its body — in the routing key's first word
 * (the bridge's host segment, which broker topic permissions can pin to the publishing user) and in
 * the AMQP `user_id` property (which RabbitMQ checks equals the authenticated user, so it cannot be
 * forged) — and the body's `host` must agree with both. Without this, one host's stolen credential
 * could report another host's guests stopped, mark its rows NOSTATE with an empty `sync_end`, or make
 * the consumer stop a running guest elsewhere (issue 10).
 *
 * Modes: `strict` (default) checks the routing key and the user, and a message without `user_id`
 * is unverified; `routing-key` checks only the routing key (a broker whose topic permissions already
 * tie users to segments, during a migration to per-host users); `off` checks nothing (tests,
 * single-host labs). The expected user name is a template over the host segment, `{segment}` by
 * default (one broker user per host whose name is its segment), e.g. `bridge-{segment}`.
 */
import { hostSegment } from '../messages/lifecycle';

export const SENDER_MODES = ['strict', 'routing-key', 'off'] as const;
export type SenderMode = (typeof SENDER_MODES)[number];

export interface SenderPolicy {
  readonly mode: string;
  /** The broker user expected for a host: `{segment}` is replaced by the host's routing segment. */
  readonly userTemplate: string;
}

/** Why a sender was not believed; a fixed set, used as the metric label. */
export type SenderRejection = 'routing_key_mismatch' | 'no_user_id' | 'user_mismatch' | 'forged_replay';

export interface SenderVerdict {
  readonly rejection: SenderRejection;
  /** For the dead-letter reason header (names hosts: never a metric label). */
  readonly reason: string;
}

export const SEGMENT_PLACEHOLDER = '{segment}';

export function expectedUser(userTemplate: string, host: string): string {
  return userTemplate.split(SEGMENT_PLACEHOLDER).join(hostSegment(host));
}

/**
 * Checks a message's sender against the host its body names.
 * @param bodyHost the validated body's `host`
 * @param routingKey the routing key it was published with (`<segment>.<transition>` or `<segment>.stop_result`)
 * @param userId the AMQP `user_id` property as delivered (anything, or undefined)
 * @returns undefined when the sender is verified (or the mode checks nothing), else why not
 */
export function verifySender(
  policy: SenderPolicy,
  bodyHost: string,
  routingKey: string,
  userId: unknown,
): SenderVerdict | undefined {
  if (policy.mode === 'off') return undefined;
  const segment = hostSegment(bodyHost);
  const keySegment = routingKey.split('.', 1)[0] ?? '';
  if (keySegment !== segment)
    return {
      rejection: 'routing_key_mismatch',
      reason: `sender not verified: body host ${JSON.stringify(bodyHost)} (segment ${segment}) does not match the routing key's host segment ${JSON.stringify(keySegment)}`,
    };
  if (policy.mode === 'routing-key') return undefined;
  if (typeof userId !== 'string' || userId === '')
    return {
      rejection: 'no_user_id',
      reason: `sender not verified: no user_id property (strict mode needs the broker-verified publishing user, expected ${JSON.stringify(expectedUser(policy.userTemplate, bodyHost))})`,
    };
  const expected = expectedUser(policy.userTemplate, bodyHost);
  if (userId !== expected)
    return {
      rejection: 'user_mismatch',
      reason: `sender not verified: published by broker user ${JSON.stringify(userId.slice(0, 100))}, but host ${JSON.stringify(bodyHost)} publishes as ${JSON.stringify(expected)}`,
    };
  return undefined;
}

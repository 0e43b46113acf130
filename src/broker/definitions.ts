/**
 * RabbitMQ definitions for a virtbus deployment, generated for a list of hypervisor hosts.
 *
 * Why generated: every bridge must authenticate as its own broker user whose name is the host's
 * routing segment, so that the broker itself refuses host A publishing `B.*` or reading B's command
 * queue. RabbitMQ expands `{username}` only in topic permissions, not in the configure/write/read
 * patterns, so one static file cannot express "each bridge reads only its own queue": the per-host
 * users, permissions, command queues and bindings are written out for each host, next to the shared
 * part (exchanges, the consumer's queues, dead-letter, unroutable, notifications, policies).
 *
 * The shared objects are taken from the code's own topology functions and the effective
 * configuration, so the definitions declare exactly what the consumer redeclares (RabbitMQ answers
 * PRECONDITION_FAILED to a redeclaration with other arguments). Byte caps live in policies, not in
 * queue arguments, for the same reason. Passwords never appear in clear: users carry RabbitMQ's
 * salted SHA-256 `password_hash`, or none at all (client-certificate login, or set later).
 */
import { createHash, createHmac } from 'node:crypto';
import type { Topology } from '../amqp/topology';
import type { VirtbusConfig } from '../config/load';
import { consumerTopology } from '../consumer/topology';
import { commandQueueName, commandResultRoutingKey, commandRoutingKey } from '../messages/command';
import { hostSegment } from '../messages/lifecycle';
import { notificationRoutingKey } from '../notify/instance-update';
import { notificationQueue } from '../notify/notifier';

export const DEFAULT_VHOST = 'virtbus';
export const DEFAULT_CONSUMER_USER = 'virtbus-consumer';
export const DEFAULT_OBSERVER_USER = 'virtbus-observer';
/** Matches no name at all: a user with this configure pattern can declare, delete or change nothing. */
export const NOTHING = '^$';

/** Byte caps of the policies (see docs/security.md, "Bounded input", for the reasoning). */
export const QUEUE_CAPS = {
  /** Lifecycle events waiting for the consumers: reject-publish, the bridges keep them in their outbox. */
  consumerBytes: 512 * 1024 ** 2,
  /** Command results: reject-publish, the bridge retries the result. */
  resultBytes: 64 * 1024 ** 2,
  /** One host's pending stop commands: reject-publish, the consumer's publish fails and it records why. */
  commandBytes: 8 * 1024 ** 2,
  /** Nobody consumes these: the newest are kept, the oldest dropped. */
  unroutableLength: 100_000,
  unroutableBytes: 64 * 1024 ** 2,
  deadLetterLength: 100_000,
  deadLetterBytes: 256 * 1024 ** 2,
  notificationLength: 10_000,
  notificationBytes: 100 * 1024 ** 2,
  commandDeliveryLimit: 10,
} as const;

/**
 * Per-user connection and channel limits of the bridge users: one bridge opens one connection with
 * three channels; the slack covers a restart overlapping the old connection's close.
 */
export const BRIDGE_USER_LIMITS = { 'max-connections': 4, 'max-channels': 32 } as const;

/** The configuration keys the definitions depend on (names of exchanges, queues, the topic). */
export type DefinitionsConfig = Pick<VirtbusConfig, 'amqp' | 'consumer'>;

export interface DefinitionsOptions {
  /** Hypervisor host names as Nova knows them (CONF.host); each becomes the user `hostSegment(host)`. */
  readonly hosts: readonly string[];
  readonly config: DefinitionsConfig;
  readonly vhost?: string;
  readonly consumerUser?: string;
  readonly observerUser?: string;
  /**
   * user name → clear password, hashed into `password_hash`. A user without an entry gets an empty
   * hash: nobody can log in with a password (client-certificate login, or `rabbitmqctl
   * change_password` later).
   */
  readonly passwords?: ReadonlyMap<string, string>;
}

export interface DefinitionsUser {
  name: string;
  password_hash: string;
  hashing_algorithm: 'rabbit_password_hashing_sha256';
  tags: string[];
  limits: Record<string, number>;
}
export interface DefinitionsPermission {
  user: string;
  vhost: string;
  configure: string;
  write: string;
  read: string;
}
export interface DefinitionsTopicPermission {
  user: string;
  vhost: string;
  exchange: string;
  write: string;
  read: string;
}
export interface DefinitionsPolicy {
  vhost: string;
  name: string;
  pattern: string;
  'apply-to': 'queues';
  priority: number;
  definition: Record<string, unknown>;
}
export interface DefinitionsQueue {
  name: string;
  vhost: string;
  durable: boolean;
  auto_delete: boolean;
  arguments: Record<string, unknown>;
}
export interface DefinitionsExchange {
  name: string;
  vhost: string;
  type: string;
  durable: boolean;
  auto_delete: boolean;
  internal: boolean;
  arguments: Record<string, unknown>;
}
export interface DefinitionsBinding {
  source: string;
  vhost: string;
  destination: string;
  destination_type: 'queue' | 'exchange';
  routing_key: string;
  arguments: Record<string, unknown>;
}

export interface Definitions {
  rabbit_version: string;
  rabbitmq_version: string;
  product_name: string;
  product_version: string;
  vhosts: Array<{ name: string; metadata: { description: string; tags: string[] } }>;
  users: DefinitionsUser[];
  permissions: DefinitionsPermission[];
  topic_permissions: DefinitionsTopicPermission[];
  parameters: unknown[];
  global_parameters: unknown[];
  policies: DefinitionsPolicy[];
  queues: DefinitionsQueue[];
  exchanges: DefinitionsExchange[];
  bindings: DefinitionsBinding[];
}

export class DefinitionsError extends Error {
  override readonly name = 'DefinitionsError';
}

/** A regular expression matching exactly this literal name. */
export function exactly(...names: readonly string[]): string {
  const escaped = [...new Set(names)].map((name) => name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  return escaped.length === 1 ? `^${escaped[0]}$` : `^(${escaped.join('|')})$`;
}

/**
 * RabbitMQ's `rabbit_password_hashing_sha256`: base64(salt ‖ SHA-256(salt ‖ password)) with a 4-byte
 * salt. The salt is derived from the user and the password (HMAC), so regenerating the definitions
 * with the same password files gives the same file (no spurious diff in configuration management);
 * it is still unique per user and per password.
 */
export function rabbitPasswordHash(user: string, password: string): string {
  const salt = createHmac('sha256', password).update(user).digest().subarray(0, 4);
  const digest = createHash('sha256')
    .update(Buffer.concat([salt, Buffer.from(password, 'utf8')]))
    .digest();
  return Buffer.concat([salt, digest]).toString('base64');
}

/** Whether `password` matches a `rabbit_password_hashing_sha256` hash (what the broker checks). */
export function passwordMatches(hash: string, password: string): boolean {
  const raw = Buffer.from(hash, 'base64');
  if (raw.length !== 36) return false;
  const salt = raw.subarray(0, 4);
  const digest = createHash('sha256')
    .update(Buffer.concat([salt, Buffer.from(password, 'utf8')]))
    .digest();
  return digest.equals(raw.subarray(4));
}

/** One entry per host, in the order given; the segments must be distinct and not a service user. */
export function bridgeUsers(
  hosts: readonly string[],
  reserved: readonly string[],
): Array<{ host: string; user: string }> {
  if (hosts.length === 0) throw new DefinitionsError('no hosts given');
  const seen = new Map<string, string>();
  return hosts.map((host) => {
    if (host.trim() === '' || host !== host.trim())
      throw new DefinitionsError(`host name ${JSON.stringify(host)} is empty or has surrounding spaces`);
    const user = hostSegment(host);
    const previous = seen.get(user);
    if (previous !== undefined)
      throw new DefinitionsError(
        `hosts ${previous} and ${host} share the routing segment ${user}: one broker identity cannot serve two hosts`,
      );
    if (reserved.includes(user))
      throw new DefinitionsError(`host ${host} has the segment ${user}, the name of a service user`);
    seen.set(user, host);
    return { host, user };
  });
}

/** Host names from "h1,h2" or from the text of a hosts file (one per line, # comments). */
export function parseHostList(text: string): string[] {
  return text
    .split(/[\n,]/)
    .map((line) => line.replace(/#.*$/, '').trim())
    .filter((line) => line.length > 0);
}

function user(
  name: string,
  passwords: ReadonlyMap<string, string> | undefined,
  limits = {},
): DefinitionsUser {
  const password = passwords?.get(name);
  return {
    name,
    password_hash: password === undefined ? '' : rabbitPasswordHash(name, password),
    hashing_algorithm: 'rabbit_password_hashing_sha256',
    tags: [],
    limits: { ...limits },
  };
}

/** The shared topology: what the consumer declares, plus oslo's notification exchange and queue. */
export function sharedTopology(config: DefinitionsConfig): {
  topology: Topology;
  notificationExchange: { name: string; durable: boolean };
} {
  const notifications = config.consumer.notifications;
  const queue = notificationQueue(notifications.topic, notifications.durable);
  const consumer = consumerTopology(config);
  return {
    topology: {
      exchanges: consumer.exchanges,
      queues: [...consumer.queues, queue],
      bindings: [
        ...consumer.bindings,
        {
          queue: queue.name,
          exchange: notifications.exchange,
          pattern: notificationRoutingKey(notifications.topic),
        },
      ],
    },
    notificationExchange: { name: notifications.exchange, durable: notifications.durable },
  };
}

/** A host's command queue as the bridge (in dev mode, bridge.declareTopology) declares it. */
export function hostCommandTopology(host: string, commandExchange: string): Topology {
  return {
    exchanges: [],
    queues: [{ name: commandQueueName(host), durable: true, arguments: { 'x-queue-type': 'quorum' } }],
    bindings: [
      { queue: commandQueueName(host), exchange: commandExchange, pattern: commandRoutingKey(host) },
    ],
  };
}

export function generateDefinitions(options: DefinitionsOptions): Definitions {
  const { config } = options;
  const vhost = options.vhost ?? DEFAULT_VHOST;
  const consumerUser = options.consumerUser ?? DEFAULT_CONSUMER_USER;
  const observerUser = options.observerUser ?? DEFAULT_OBSERVER_USER;
  if (consumerUser === observerUser)
    throw new DefinitionsError('the consumer and observer users must differ');
  const bridges = bridgeUsers(options.hosts, [consumerUser, observerUser]);
  const { amqp, consumer } = config;
  const notifications = consumer.notifications;
  const shared = sharedTopology(config);
  const notificationQ = notificationQueue(notifications.topic, notifications.durable);
  const notificationKey = notificationRoutingKey(notifications.topic);
  const perHost = bridges.map(({ host }) => hostCommandTopology(host, amqp.commandExchange));

  const users: DefinitionsUser[] = [
    ...bridges.map((b) => user(b.user, options.passwords, BRIDGE_USER_LIMITS)),
    user(consumerUser, options.passwords),
    user(observerUser, options.passwords),
  ];

  const permissions: DefinitionsPermission[] = [
    // A bridge configures nothing (the definitions declare everything; it declares passively), writes
    // (publishes) only to the lifecycle and command exchanges — which keys, the topic permissions
    // below decide — and reads only its own command queue. No read on any exchange: it cannot bind
    // anything, so no exchange-to-exchange or queue binding can reroute commands or events.
    ...bridges.map((b): DefinitionsPermission => ({
      user: b.user,
      vhost,
      configure: NOTHING,
      write: exactly(amqp.exchange, amqp.commandExchange),
      read: exactly(commandQueueName(b.host)),
    })),
    // The consumer declares its topology on every connect (exchanges, its queues, bindings; the
    // lifecycle exchange with its alternate exchange needs write on the alternate exchange), publishes
    // commands, dead letters and notifications, and consumes its two queues. `virtbus dead-letters
    // replay`, as the consumer, publishes to its own queues through the default exchange (write on
    // amq.default): nothing it could not do already — the queues take only what the consumer checks
    // as from the original sender, and a bridge checks every command's user and host itself.
    {
      user: consumerUser,
      vhost,
      configure: exactly(
        amqp.exchange,
        amqp.unroutableExchange,
        amqp.commandExchange,
        consumer.deadLetterExchange,
        consumer.deadLetterQueue,
        consumer.queue,
        consumer.resultQueue,
        notifications.exchange,
        notificationQ.name,
      ),
      write: exactly(
        'amq.default',
        amqp.unroutableExchange,
        amqp.commandExchange,
        consumer.deadLetterExchange,
        consumer.deadLetterQueue,
        consumer.queue,
        consumer.resultQueue,
        notifications.exchange,
        notificationQ.name,
      ),
      read: exactly(
        amqp.exchange,
        amqp.unroutableExchange,
        amqp.commandExchange,
        consumer.deadLetterExchange,
        consumer.deadLetterQueue,
        consumer.queue,
        consumer.resultQueue,
        notifications.exchange,
      ),
    },
    // `virtbus tail`: its own exclusive server-named queue bound to the lifecycle exchange.
    {
      user: observerUser,
      vhost,
      configure: '^amq\\.gen-.*$',
      write: '^amq\\.gen-.*$',
      read: `^(${exactly(amqp.exchange).slice(1, -1)}|amq\\.gen-.*)$`,
    },
  ];

  // Topic permissions: a user without an entry for an exchange may use any routing key on it, so
  // every topic exchange a user may write to gets an entry.
  const topic_permissions: DefinitionsTopicPermission[] = [
    ...bridges.flatMap(({ host, user: name }): DefinitionsTopicPermission[] => [
      {
        user: name,
        vhost,
        exchange: amqp.exchange,
        write: `^${hostSegment(host)}\\.[a-z_]+$`,
        read: NOTHING,
      },
      {
        user: name,
        vhost,
        exchange: amqp.commandExchange,
        write: exactly(commandResultRoutingKey(host)),
        read: NOTHING,
      },
    ]),
    {
      user: consumerUser,
      vhost,
      exchange: amqp.commandExchange,
      write: '^[a-z0-9_-]+\\.stop$',
      read: '^([a-z0-9_-]+|\\*)\\.stop_result$',
    },
    {
      user: consumerUser,
      vhost,
      exchange: notifications.exchange,
      write: exactly(notificationKey),
      read: exactly(notificationKey),
    },
  ];

  // commandQueueName() is virtbus.commands.<segment>, whatever the exchange is called.
  const commandQueuePattern = '^virtbus\\.commands\\.[a-z0-9_-]+$';
  const policy = (name: string, pattern: string, definition: Record<string, unknown>): DefinitionsPolicy => ({
    vhost,
    name,
    pattern,
    'apply-to': 'queues',
    priority: 10,
    definition,
  });
  const policies: DefinitionsPolicy[] = [
    policy('virtbus-consumer', exactly(consumer.queue), {
      'max-length-bytes': QUEUE_CAPS.consumerBytes,
      overflow: 'reject-publish',
    }),
    policy('virtbus-results', exactly(consumer.resultQueue), {
      'max-length-bytes': QUEUE_CAPS.resultBytes,
      overflow: 'reject-publish',
    }),
    policy('virtbus-commands', commandQueuePattern, {
      'delivery-limit': QUEUE_CAPS.commandDeliveryLimit,
      'dead-letter-exchange': consumer.deadLetterExchange,
      'max-length-bytes': QUEUE_CAPS.commandBytes,
      overflow: 'reject-publish',
    }),
    policy('virtbus-unroutable', exactly(amqp.unroutableExchange), {
      'max-length': QUEUE_CAPS.unroutableLength,
      'max-length-bytes': QUEUE_CAPS.unroutableBytes,
      overflow: 'drop-head',
    }),
    policy('virtbus-dead-letter', exactly(consumer.deadLetterQueue), {
      'max-length': QUEUE_CAPS.deadLetterLength,
      'max-length-bytes': QUEUE_CAPS.deadLetterBytes,
      overflow: 'drop-head',
    }),
    policy('virtbus-notifications', exactly(notificationQ.name), {
      'max-length': QUEUE_CAPS.notificationLength,
      'max-length-bytes': QUEUE_CAPS.notificationBytes,
      overflow: 'drop-head',
    }),
  ];

  const queues: DefinitionsQueue[] = [...shared.topology.queues, ...perHost.flatMap((t) => t.queues)].map(
    (q) => ({
      name: q.name,
      vhost,
      durable: q.durable,
      auto_delete: false,
      arguments: { ...(q.arguments ?? {}) },
    }),
  );
  const exchanges: DefinitionsExchange[] = [
    ...shared.topology.exchanges.map((e) => ({
      name: e.name,
      durable: e.durable,
      type: e.type,
      arguments: { ...(e.arguments ?? {}) },
    })),
    { ...shared.notificationExchange, type: 'topic', arguments: {} },
  ].map((e) => ({
    name: e.name,
    vhost,
    type: e.type,
    durable: e.durable,
    auto_delete: false,
    internal: false,
    arguments: e.arguments,
  }));
  const bindings: DefinitionsBinding[] = [
    ...shared.topology.bindings,
    ...perHost.flatMap((t) => t.bindings),
  ].map((b) => ({
    source: b.exchange,
    vhost,
    destination: b.queue,
    destination_type: 'queue',
    routing_key: b.pattern,
    arguments: {},
  }));

  return {
    rabbit_version: '3.10.8',
    rabbitmq_version: '3.10.8',
    product_name: 'virtbus',
    product_version: '0.1.0',
    vhosts: [
      {
        name: vhost,
        metadata: { description: 'virtbus lifecycle events, stop commands and notifications', tags: [] },
      },
    ],
    users,
    permissions,
    topic_permissions,
    parameters: [],
    global_parameters: [],
    policies,
    queues,
    exchanges,
    bindings,
  };
}

/** The file as written: stable key order, two-space indent, trailing newline. */
export function formatDefinitions(definitions: Definitions): string {
  return `${JSON.stringify(definitions, null, 2)}\n`;
}

/**
 * The configuration schema: every key virtbus reads, with its doc, format, default, environment
 * variable and command-line flag. Sources, lowest to highest: these defaults → config/default.json →
 * files named in VIRTBUS_CONFIG (comma-separated) → environment → command-line flags.
 * `docs/configuration.md` and README's table are generated from this file (scripts/gen-config-doc).
 */
import { hostname } from 'node:os';

/** A convict format: an array of non-empty strings (env: comma-separated). */
const stringList = {
  name: 'string-list',
  validate(value: unknown): void {
    if (!Array.isArray(value) || value.some((item) => typeof item !== 'string' || item.length === 0)) {
      throw new Error('must be a list of non-empty strings');
    }
  },
  coerce(value: unknown): unknown {
    return typeof value === 'string'
      ? value
          .split(',')
          .map((item) => item.trim())
          .filter((item) => item.length > 0)
      : value;
  },
};

/** A TCP port, or null for "the role's default". */
const optionalPort = {
  name: 'optional-port',
  validate(value: unknown): void {
    if (value === null) return;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 65535) {
      throw new Error('must be an integer port 0-65535 (0 = pick a free port)');
    }
  },
  coerce(value: unknown): unknown {
    return typeof value === 'string' && value !== '' ? Number(value) : value;
  },
};

/** One or more AMQP URLs (comma-separated): the bridge and consumer round-robin over them. */
const amqpUrls = {
  name: 'amqp-urls',
  validate(value: unknown): void {
    if (typeof value !== 'string' || value.trim() === '')
      throw new Error('must be an amqp:// or amqps:// URL');
    for (const url of value.split(',')) {
      let parsed: URL;
      try {
        parsed = new URL(url.trim());
      } catch {
        throw new Error('must be an amqp:// or amqps:// URL (comma-separated for a cluster)');
      }
      if (parsed.protocol !== 'amqp:' && parsed.protocol !== 'amqps:') {
        throw new Error(`scheme ${parsed.protocol} is not amqp: or amqps:`);
      }
    }
  },
};

/** sqlite:<path> or postgres://… */
const dbUrl = {
  name: 'db-url',
  validate(value: unknown): void {
    if (typeof value !== 'string' || !/^(sqlite:.+|postgres(ql)?:\/\/.+)$/.test(value)) {
      throw new Error('must be sqlite:<path> or postgres://user@host:port/db');
    }
  },
};

/** An AMQP topic-exchange or queue name: non-empty, at most 255 bytes. */
const amqpName = {
  name: 'amqp-name',
  validate(value: unknown): void {
    if (typeof value !== 'string' || value.length === 0 || Buffer.byteLength(value) > 255) {
      throw new Error('must be a non-empty name of at most 255 bytes');
    }
  },
};

const positiveInt = {
  name: 'positive-int',
  validate(value: unknown): void {
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 1)
      throw new Error('must be an integer >= 1');
  },
  coerce: (value: unknown): unknown => (typeof value === 'string' && value !== '' ? Number(value) : value),
};

/** consumer.prefetch: bounded, because every unacknowledged message (up to consumer.maxMessageBytes each) is held in memory. */
export const MAX_PREFETCH = 1000;
const prefetch = {
  name: 'prefetch',
  validate(value: unknown): void {
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > MAX_PREFETCH)
      throw new Error(`must be an integer from 1 to ${MAX_PREFETCH}`);
  },
  coerce: positiveInt.coerce,
};

/** consumer.senders.userTemplate: a broker user name pattern that names the host ({segment}). */
const senderUserTemplate = {
  name: 'sender-user-template',
  validate(value: unknown): void {
    if (typeof value !== 'string' || !value.includes('{segment}'))
      throw new Error('must contain {segment} (each host publishes as its own broker user)');
  },
};

export const customFormats = [
  stringList,
  optionalPort,
  amqpUrls,
  dbUrl,
  amqpName,
  positiveInt,
  prefetch,
  senderUserTemplate,
];

export const schema = {
  host: {
    doc: "This hypervisor host as the instance database knows it (Nova's CONF.host); the routing-key host segment is derived from it.",
    format: String,
    default: hostname(),
    env: 'VIRTBUS_HOST',
    arg: 'host',
  },
  log: {
    level: {
      doc: 'Log level (pino): fatal, error, warn, info, debug, trace or silent.',
      format: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'],
      default: 'info',
      env: 'VIRTBUS_LOG_LEVEL',
      arg: 'log-level',
    },
    format: {
      doc: 'Log line format: auto (human-readable lines when stdout is a terminal, JSON lines otherwise), json (pino JSON lines, for collectors) or pretty (human-readable lines).',
      format: ['auto', 'json', 'pretty'],
      default: 'auto',
      env: 'VIRTBUS_LOG_FORMAT',
      arg: 'log-format',
    },
  },
  metrics: {
    host: {
      doc: 'Address the /metrics, /healthz and /readyz server binds to (loopback by default).',
      format: String,
      default: '127.0.0.1',
      env: 'VIRTBUS_METRICS_HOST',
      arg: 'metrics-host',
    },
    port: {
      doc: 'Port of the metrics server: null = the role default (bridge 9478, consumer 9479); 0 = pick a free port and log it.',
      format: 'optional-port',
      default: null as number | null,
      env: 'VIRTBUS_METRICS_PORT',
      arg: 'metrics-port',
    },
  },
  libvirt: {
    uri: {
      doc: 'libvirt connection URI (qemu:///system, qemu+tls://host/system, qemu+ssh://…, test+unix:///default?socket=…).',
      format: String,
      default: 'qemu:///system',
      env: 'VIRTBUS_LIBVIRT_URI',
      arg: 'libvirt-uri',
    },
    readOnly: {
      doc: 'Open the libvirt connection read-only (events and state only; stop commands are then refused).',
      format: Boolean,
      default: false,
      env: 'VIRTBUS_LIBVIRT_READONLY',
    },
    keepaliveInterval: {
      doc: 'Seconds between libvirt keepalive probes (0 disables keepalive).',
      format: 'nat',
      default: 5,
      env: 'VIRTBUS_LIBVIRT_KEEPALIVE_INTERVAL',
    },
    keepaliveCount: {
      doc: 'Unanswered keepalive probes after which the libvirt connection is declared dead.',
      format: 'positive-int',
      default: 3,
      env: 'VIRTBUS_LIBVIRT_KEEPALIVE_COUNT',
    },
    username: {
      doc: 'Username answered to libvirt SASL authentication (empty: none).',
      format: String,
      default: '',
      env: 'VIRTBUS_LIBVIRT_USERNAME',
    },
    password: {
      doc: 'Password answered to libvirt SASL authentication (also VIRTBUS_LIBVIRT_PASSWORD_FILE).',
      format: String,
      default: '',
      sensitive: true,
      env: 'VIRTBUS_LIBVIRT_PASSWORD',
    },
    reconnectInitialDelayMs: {
      doc: 'First delay before reconnecting to libvirt after a loss; doubles up to reconnectMaxDelayMs, with jitter.',
      format: 'positive-int',
      default: 500,
      env: 'VIRTBUS_LIBVIRT_RECONNECT_INITIAL_DELAY_MS',
    },
    reconnectMaxDelayMs: {
      doc: 'Largest delay between libvirt reconnect attempts.',
      format: 'positive-int',
      default: 30000,
      env: 'VIRTBUS_LIBVIRT_RECONNECT_MAX_DELAY_MS',
    },
  },
  amqp: {
    url: {
      doc: 'Broker URL, amqp:// or amqps:// (comma-separated URLs of a cluster are tried round-robin). Also VIRTBUS_AMQP_URL_FILE.',
      format: 'amqp-urls',
      default: 'amqp://localhost:5672',
      sensitive: true,
      env: 'VIRTBUS_AMQP_URL',
      arg: 'amqp-url',
    },
    user: {
      doc: "Broker user name this process authenticates as, sent as the AMQP user_id of what it publishes (the broker refuses a user_id that is not the connection's user, so receivers can trust it). Empty: the user named in amqp.url, or guest when the URL names none (the client's default). Set it when authenticating by client certificate (EXTERNAL): the certificate's user name.",
      format: String,
      default: '',
      env: 'VIRTBUS_AMQP_USER',
    },
    exchange: {
      doc: 'Topic exchange lifecycle messages are published to (durable).',
      format: 'amqp-name',
      default: 'virtbus.lifecycle',
      env: 'VIRTBUS_EXCHANGE',
      arg: 'exchange',
    },
    unroutableExchange: {
      doc: 'Alternate exchange of the lifecycle exchange: messages no binding matches are kept in the queue of the same name instead of being lost.',
      format: 'amqp-name',
      default: 'virtbus.unroutable',
      env: 'VIRTBUS_UNROUTABLE_EXCHANGE',
    },
    commandExchange: {
      doc: 'Topic exchange carrying stop commands (consumer → bridge) and their outcomes (bridge → consumer).',
      format: 'amqp-name',
      default: 'virtbus.commands',
      env: 'VIRTBUS_COMMAND_EXCHANGE',
    },
    format: {
      doc: 'Lifecycle message format (bridge): json (the virtbus.lifecycle/1 object), oslo (the same fields as the payload of an oslo.messaging v2 envelope), cloudevents (a binary-mode CloudEvent: the object as the body, the attributes in ce- headers) or cloudevents-structured (application/cloudevents+json). Consumers read all four.',
      format: ['json', 'oslo', 'cloudevents', 'cloudevents-structured'],
      default: 'json',
      env: 'VIRTBUS_AMQP_FORMAT',
    },
    heartbeatSeconds: {
      doc: 'AMQP heartbeat negotiated with the broker, in seconds.',
      format: 'nat',
      default: 30,
      env: 'VIRTBUS_AMQP_HEARTBEAT',
    },
    maxInFlight: {
      doc: 'Most publishes awaiting a broker confirm at once.',
      format: 'positive-int',
      default: 2000,
      env: 'VIRTBUS_AMQP_MAX_IN_FLIGHT',
    },
    reconnectInitialDelayMs: {
      doc: 'First delay before reconnecting to the broker; doubles up to reconnectMaxDelayMs, with jitter.',
      format: 'positive-int',
      default: 500,
      env: 'VIRTBUS_AMQP_RECONNECT_INITIAL_DELAY_MS',
    },
    reconnectMaxDelayMs: {
      doc: 'Largest delay between broker reconnect attempts.',
      format: 'positive-int',
      default: 15000,
      env: 'VIRTBUS_AMQP_RECONNECT_MAX_DELAY_MS',
    },
    tls: {
      caFile: {
        doc: 'PEM file of CAs trusted for amqps:// (empty: the system store).',
        format: String,
        default: '',
        env: 'VIRTBUS_AMQP_TLS_CA_FILE',
      },
      certFile: {
        doc: 'PEM client certificate for amqps:// (EXTERNAL or mutual TLS).',
        format: String,
        default: '',
        env: 'VIRTBUS_AMQP_TLS_CERT_FILE',
      },
      keyFile: {
        doc: 'PEM private key of the client certificate.',
        format: String,
        default: '',
        env: 'VIRTBUS_AMQP_TLS_KEY_FILE',
      },
      passphrase: {
        doc: 'Passphrase of the client key (also VIRTBUS_AMQP_TLS_PASSPHRASE_FILE).',
        format: String,
        default: '',
        sensitive: true,
        env: 'VIRTBUS_AMQP_TLS_PASSPHRASE',
      },
      verify: {
        doc: 'Verify the broker certificate and host name. Turning this off is for experiments only.',
        format: Boolean,
        default: true,
        env: 'VIRTBUS_AMQP_TLS_VERIFY',
      },
    },
  },
  bridge: {
    stopDelayMs: {
      doc: 'How long a STOPPED event is held before it is published (Nova: 15 s); any later Nova transition for the domain cancels it, other events wait behind it. 0 disables the delay.',
      format: 'nat',
      default: 15000,
      env: 'VIRTBUS_STOP_DELAY_MS',
      arg: 'stop-delay-ms',
    },
    flushDelayedOnShutdown: {
      doc: 'On shutdown publish pending delayed STOPPED events instead of cancelling them (Nova cancels; the next start-up snapshot repairs the state either way).',
      format: Boolean,
      default: false,
      env: 'VIRTBUS_FLUSH_DELAYED_ON_SHUTDOWN',
    },
    queueCapacity: {
      doc: "Capacity of the native event queue between libvirt's loop thread and JavaScript; overflow drops, counts and triggers a resync.",
      format: 'positive-int',
      default: 16384,
      env: 'VIRTBUS_NATIVE_QUEUE_CAPACITY',
    },
    resyncIntervalSeconds: {
      doc: "Seconds between periodic full snapshots (Nova's sync_power_state_interval is 600); 0 disables.",
      format: 'nat',
      default: 600,
      env: 'VIRTBUS_RESYNC_INTERVAL',
    },
    declareTopology: {
      doc: "Declare the lifecycle, unroutable and command exchanges, the unroutable queue and this host's command queue and binding (development, a bare vhost). false (production): configure nothing shared, check them passively and name what is missing; the broker definitions create them (docs/security.md).",
      format: Boolean,
      default: false,
      env: 'VIRTBUS_BRIDGE_DECLARE_TOPOLOGY',
    },
    shutdownTimeoutMs: {
      doc: 'On SIGTERM/SIGINT, the bound of the whole graceful shutdown: running stop commands, dispatching the queued events and the outstanding broker confirms. What is unconfirmed then stays in the journal; running commands are redelivered.',
      format: 'nat',
      default: 10000,
      env: 'VIRTBUS_SHUTDOWN_TIMEOUT_MS',
    },
    outbox: {
      kind: {
        doc: 'Where dispatched messages wait for broker confirms: journal (on disk in bridge.outbox.dir, survives broker outages, bridge crashes and restarts) or memory (lost when the bridge stops).',
        format: ['journal', 'memory'],
        default: 'journal',
        env: 'VIRTBUS_OUTBOX_KIND',
      },
      dir: {
        doc: 'Directory of the durable outbox journal, created if missing; relative to the working directory. One bridge per directory (a lock file enforces it); use a local file system.',
        format: String,
        default: './data/outbox',
        env: 'VIRTBUS_OUTBOX_DIR',
      },
      maxBytes: {
        doc: 'Most disk space the journal segments may take. When full, intake waits for broker confirms (events back up in the native queue); nothing is dropped.',
        format: 'positive-int',
        default: 2 * 1024 ** 3,
        env: 'VIRTBUS_OUTBOX_MAX_BYTES',
      },
      segmentBytes: {
        doc: 'Size at which a journal segment file is sealed and the next begun; a segment is deleted once all its messages are confirmed. Capped at maxBytes/4.',
        format: 'positive-int',
        default: 64 * 1024 ** 2,
        env: 'VIRTBUS_OUTBOX_SEGMENT_BYTES',
      },
      fsyncIntervalMs: {
        doc: 'Least time between two journal commits (one write and one fdatasync, shared by all appends waiting). Larger: fewer fsyncs, more latency under load. 0: commit as soon as the previous commit ends.',
        format: 'nat',
        default: 5,
        env: 'VIRTBUS_OUTBOX_FSYNC_INTERVAL_MS',
      },
      memoryCapacity: {
        doc: 'Most messages the memory outbox (bridge.outbox.kind = memory) holds before intake waits for confirms.',
        format: 'positive-int',
        default: 100000,
        env: 'VIRTBUS_OUTBOX_MEMORY_CAPACITY',
      },
    },
    commands: {
      enabled: {
        doc: 'Execute stop/force_stop commands sent by the consumer to this host.',
        format: Boolean,
        default: true,
        env: 'VIRTBUS_COMMANDS_ENABLED',
      },
      gracefulTimeoutMs: {
        doc: "How long a graceful shutdown may take before a force_stop falls back to destroy (Nova's shutdown_timeout is 60 s).",
        format: 'nat',
        default: 60000,
        env: 'VIRTBUS_GRACEFUL_SHUTDOWN_TIMEOUT_MS',
      },
      destroyOnTimeout: {
        doc: "A stop (not force_stop) destroys a domain that is not shut off after the graceful shutdown: one that ignored it until the timeout, one still shutting down or crashed (Nova's power_off always destroys). false: a stop never destroys and answers failed.",
        format: Boolean,
        default: true,
        env: 'VIRTBUS_DESTROY_ON_TIMEOUT',
      },
      trustedUser: {
        doc: "The broker user whose commands this bridge executes: a command runs only when its AMQP user_id (verified by the broker) is this user and its host is this bridge's host; any other is counted, logged and dead-lettered. The consumer's broker user.",
        format: 'amqp-name',
        default: 'virtbus-consumer',
        env: 'VIRTBUS_COMMANDS_TRUSTED_USER',
      },
      maxExpiryMs: {
        doc: 'Expiry horizon: a command whose expires_at is further ahead than this is answered refused, not executed. Executed command ids are remembered until their expiry (in bridge.outbox.dir/executed-commands.jsonl, across restarts), so a replay is never executed again.',
        format: 'positive-int',
        default: 600000,
        env: 'VIRTBUS_COMMANDS_MAX_EXPIRY_MS',
      },
    },
  },
  consumer: {
    queue: {
      doc: 'Durable queue the consumer reads lifecycle messages from.',
      format: 'amqp-name',
      default: 'virtbus.consumer',
      env: 'VIRTBUS_CONSUMER_QUEUE',
      arg: 'queue',
    },
    queueType: {
      doc: 'Type of the consumer queue: quorum (replicated, delivery limit) or classic.',
      format: ['quorum', 'classic'],
      default: 'quorum',
      env: 'VIRTBUS_CONSUMER_QUEUE_TYPE',
    },
    bindings: {
      doc: 'Binding patterns of the consumer queue on the lifecycle exchange (comma-separated in env), e.g. `#` or `cmp-01.*`.',
      format: 'string-list',
      default: ['#'],
      env: 'VIRTBUS_CONSUMER_BINDINGS',
    },
    hosts: {
      doc: 'Per-host mode: bind `<host-segment>.*` for each host listed instead of consumer.bindings.',
      format: 'string-list',
      default: [] as string[],
      env: 'VIRTBUS_CONSUMER_HOSTS',
    },
    prefetch: {
      doc: 'Unacknowledged messages the broker may deliver to this consumer at once (applied in batches; a deep window hides the broker round trips). At most 1000: the consumer may hold prefetch × consumer.maxMessageBytes in memory.',
      format: 'prefetch',
      default: 1000,
      env: 'VIRTBUS_CONSUMER_PREFETCH',
    },
    deliveryLimit: {
      doc: 'Deliveries of one message before the broker dead-letters it (quorum queues), so a poison message cannot loop forever.',
      format: 'positive-int',
      default: 5,
      env: 'VIRTBUS_CONSUMER_DELIVERY_LIMIT',
    },
    deadLetterExchange: {
      doc: 'Exchange rejected lifecycle messages are dead-lettered to (with the reason in header x-virtbus-reason).',
      format: 'amqp-name',
      default: 'virtbus.dead-letter',
      env: 'VIRTBUS_DEAD_LETTER_EXCHANGE',
    },
    deadLetterQueue: {
      doc: 'Queue bound to the dead-letter exchange, for operators to inspect.',
      format: 'amqp-name',
      default: 'virtbus.dead-letter',
      env: 'VIRTBUS_DEAD_LETTER_QUEUE',
    },
    mode: {
      doc: 'nova: act as Nova does (stop/force_stop through the bridge); observe: record what Nova would do and change only power_state.',
      format: ['nova', 'observe'],
      default: 'nova',
      env: 'VIRTBUS_CONSUMER_MODE',
      arg: 'mode',
    },
    followMigrations: {
      doc: "Move a row to the host a guest live-migrated to once both hosts agree (the destination reports it running: resumed with detail migrated/postcopy or a snapshot listing it running; its started migrated only holds back stops, the row's host reports migration_completed, stopped migrated or a snapshot without it); while only one host's word is in, record power states but never stop the guest. Observe mode follows migrations too (it moves the row, never commands). false: rows never change host (something else moves instance.host, as Nova's own post-migration step does).",
      format: Boolean,
      default: true,
      env: 'VIRTBUS_CONSUMER_FOLLOW_MIGRATIONS',
    },
    migrationWindowMs: {
      doc: "How long one host's word about a live migration is kept waiting for the other's; until then the row gets no stop or force_stop. After it, a migration that never completed is forgotten and the row is synced normally again.",
      format: 'positive-int',
      default: 600000,
      env: 'VIRTBUS_CONSUMER_MIGRATION_WINDOW_MS',
    },
    stopTimeoutMs: {
      doc: "How long the consumer waits for a stop command's outcome before clearing task_state and recording the timeout.",
      format: 'positive-int',
      default: 180000,
      env: 'VIRTBUS_STOP_TIMEOUT_MS',
    },
    resultQueue: {
      doc: 'Durable queue (same type as consumer.queue) the consumer reads stop-command results from; bound to <host-segment>.stop_result on amqp.commandExchange. Consumers sharing a database share it.',
      format: 'amqp-name',
      default: 'virtbus.consumer.results',
      env: 'VIRTBUS_CONSUMER_RESULT_QUEUE',
    },
    queueDepthIntervalMs: {
      doc: 'How often the consumer reads its queue depth from the broker (passive queue.declare) for virtbus_consumer_queue_depth.',
      format: 'positive-int',
      default: 5000,
      env: 'VIRTBUS_CONSUMER_QUEUE_DEPTH_INTERVAL_MS',
    },
    hostsIntervalMs: {
      doc: "How often each consumer merges what it saw of each host (last event, last complete snapshot) into the hosts table and re-reads it: a host's maintenance switch (virtbus hosts disable) takes effect on every consumer within this time.",
      format: 'positive-int',
      default: 2000,
      env: 'VIRTBUS_CONSUMER_HOSTS_INTERVAL_MS',
    },
    maxFutureSkewMs: {
      doc: 'A lifecycle message whose occurred_at lies further than this in the future is dead-lettered (it would otherwise shadow every later event of its instance).',
      format: 'positive-int',
      default: 300000,
      env: 'VIRTBUS_CONSUMER_MAX_FUTURE_SKEW_MS',
    },
    maxMessageBytes: {
      doc: 'Largest message body the consumer reads: a bigger one is dead-lettered (reason "body too large", only its first KiB kept) before it is decoded. Keep it at or below the broker\'s max_message_size.',
      format: 'positive-int',
      default: 1048576,
      env: 'VIRTBUS_CONSUMER_MAX_MESSAGE_BYTES',
    },
    senders: {
      mode: {
        doc: "Sender verification of lifecycle messages and stop results: strict (the body's host must match the routing key's host segment and the broker-verified user_id must be that host's user; a message without user_id is dead-lettered), routing-key (only the routing key is checked), off (nothing is checked; tests and single-host labs). See docs/consumer.md.",
        format: ['strict', 'routing-key', 'off'],
        default: 'strict',
        env: 'VIRTBUS_CONSUMER_SENDERS',
      },
      userTemplate: {
        doc: "Broker user each host's bridge publishes as, in strict mode: {segment} is replaced by the host's routing-key segment (e.g. bridge-{segment}).",
        format: 'sender-user-template',
        default: '{segment}',
        env: 'VIRTBUS_CONSUMER_SENDER_USER_TEMPLATE',
      },
    },
    shutdownTimeoutMs: {
      doc: 'On SIGTERM/SIGINT, how long to wait for messages being processed before closing (unfinished ones are redelivered).',
      format: 'nat',
      default: 10000,
      env: 'VIRTBUS_CONSUMER_SHUTDOWN_TIMEOUT_MS',
    },
    notifications: {
      enabled: {
        doc: 'Emit versioned instance.update notifications (oslo.messaging v2 envelope) on power_state, vm_state or task_state changes.',
        format: Boolean,
        default: true,
        env: 'VIRTBUS_NOTIFICATIONS',
      },
      exchange: {
        doc: "Exchange notifications are published to (Nova's control_exchange).",
        format: 'amqp-name',
        default: 'nova',
        env: 'VIRTBUS_NOTIFICATION_EXCHANGE',
      },
      topic: {
        doc: 'Notification topic; the routing key is <topic>.info.',
        format: 'amqp-name',
        default: 'versioned_notifications',
        env: 'VIRTBUS_NOTIFICATION_TOPIC',
      },
      durable: {
        doc: "Durability used when the consumer has to create the notification exchange (oslo's default, amqp_durable_queues=false, is non-durable); an existing exchange is used as it is.",
        format: Boolean,
        default: false,
        env: 'VIRTBUS_NOTIFICATION_DURABLE',
      },
      declareQueue: {
        doc: "Also declare queue <topic>.info bound to the exchange with that routing key, as oslo.messaging's publisher does, so notifications are kept until a listener exists instead of being dropped. The queue is created (durable as consumer.notifications.durable) only when missing; an existing one is used as it is. It grows without bound if nobody consumes it: cap it with a policy (deploy/rabbitmq/definitions.json sets max-length with drop-head), or set false when listeners bind their own queues.",
        format: Boolean,
        default: true,
        env: 'VIRTBUS_CONSUMER_NOTIFICATIONS_DECLARE_QUEUE',
      },
      payloadVersion: {
        doc: "InstanceUpdatePayload version of instance.update: 2.1 (today's Nova, with the shares field) or 2.0 for listeners that deserialise with an older Nova's objects (up to 2024.1, e.g. Nova 26 in Debian 12), which reject a field they do not know.",
        format: ['2.0', '2.1'],
        default: '2.1',
        env: 'VIRTBUS_NOTIFICATION_PAYLOAD_VERSION',
      },
    },
  },
  db: {
    url: {
      doc: 'Instance database: sqlite:<path> (embedded, WAL) or postgres://user:password@host:port/db (shared by several consumers). Also VIRTBUS_DB_URL_FILE.',
      format: 'db-url',
      default: 'sqlite:./data/virtbus.db',
      sensitive: true,
      env: 'VIRTBUS_DB_URL',
      arg: 'db-url',
    },
    poolSize: {
      doc: 'PostgreSQL connection pool size.',
      format: 'positive-int',
      default: 8,
      env: 'VIRTBUS_DB_POOL_SIZE',
    },
    sqliteSynchronous: {
      doc: 'SQLite synchronous pragma in WAL mode: full (a commit survives power loss; acks wait for it) or normal (survives a process crash only; faster).',
      format: ['full', 'normal'],
      default: 'full',
      env: 'VIRTBUS_DB_SQLITE_SYNCHRONOUS',
    },
    busyTimeoutMs: {
      doc: 'How long a statement waits for a lock (SQLite busy_timeout) or a pooled connection (PostgreSQL) before the database counts as unavailable.',
      format: 'positive-int',
      default: 5000,
      env: 'VIRTBUS_DB_BUSY_TIMEOUT_MS',
    },
    retryInitialDelayMs: {
      doc: 'First delay between probes of an unavailable database (consumption is paused meanwhile); doubles up to db.retryMaxDelayMs, with jitter.',
      format: 'positive-int',
      default: 250,
      env: 'VIRTBUS_DB_RETRY_INITIAL_DELAY_MS',
    },
    retryMaxDelayMs: {
      doc: 'Largest delay between probes of an unavailable database.',
      format: 'positive-int',
      default: 5000,
      env: 'VIRTBUS_DB_RETRY_MAX_DELAY_MS',
    },
  },
};

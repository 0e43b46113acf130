/**
 * The bridge process, assembled: native event loop → event pump → dispatcher → outbox → publisher,
 * the libvirt connection manager, the stop-command executor, metrics and health. start() brings it
 * up (a broker or libvirtd that is down is waited for, not fatal); stop() is the graceful shutdown:
 * stop intake, dispatch what was accepted, wait for confirms up to a bound, close AMQP and libvirt,
 * join the native thread.
 */
import { randomUUID } from 'node:crypto';
import type { VirtbusConfig } from '../config/load';
import { AmqpConnection, amqpOptionsFromConfig } from '../amqp/connection';
import { lifecycleExchangeTopology, type Topology } from '../amqp/topology';
import { LibvirtHost } from '../libvirt/host';
import { startMetricsServer, type MetricsServer } from '../metrics/server';
import type { NativeBinding } from '../native/contract';
import { settlesWithin } from '../util/deadline';
import type { Logger } from '../util/log';
import { join } from 'node:path';
import { CommandExecutor } from './commands';
import { Dispatcher } from './dispatcher';
import { EventPump } from './event-pump';
import { IntakeFirstOutbox } from './intake-first';
import { createBridgeMetrics, type BridgeMetrics } from './metrics';
import { MemoryOutbox, type Outbox } from './outbox';
import { Publisher } from './publisher';
import { lifecyclePublishHooks } from './publish-hooks';
import type { LifecycleFormat } from '../messages/formats';
import { activeTracing } from '../tracing/otel';

export interface BridgeDependencies {
  readonly config: VirtbusConfig;
  readonly binding: NativeBinding;
  readonly logger: Logger;
  /** From openOutbox(config); defaults to an in-memory outbox of 100,000 messages. */
  readonly outbox?: Outbox;
}

/** Executed stop-command ids (the replay guard), beside the outbox journal. */
export const EXECUTED_IDS_FILE = 'executed-commands.jsonl';

/**
 * What the publisher declares (development) or checks (default): the lifecycle exchange and its
 * alternate exchange. Passively only the lifecycle exchange it publishes to: a per-host broker user
 * has no permission at all on the alternate exchange and its queue (RabbitMQ refuses even a passive
 * declare there with ACCESS_REFUSED), and the broker, not the bridge, routes into them.
 */
function bridgeLifecycleTopology(config: VirtbusConfig): Topology {
  const full = lifecycleExchangeTopology(config.amqp.exchange, config.amqp.unroutableExchange);
  return config.bridge.declareTopology
    ? full
    : { exchanges: full.exchanges.filter((e) => e.name === config.amqp.exchange), queues: [], bindings: [] };
}

export class Bridge {
  readonly bootId = randomUUID();
  readonly metrics: BridgeMetrics;
  readonly #deps: BridgeDependencies;
  readonly #outbox: Outbox;
  readonly #amqp: AmqpConnection;
  readonly #libvirt: LibvirtHost;
  readonly #dispatcher: Dispatcher;
  readonly #publisher: Publisher;
  readonly #pump: EventPump;
  readonly #commands: CommandExecutor;
  #metricsServer: MetricsServer | undefined;
  #periodic: NodeJS.Timeout | undefined;
  #stopping: Promise<void> | undefined;

  constructor(deps: BridgeDependencies) {
    this.#deps = deps;
    const { config, binding, logger } = deps;
    this.#outbox = deps.outbox ?? new MemoryOutbox(100_000);
    this.#amqp = new AmqpConnection(
      amqpOptionsFromConfig(config.amqp, `virtbus-bridge ${config.host}`, logger.child({ module: 'amqp' })),
    );
    this.#libvirt = new LibvirtHost({
      binding,
      uri: config.libvirt.uri,
      open: {
        readOnly: config.libvirt.readOnly,
        keepaliveInterval: config.libvirt.keepaliveInterval,
        keepaliveCount: config.libvirt.keepaliveCount,
        ...(config.libvirt.username ? { username: config.libvirt.username } : {}),
        ...(config.libvirt.password ? { password: config.libvirt.password } : {}),
      },
      reconnectInitialDelayMs: config.libvirt.reconnectInitialDelayMs,
      reconnectMaxDelayMs: config.libvirt.reconnectMaxDelayMs,
      logger: logger.child({ module: 'libvirt' }),
    });
    this.metrics = createBridgeMetrics({
      queueStats: () => binding.queueStats(),
      unconfirmed: () => this.#publisher.inFlight,
      delayedStopsPending: () => this.#dispatcher.delayedStopsPending,
      outboxDepth: () => this.#outbox.depth,
      outboxOldestMicros: () => this.#outbox.oldestMicros(),
      outboxBytes: () => this.#outbox.bytes ?? 0,
      libvirtUp: () => this.#libvirt.isUp,
      amqpUp: () => this.#amqp.isUp,
    });
    this.#dispatcher = new Dispatcher({
      host: config.host,
      bootId: this.bootId,
      exchange: config.amqp.exchange,
      format: config.amqp.format as LifecycleFormat,
      stopDelayMs: config.bridge.stopDelayMs,
      resyncIntervalSeconds: config.bridge.resyncIntervalSeconds,
      connection: () => this.#libvirt.connection,
      takeQueued: () => this.#pump.takeQueued(),
      outbox: this.#outbox,
      metrics: this.metrics,
      logger: logger.child({ module: 'dispatcher' }),
    });
    this.#publisher = new Publisher({
      connection: this.#amqp,
      // Publishing yields to intake while intake is behind (docs/architecture.md, "Intake first").
      outbox: new IntakeFirstOutbox(this.#outbox, {
        nativeDepth: () => binding.queueStats().depth,
        backlog: () => this.#dispatcher.intakeBacklog,
        appendStalled: () => this.#dispatcher.appendStalled,
      }),
      topology: bridgeLifecycleTopology(config),
      declareTopology: config.bridge.declareTopology,
      maxInFlight: config.amqp.maxInFlight,
      metrics: this.metrics,
      logger: logger.child({ module: 'publisher' }),
      hooks: lifecyclePublishHooks({
        format: config.amqp.format as LifecycleFormat,
        host: config.host,
        tracing: activeTracing(),
        logger: logger.child({ module: 'publisher' }),
      }),
    });
    this.#pump = new EventPump(
      binding,
      {
        events: (batch) => this.#dispatcher.handleEvents(batch),
        room: () => this.#dispatcher.whenRoom(),
        close: (event) => this.#libvirt.handleClose(event),
        overflow: () => void this.#dispatcher.snapshot('overflow'),
      },
      logger.child({ module: 'pump' }),
    );
    this.#commands = new CommandExecutor({
      host: config.host,
      exchange: config.amqp.commandExchange,
      enabled: config.bridge.commands.enabled && !config.libvirt.readOnly,
      gracefulTimeoutMs: config.bridge.commands.gracefulTimeoutMs,
      destroyOnTimeout: config.bridge.commands.destroyOnTimeout,
      trustedUser: config.bridge.commands.trustedUser,
      maxExpiryMs: config.bridge.commands.maxExpiryMs,
      executedIdsFile: join(config.bridge.outbox.dir, EXECUTED_IDS_FILE),
      declareTopology: config.bridge.declareTopology,
      connection: () => this.#libvirt.connection,
      amqp: this.#amqp,
      metrics: this.metrics,
      logger: logger.child({ module: 'commands' }),
    });
    this.#libvirt.on('up', (_connection, reconnect) => {
      if (reconnect) this.metrics.libvirtReconnects.inc();
      // Events may have happened while we were not listening: a snapshot repairs them.
      void this.#dispatcher.snapshot(reconnect ? 'reconnect' : 'start');
    });
  }

  get metricsPort(): number | undefined {
    return this.#metricsServer?.port;
  }

  get libvirtUp(): boolean {
    return this.#libvirt.isUp;
  }

  get amqpUp(): boolean {
    return this.#amqp.isUp;
  }

  async start(): Promise<void> {
    const { config, binding, logger } = this.#deps;
    this.#metricsServer = await startMetricsServer({
      host: config.metrics.host,
      port: config.metrics.port,
      registry: this.metrics.registry,
      readiness: [
        { name: 'libvirt', ready: () => this.#libvirt.isUp },
        { name: 'amqp', ready: () => this.#amqp.isUp && this.#publisher.ready },
      ],
    });
    logger.info(
      {
        host: config.host,
        bootId: this.bootId,
        metrics: `http://${config.metrics.host}:${this.#metricsServer.port}/metrics`,
      },
      'bridge starting',
    );
    if (!binding.eventLoopRunning()) {
      binding.setQueueCapacity(config.bridge.queueCapacity);
      binding.startEventLoop(this.#pump.wake);
    }
    this.#amqp.start();
    this.#libvirt.start();
    const interval = config.bridge.resyncIntervalSeconds;
    if (interval > 0) {
      this.#periodic = setInterval(() => void this.#dispatcher.snapshot('periodic'), interval * 1000);
      this.#periodic.unref();
    }
  }

  /** Graceful shutdown; idempotent. Resolves true when every accepted message was confirmed. */
  stop(): Promise<void> {
    this.#stopping ??= this.#shutdown();
    return this.#stopping;
  }

  async #shutdown(): Promise<void> {
    const { config, binding, logger } = this.#deps;
    logger.info('bridge stopping');
    clearInterval(this.#periodic);
    // One deadline for the whole graceful part: a wedged libvirtd, a command in its graceful
    // shutdown or an outbox that is full while the broker is away must not hold SIGTERM forever.
    // What is not done by then stays where it is: journaled messages in the outbox, queued events
    // and running commands are repaired by the next start's snapshot and the command's redelivery.
    const deadline = Date.now() + config.bridge.shutdownTimeoutMs;
    const phase = async (name: string, work: Promise<unknown>, atLeastMs = 0): Promise<void> => {
      if (!(await settlesWithin(work, Math.max(atLeastMs, deadline - Date.now()))))
        logger.warn(
          { phase: name, timeoutMs: config.bridge.shutdownTimeoutMs },
          'shutdown timeout in a phase',
        );
    };
    await phase('commands', this.#commands.stop());
    // Dispatch what is already queued while libvirt is still connected, so power states are live
    // (and held stops flushed with flushDelayedOnShutdown are sampled), then stop intake.
    this.#pump.wake();
    await phase('dispatch', this.#pump.settled());
    await phase('delayed stops', this.#dispatcher.shutdown(config.bridge.flushDelayedOnShutdown));
    // libvirt gets a moment even past the deadline: its callbacks are deregistered by the close.
    await phase('libvirt close', this.#libvirt.close(), 2000);
    this.#pump.wake(); // what arrived before the callbacks were deregistered
    await phase(
      'dispatch',
      this.#pump.settled().then(() => this.#dispatcher.shutdown(false)),
    );
    const confirmed = await this.#publisher.waitIdle(Math.max(0, deadline - Date.now()));
    if (!confirmed) {
      logger.warn(
        { unconfirmed: this.#outbox.depth, timeoutMs: config.bridge.shutdownTimeoutMs },
        'shutdown timeout: messages left unconfirmed (kept in the outbox when it is durable)',
      );
    }
    await this.#publisher.close();
    await this.#amqp.close();
    await this.#outbox.close();
    binding.stopEventLoop();
    await this.#metricsServer?.close();
    logger.info({ unconfirmed: this.#outbox.depth }, 'bridge stopped');
  }
}

/**
 * Executes the stop commands the consumer sends to this host (Nova's stop / force_stop → the
 * compute host's stop_instance): re-reads the live state first (Nova re-checks before acting), shuts
 * the domain down gracefully with a timeout, destroys it when the timeout passes (always for
 * force_stop, for stop when bridge.commands.destroyOnTimeout), and publishes the outcome on the
 * command exchange. A command is acked only after its result is confirmed by the broker, so a bridge
 * that dies mid-command gets it again (stopping is idempotent: already_stopped).
 */
import type { Channel, ChannelModel, ConfirmChannel, ConsumeMessage } from 'amqplib';
import type { AmqpConnection } from '../amqp/connection';
import { assertTopology, type Topology } from '../amqp/topology';
import type { NativeConnection } from '../native/contract';
import { isLibvirtError } from '../native/binding';
import { powerStateOf } from '../libvirt/power-state';
import { LibvirtErrorCode, PowerState } from '../libvirt/constants';
import {
  COMMAND_RESULT_SCHEMA,
  COMMAND_SCHEMA,
  commandQueueName,
  commandResultRoutingKey,
  commandRoutingKey,
  type CommandOutcome,
  type CommandResult,
  type StopCommand,
} from '../messages/command';
import { APP_ID } from '../messages/lifecycle';
import type { Logger } from '../util/log';
import { isoMicros, nowMicros, parseIsoMicros } from '../util/time';
import type { BridgeMetrics } from './metrics';

export interface CommandExecutorOptions {
  readonly host: string;
  readonly exchange: string;
  /** false: every command is answered `refused` (read-only connection or commands disabled). */
  readonly enabled: boolean;
  readonly gracefulTimeoutMs: number;
  readonly destroyOnTimeout: boolean;
  readonly connection: () => NativeConnection | undefined;
  readonly amqp: AmqpConnection;
  readonly metrics: BridgeMetrics;
  readonly logger: Logger;
  /** Poll interval while waiting for a graceful shutdown. */
  readonly pollMs?: number;
}

export function commandTopology(host: string, exchange: string): Topology {
  return {
    exchanges: [{ name: exchange, type: 'topic', durable: true }],
    queues: [{ name: commandQueueName(host), durable: true, arguments: { 'x-queue-type': 'quorum' } }],
    bindings: [{ queue: commandQueueName(host), exchange, pattern: commandRoutingKey(host) }],
  };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Validates a command body; returns the reason it is unusable, or the command. */
export function parseStopCommand(body: Buffer): StopCommand | string {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    return 'not JSON';
  }
  if (value === null || typeof value !== 'object') return 'not a JSON object';
  const command = value as Record<string, unknown>;
  if (command.schema !== COMMAND_SCHEMA) return `unknown schema ${JSON.stringify(command.schema)}`;
  if (typeof command.command_id !== 'string' || command.command_id === '') return 'command_id missing';
  if (command.action !== 'stop' && command.action !== 'force_stop')
    return `unknown action ${JSON.stringify(command.action)}`;
  if (typeof command.instance_uuid !== 'string' || !UUID.test(command.instance_uuid))
    return 'instance_uuid is not a UUID';
  if (typeof command.host !== 'string') return 'host missing';
  if (typeof command.expires_at !== 'string' || Number.isNaN(parseIsoMicros(command.expires_at))) {
    return 'expires_at is not an ISO time';
  }
  const guard = command.only_if_power_states;
  if (guard !== undefined && (!Array.isArray(guard) || guard.some((code) => !Number.isInteger(code)))) {
    return 'only_if_power_states is not a list of power-state codes';
  }
  return command as unknown as StopCommand;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A channel that closes on its own (a channel-level error) while the connection stays up is reopened. */
const REOPEN_DELAY_MS = 250;

export class CommandExecutor {
  readonly #options: CommandExecutorOptions;
  #consumer: { channel: Channel; tag: string } | undefined;
  #results: ConfirmChannel | undefined;
  #inProgress = new Set<Promise<void>>();
  /** Commands for one domain run one after another; a link never rejects, so one failure never stops the next. */
  #perDomain = new Map<string, Promise<void>>();
  #closing = false;

  constructor(options: CommandExecutorOptions) {
    this.#options = options;
    options.amqp.on('up', (model) => {
      void this.#openResults(model);
      void this.#openConsumer(model);
    });
    options.amqp.on('down', () => {
      this.#consumer = undefined;
      this.#results = undefined;
    });
  }

  /** Stops taking commands; waits for the ones running (bounded by the caller). */
  async stop(): Promise<void> {
    this.#closing = true;
    const consumer = this.#consumer;
    this.#consumer = undefined;
    if (consumer) await consumer.channel.cancel(consumer.tag).catch(() => undefined);
    await Promise.allSettled([...this.#inProgress]);
  }

  /** The connection this setup started on is still the live one (a stale failure must not reset a newer one). */
  #isCurrent(model: ChannelModel): boolean {
    return !this.#closing && this.#options.amqp.model === model;
  }

  #setupFailed(model: ChannelModel, what: string, error: unknown): void {
    const { logger, amqp } = this.#options;
    if (!this.#isCurrent(model)) {
      logger.info({ err: error }, `${what} failed on a connection that is gone; ignored`);
      return;
    }
    logger.error({ err: error }, `cannot set up the ${what}; reconnecting`);
    amqp.reset(`${what} failed`);
  }

  /** Reopens a channel that closed while its connection stayed up (after a short delay). */
  #reopenLater(
    model: ChannelModel,
    open: (model: ChannelModel) => Promise<void>,
    isOpen: () => boolean,
  ): void {
    if (!this.#isCurrent(model)) return;
    setTimeout(() => {
      if (!isOpen() && this.#isCurrent(model)) void open(model);
    }, REOPEN_DELAY_MS).unref();
  }

  async #openResults(model: ChannelModel): Promise<void> {
    const { logger } = this.#options;
    if (this.#closing) return;
    let results: ConfirmChannel;
    try {
      results = await model.createConfirmChannel();
    } catch (error) {
      this.#setupFailed(model, 'command result channel', error);
      return;
    }
    // Without an 'error' listener amqplib throws the channel error inside the connection (tearing it down).
    results.on('error', (error: Error) => logger.warn({ err: error }, 'command result channel error'));
    results.on('close', () => {
      if (this.#results !== results) return;
      this.#results = undefined;
      this.#reopenLater(
        model,
        (m) => this.#openResults(m),
        () => this.#results !== undefined,
      );
    });
    if (!this.#isCurrent(model)) {
      await results.close().catch(() => undefined);
      return;
    }
    this.#results = results;
  }

  async #openConsumer(model: ChannelModel): Promise<void> {
    const { host, exchange, logger } = this.#options;
    if (this.#closing) return;
    let channel: Channel;
    try {
      channel = await model.createChannel();
    } catch (error) {
      this.#setupFailed(model, 'command queue', error);
      return;
    }
    channel.on('error', (error: Error) => logger.warn({ err: error }, 'command channel error'));
    channel.on('close', () => {
      if (this.#consumer?.channel !== channel) return;
      this.#consumer = undefined;
      this.#reopenLater(
        model,
        (m) => this.#openConsumer(m),
        () => this.#consumer !== undefined,
      );
    });
    try {
      await assertTopology(channel, commandTopology(host, exchange));
      await channel.prefetch(32);
      const { consumerTag } = await channel.consume(commandQueueName(host), (message) => {
        if (message) this.#accept(channel, message);
      });
      this.#consumer = { channel, tag: consumerTag };
      if (!this.#isCurrent(model)) {
        this.#consumer = undefined;
        await channel.close().catch(() => undefined);
        return;
      }
      logger.info({ queue: commandQueueName(host) }, 'taking stop commands');
    } catch (error) {
      this.#setupFailed(model, 'command queue', error);
    }
  }

  #accept(channel: Channel, message: ConsumeMessage): void {
    const { logger, metrics } = this.#options;
    const parsed = parseStopCommand(message.content);
    if (typeof parsed === 'string') {
      logger.warn({ reason: parsed }, 'malformed stop command dropped');
      metrics.commands.inc({ action: 'unknown', outcome: 'malformed' });
      this.#settle(channel, message, 'drop');
      return;
    }
    const uuid = parsed.instance_uuid;
    const previous = this.#perDomain.get(uuid) ?? Promise.resolve();
    const task = previous
      .then(() => this.#execute(channel, message, parsed))
      .catch((error: unknown) => {
        logger.error({ err: error, command: parsed.command_id, uuid }, 'stop command failed');
      });
    this.#perDomain.set(uuid, task);
    this.#inProgress.add(task);
    void task.finally(() => {
      this.#inProgress.delete(task);
      if (this.#perDomain.get(uuid) === task) this.#perDomain.delete(uuid);
    });
  }

  async #execute(channel: Channel, message: ConsumeMessage, command: StopCommand): Promise<void> {
    const { logger, metrics } = this.#options;
    const outcome = await this.#stopDomain(command);
    const result: CommandResult = {
      schema: COMMAND_RESULT_SCHEMA,
      command_id: command.command_id,
      action: command.action,
      host: this.#options.host,
      instance_uuid: command.instance_uuid,
      finished_at: isoMicros(nowMicros()),
      ...outcome,
    };
    metrics.commands.inc({ action: command.action, outcome: result.outcome });
    logger.info(
      {
        command: command.command_id,
        action: command.action,
        uuid: command.instance_uuid,
        outcome: result.outcome,
        method: result.method,
        error: result.error,
      },
      'stop command done',
    );
    try {
      await this.#publishResult(result);
    } catch (error) {
      // The command comes back (unacked) after a reconnect; stopping again is idempotent.
      logger.warn(
        { err: error, command: command.command_id },
        'could not publish a command result; the command will be redelivered',
      );
      this.#settle(channel, message, 'requeue');
      return;
    }
    this.#settle(channel, message, 'ack');
  }

  /**
   * Acks or nacks on the channel the command came from. amqplib throws on a closed channel (the
   * connection dropped while the command ran): the broker then redelivers the command by itself.
   */
  #settle(channel: Channel, message: ConsumeMessage, how: 'ack' | 'requeue' | 'drop'): void {
    try {
      if (how === 'ack') channel.ack(message);
      else channel.nack(message, false, how === 'requeue');
    } catch (error) {
      this.#options.logger.warn(
        { err: error, how },
        'command channel closed before the command was settled; the broker redelivers it',
      );
    }
  }

  #publishResult(result: CommandResult): Promise<void> {
    const channel = this.#results;
    if (!channel) return Promise.reject(new Error('broker not connected'));
    // A publish on a closed channel throws inside the executor (a rejection); a channel closing with
    // the publish unconfirmed calls back with an error (amqplib), so this always settles.
    return new Promise((resolve, reject) => {
      channel.publish(
        this.#options.exchange,
        commandResultRoutingKey(this.#options.host),
        Buffer.from(JSON.stringify(result)),
        {
          persistent: true,
          contentType: 'application/json',
          messageId: result.command_id,
          appId: APP_ID,
          type: COMMAND_RESULT_SCHEMA,
          timestamp: Math.floor(Date.now() / 1000),
        },
        (error: unknown) =>
          error ? reject(error instanceof Error ? error : new Error('nacked')) : resolve(),
      );
    });
  }

  async #stopDomain(
    command: StopCommand,
  ): Promise<Pick<CommandResult, 'outcome' | 'method' | 'power_state' | 'error'>> {
    const done = (
      outcome: CommandOutcome,
      method: CommandResult['method'],
      powerState: number,
      error: string | null = null,
    ) => ({
      outcome,
      method,
      power_state: powerState,
      error,
    });
    if (parseIsoMicros(command.expires_at) < nowMicros())
      return done('expired', 'none', PowerState.NOSTATE, 'command expired before it was executed');
    if (!this.#options.enabled)
      return done(
        'refused',
        'none',
        PowerState.NOSTATE,
        'this bridge does not execute commands (read-only or disabled)',
      );
    const connection = this.#options.connection();
    if (!connection) return done('failed', 'none', PowerState.NOSTATE, 'libvirt is not connected');
    const uuid = command.instance_uuid;
    const live = async (): Promise<number> => {
      try {
        return powerStateOf((await connection.domainState(uuid)).state);
      } catch (error) {
        if (isLibvirtError(error) && error.libvirtCode === LibvirtErrorCode.NO_DOMAIN)
          return PowerState.NOSTATE;
        throw error;
      }
    };
    const isOff = (state: number): boolean =>
      state === PowerState.SHUTDOWN || state === PowerState.CRASHED || state === PowerState.NOSTATE;
    try {
      const before = await live();
      // Nova's 4b/4c re-check (_stop_unexpected_shutdown_instance): act only if the guest is still in
      // the state the consumer decided on; a guest restarted meanwhile is left alone.
      const guard = command.only_if_power_states;
      if (guard && !guard.includes(before)) return done('skipped', 'none', before, null);
      if (isOff(before)) return done('already_stopped', 'none', before);
      try {
        await connection.shutdown(uuid);
      } catch (error) {
        // A paused guest cannot take an ACPI shutdown; fall through to the timeout and destroy.
        this.#options.logger.debug({ err: error, uuid }, 'graceful shutdown refused');
      }
      const deadline = Date.now() + this.#options.gracefulTimeoutMs;
      let state = await live();
      while (!isOff(state) && Date.now() < deadline) {
        await sleep(this.#options.pollMs ?? 250);
        state = await live();
      }
      if (isOff(state)) return done('stopped', 'shutdown', state);
      if (command.action === 'stop' && !this.#options.destroyOnTimeout) {
        return done(
          'failed',
          'shutdown',
          state,
          `graceful shutdown did not finish within ${this.#options.gracefulTimeoutMs} ms`,
        );
      }
      await connection.destroy(uuid);
      return done('stopped', 'destroy', await live());
    } catch (error) {
      const text = error instanceof Error ? error.message : String(error);
      return done('failed', 'none', await live().catch(() => PowerState.NOSTATE), text);
    }
  }
}

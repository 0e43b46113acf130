/**
 * Executes the stop commands the consumer sends to this host (Nova's stop / force_stop → the
 * compute host's stop_instance) and publishes the outcome on the command exchange. A command is
 * acked only after its result is confirmed by the broker, so a bridge that dies mid-command gets it
 * again (stopping is idempotent: already_stopped). The parts: parse.ts (body → command),
 * executor.ts (libvirt), subscription.ts (channels, consume, settle).
 */
import type { Channel, ConsumeMessage } from 'amqplib';
import type { AmqpConnection } from '../../amqp/connection';
import { assertTopology, type Topology } from '../../amqp/topology';
import type { NativeConnection } from '../../native/contract';
import {
  COMMAND_RESULT_SCHEMA,
  commandQueueName,
  commandResultRoutingKey,
  commandRoutingKey,
  type CommandResult,
  type StopCommand,
} from '../../messages/command';
import { APP_ID } from '../../messages/lifecycle';
import type { Logger } from '../../util/log';
import { isoMicros, nowMicros } from '../../util/time';
import type { BridgeMetrics } from '../metrics';
import { stopDomain } from './executor';
import { parseStopCommand } from './parse';
import { CommandSubscription } from './subscription';

export { parseStopCommand } from './parse';

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

export class CommandExecutor {
  readonly #options: CommandExecutorOptions;
  readonly #subscription: CommandSubscription;
  #inProgress = new Set<Promise<void>>();
  /** Commands for one domain run one after another; a link never rejects, so one failure never stops the next. */
  #perDomain = new Map<string, Promise<void>>();

  constructor(options: CommandExecutorOptions) {
    this.#options = options;
    this.#subscription = new CommandSubscription({
      amqp: options.amqp,
      logger: options.logger,
      queue: commandQueueName(options.host),
      prepare: (channel) => assertTopology(channel, commandTopology(options.host, options.exchange)),
      onMessage: (channel, message) => this.#accept(channel, message),
    });
  }

  /** Stops taking commands; waits for the ones running (bounded by the caller). */
  async stop(): Promise<void> {
    await this.#subscription.stop();
    await Promise.allSettled([...this.#inProgress]);
  }

  #accept(channel: Channel, message: ConsumeMessage): void {
    const { logger, metrics } = this.#options;
    const parsed = parseStopCommand(message.content);
    if (typeof parsed === 'string') {
      logger.warn({ reason: parsed }, 'malformed stop command dropped');
      metrics.commands.inc({ action: 'unknown', outcome: 'malformed' });
      this.#subscription.settle(channel, message, 'drop');
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
    const outcome = await stopDomain(command, this.#options);
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
      this.#subscription.settle(channel, message, 'requeue');
      return;
    }
    this.#subscription.settle(channel, message, 'ack');
  }

  #publishResult(result: CommandResult): Promise<void> {
    return this.#subscription.publish(
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
    );
  }
}

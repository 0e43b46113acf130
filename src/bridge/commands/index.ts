/**
 * Executes the stop commands the consumer sends to this host (Nova's stop / force_stop → the
 * compute host's stop_instance) and publishes the outcome on the command exchange. A command is
 * acked only after its result is confirmed by the broker, so a bridge that dies mid-command gets it
 * again (stopping is idempotent: already_stopped). Only commands that the trusted consumer sent
 * (broker-verified `user_id`) for this host run, each id at most once until it expires (issue 10);
 * anything else is counted, logged with its reason and rejected without requeue (the queue's
 * dead-letter policy keeps it). The parts: parse.ts (body, sender, horizon), replay-guard.ts
 * (executed ids), executor.ts (libvirt), subscription.ts (channels, consume, settle, re-subscribe).
 */
import type { Channel, ConsumeMessage } from 'amqplib';
import type { AmqpConnection } from '../../amqp/connection';
import { prepareTopology, type Topology } from '../../amqp/topology';
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
import { isoMicros, nowMicros, parseIsoMicros } from '../../util/time';
import type { BridgeMetrics } from '../metrics';
import { stopDomain, type StopOutcome } from './executor';
import { beyondHorizon, parseStopCommand, verifyCommand } from './parse';
import { ReplayGuard } from './replay-guard';
import { CommandSubscription } from './subscription';

export { parseStopCommand, verifyCommand, MAX_COMMAND_BYTES } from './parse';
export { brokerUserOf } from './identity';

export interface CommandExecutorOptions {
  readonly host: string;
  readonly exchange: string;
  /** false: every command is answered `refused` (read-only connection or commands disabled). */
  readonly enabled: boolean;
  readonly gracefulTimeoutMs: number;
  readonly destroyOnTimeout: boolean;
  /** The broker user whose commands are executed (bridge.commands.trustedUser). */
  readonly trustedUser: string;
  /** Commands valid for longer than this from now are refused (bridge.commands.maxExpiryMs). */
  readonly maxExpiryMs: number;
  /** Where executed ids persist across restarts; undefined: memory only. */
  readonly executedIdsFile?: string;
  /** Most executed ids remembered (default 100,000). */
  readonly maxExecutedIds?: number;
  /** user_id set on results (this bridge's broker user, verified by the broker); undefined: none. */
  readonly resultUserId?: string;
  /** true: declare the exchange, queue and binding (development); false: check them passively. */
  readonly declareTopology: boolean;
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

/** A failed result publish is retried through a redelivery, not at once (a missing result queue is no hot loop). */
const REQUEUE_DELAY_MS = 1000;

export class CommandExecutor {
  readonly #options: CommandExecutorOptions;
  readonly #subscription: CommandSubscription;
  readonly #executed: ReplayGuard;
  #inProgress = new Set<Promise<void>>();
  /** Commands for one domain run one after another; a link never rejects, so one failure never stops the next. */
  #perDomain = new Map<string, Promise<void>>();

  constructor(options: CommandExecutorOptions) {
    this.#options = options;
    this.#executed = new ReplayGuard({
      ...(options.executedIdsFile ? { file: options.executedIdsFile } : {}),
      maxEntries: options.maxExecutedIds ?? 100_000,
      logger: options.logger,
    });
    this.#subscription = new CommandSubscription({
      amqp: options.amqp,
      logger: options.logger,
      queue: commandQueueName(options.host),
      prepare: (channel) =>
        prepareTopology(channel, commandTopology(options.host, options.exchange), options.declareTopology),
      onMessage: (channel, message) => this.#accept(channel, message),
    });
  }

  /** Stops taking commands; waits for the ones running (bounded by the caller). */
  async stop(): Promise<void> {
    await this.#subscription.stop();
    await Promise.allSettled([...this.#inProgress]);
  }

  /** Not executed: counted, logged with the reason, rejected without requeue (dead-lettered by policy). */
  #reject(
    channel: Channel,
    message: ConsumeMessage,
    action: string,
    label: string,
    reason: string,
    command?: StopCommand,
  ): void {
    this.#options.metrics.commands.inc({ action, outcome: label });
    this.#options.logger.warn(
      {
        reason,
        outcome: label,
        command: command?.command_id,
        uuid: command?.instance_uuid,
        sender: typeof message.properties.userId === 'string' ? message.properties.userId : undefined,
      },
      label === 'malformed' ? 'malformed stop command dropped' : 'stop command not executed',
    );
    this.#subscription.settle(channel, message, 'drop');
  }

  /** The consume callback: never throws (amqplib would close the channel). */
  #accept(channel: Channel, message: ConsumeMessage): void {
    try {
      const parsed = parseStopCommand(message.content);
      if (typeof parsed === 'string') {
        this.#reject(channel, message, 'unknown', 'malformed', parsed);
        return;
      }
      const distrust = verifyCommand(parsed, message.properties, {
        host: this.#options.host,
        trustedUser: this.#options.trustedUser,
      });
      if (distrust) {
        this.#reject(channel, message, parsed.action, distrust.label, distrust.reason, parsed);
        return;
      }
      this.#enqueue(channel, message, parsed);
    } catch (error) {
      this.#options.logger.error({ err: error }, 'stop command handling failed; rejected');
      this.#subscription.settle(channel, message, 'drop');
    }
  }

  #enqueue(channel: Channel, message: ConsumeMessage, command: StopCommand): void {
    const uuid = command.instance_uuid;
    const previous = this.#perDomain.get(uuid) ?? Promise.resolve();
    const task = previous
      .then(() => this.#execute(channel, message, command))
      .catch((error: unknown) => {
        this.#options.logger.error({ err: error, command: command.command_id, uuid }, 'stop command failed');
        this.#subscription.settle(channel, message, 'drop');
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
    const id = command.command_id;
    if (this.#executed.has(id)) {
      const earlier = this.#executed.result(id);
      if (message.fields.redelivered && earlier) {
        // Our own earlier result did not get through (or its ack was lost): the same answer again.
        await this.#answer(channel, message, earlier);
        return;
      }
      if (!message.fields.redelivered || earlier) {
        this.#reject(channel, message, command.action, 'replayed', 'command id already executed', command);
        return;
      }
      // Redelivered after this bridge died mid-command (id on disk, no result): run it again, as before.
    }
    const outcome = await this.#run(command);
    const result: CommandResult = {
      schema: COMMAND_RESULT_SCHEMA,
      command_id: id,
      action: command.action,
      host: this.#options.host,
      instance_uuid: command.instance_uuid,
      finished_at: isoMicros(nowMicros()),
      ...outcome,
    };
    this.#executed.setResult(id, result);
    metrics.commands.inc({ action: command.action, outcome: result.outcome });
    logger.info(
      {
        command: id,
        action: command.action,
        uuid: command.instance_uuid,
        outcome: result.outcome,
        method: result.method,
        error: result.error,
      },
      'stop command done',
    );
    await this.#answer(channel, message, result);
  }

  /** The horizon, then the id on disk, then libvirt. */
  async #run(command: StopCommand): Promise<StopOutcome> {
    const tooFar = beyondHorizon(command, this.#options.maxExpiryMs);
    if (tooFar) return { outcome: 'refused', method: 'none', power_state: null, error: tooFar };
    const expiresAt = parseIsoMicros(command.expires_at);
    if (expiresAt >= nowMicros()) {
      try {
        await this.#executed.remember(command.command_id, expiresAt);
      } catch (error) {
        // Executing without the record would let a replay run it again: when in doubt, do not act.
        this.#options.logger.error({ err: error }, 'cannot record the executed command id');
        return {
          outcome: 'failed',
          method: 'none',
          power_state: null,
          error: 'cannot record the command id (replay guard); not executed',
        };
      }
    }
    return stopDomain(command, this.#options);
  }

  async #answer(channel: Channel, message: ConsumeMessage, result: CommandResult): Promise<void> {
    try {
      await this.#publishResult(result);
    } catch (error) {
      // The command comes back (unacked) after a reconnect or the delay; its stored result is sent again.
      this.#options.metrics.publishFailures.inc({
        reason: error instanceof Error && error.name === 'UnroutableError' ? 'result_unroutable' : 'result',
      });
      this.#options.logger.warn(
        { err: error, command: result.command_id },
        'could not publish a command result; the command will be redelivered',
      );
      await new Promise((resolve) => setTimeout(resolve, REQUEUE_DELAY_MS));
      this.#subscription.settle(channel, message, 'requeue');
      return;
    }
    this.#subscription.settle(channel, message, 'ack');
  }

  #publishResult(result: CommandResult): Promise<void> {
    const { resultUserId } = this.#options;
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
        ...(resultUserId ? { userId: resultUserId } : {}),
      },
    );
  }
}

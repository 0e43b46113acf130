/**
 * Channel setup in the publisher and the command executor against a fake connection: a setup that
 * fails on a connection which dropped meanwhile (a newer one is already up) must not reset the newer
 * one; a setup that fails on the live connection still does.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import type { ChannelModel } from 'amqplib';
import type { AmqpConnection } from '../../src/amqp/connection';
import { Publisher } from '../../src/bridge/publisher';
import { CommandExecutor } from '../../src/bridge/commands';
import { MemoryOutbox } from '../../src/bridge/outbox';
import { idleBridgeMetrics } from '../support/bridge-metrics';

class FakeConnection extends EventEmitter {
  model: ChannelModel | undefined;
  readonly resets: string[] = [];
  isBlocked = false;
  reset(reason: string): void {
    this.resets.push(reason);
  }
}

/** A model whose channel creation fails once `fail` is called (after the test swapped connections). */
function failingModel(): { model: ChannelModel; fail: () => void } {
  let fail: () => void = () => undefined;
  const pending = new Promise<never>((_resolve, reject) => {
    fail = () => reject(new Error('Connection closed (by client)'));
  });
  pending.catch(() => undefined);
  const model = {
    createConfirmChannel: () => pending,
    createChannel: () => pending,
  } as unknown as ChannelModel;
  return { model, fail };
}

const silent = pino({ level: 'silent' });

type Make = (connection: FakeConnection) => unknown;
const makers: Array<[string, Make]> = [
  [
    'Publisher',
    (connection) =>
      new Publisher({
        connection: connection as unknown as AmqpConnection,
        outbox: new MemoryOutbox(10),
        topology: { exchanges: [], queues: [], bindings: [] },
        maxInFlight: 10,
        metrics: idleBridgeMetrics(),
        logger: silent,
      }),
  ],
  [
    'CommandExecutor',
    (connection) =>
      new CommandExecutor({
        host: 'cmp-01',
        exchange: 'virtbus.commands',
        enabled: true,
        gracefulTimeoutMs: 1000,
        destroyOnTimeout: true,
        trustedUser: 'virtbus-consumer',
        maxExpiryMs: 600_000,
        declareTopology: true,
        connection: () => undefined,
        amqp: connection as unknown as AmqpConnection,
        metrics: idleBridgeMetrics(),
        logger: silent,
      }),
  ],
];

for (const [name, make] of makers) {
  describe(`${name} channel setup`, () => {
    it('a setup failure on a connection that dropped meanwhile does not reset the newer connection', async () => {
      const connection = new FakeConnection();
      make(connection);
      const a = failingModel();
      connection.model = a.model;
      connection.emit('up', a.model);
      // A drops while its channel is being created; B comes up before the failure arrives.
      const b = failingModel();
      connection.model = b.model;
      a.fail();
      await sleep(20);
      assert.deepEqual(connection.resets, [], 'the healthy connection B was not reset');
    });

    it('a setup failure on the live connection resets it', async () => {
      const connection = new FakeConnection();
      make(connection);
      const a = failingModel();
      connection.model = a.model;
      connection.emit('up', a.model);
      a.fail();
      await sleep(20);
      assert.ok(connection.resets.length >= 1, 'the connection was reset');
    });
  });
}

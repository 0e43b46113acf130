/**
 * The bridge's AMQP channels under faults, in-process against the run's RabbitMQ node: a connection
 * that drops while a stop command runs (the ack on the dead channel must neither crash the process
 * nor stop later commands for the domain), and a queue that rejects every publish (x-overflow:
 * reject-publish) behind the lifecycle exchange (the publisher backs off instead of a hot loop of
 * reopen-and-republish, and still loses nothing).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { sleep, waitUntil } from '../support/wait';
import { connect } from 'amqplib';
import pino from 'pino';
import { testBroker, type TestBroker } from '../support/services';
import { BusRecorder } from '../support/bus';
import { AmqpConnection } from '../../src/amqp/connection';
import { CommandExecutor } from '../../src/bridge/commands';
import { Publisher } from '../../src/bridge/publisher';
import { MemoryOutbox } from '../../src/bridge/outbox';
import type { NativeConnection } from '../../src/native/contract';
import {
  COMMAND_SCHEMA,
  commandResultRoutingKey,
  commandRoutingKey,
  type CommandResult,
} from '../../src/messages/command';
import { isoMicros, nowMicros } from '../../src/util/time';
import { idleBridgeMetrics } from '../support/bridge-metrics';

interface LogLine {
  msg: string;
  [key: string]: unknown;
}

/** A pino logger whose lines the test can read. */
function capturingLogger(): { logger: pino.Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n'))
        if (line) lines.push(JSON.parse(line) as LogLine);
      done();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), lines };
}

function amqpConnection(url: string, logger: pino.Logger): AmqpConnection {
  return new AmqpConnection({
    url,
    heartbeatSeconds: 10,
    tls: { caFile: '', certFile: '', keyFile: '', passphrase: '', verify: true },
    connectionName: 'virtbus-test bridge-channels',
    reconnectInitialDelayMs: 50,
    reconnectMaxDelayMs: 200,
    logger,
  });
}

/** Waits with this file's default bound (15 s) and a 20 ms poll. */
const until = (what: string, predicate: () => boolean, timeoutMs = 15000): Promise<void> =>
  waitUntil(what, predicate, timeoutMs, 20);

describe('bridge channels under faults', () => {
  let broker: TestBroker;
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown): void => {
    unhandled.push(reason);
  };

  before(async () => {
    broker = await testBroker();
    process.on('unhandledRejection', onUnhandled);
  });

  after(() => {
    process.off('unhandledRejection', onUnhandled);
  });

  it('a connection lost while a stop command runs neither crashes the process nor blocks later commands for the domain', async () => {
    const HOST = 'cmp-drop';
    const EXCHANGE = 'virtbus.commands';
    const UUID = '6f1c1d0e-2a4b-4c8d-9e0f-112233445566';
    const C1 = 'c0000001-0000-4000-8000-000000000001';
    const C2 = 'c0000002-0000-4000-8000-000000000002';
    // A guest that ignores the ACPI shutdown: the command polls until the timeout, then destroys.
    let libvirtState = 1;
    let shutdowns = 0;
    const fakeLibvirt = {
      domainState: () => Promise.resolve({ state: libvirtState, reason: 0 }),
      shutdown: () => {
        shutdowns += 1;
        return Promise.resolve();
      },
      destroy: () => {
        libvirtState = 5;
        return Promise.resolve();
      },
    } as unknown as NativeConnection;
    const { logger, lines } = capturingLogger();
    const amqp = amqpConnection(broker.url, logger);
    const executor = new CommandExecutor({
      host: HOST,
      exchange: EXCHANGE,
      enabled: true,
      // Long enough that rabbitmqctl (slow on a loaded machine) drops the connection while c-1 waits.
      gracefulTimeoutMs: 8000,
      destroyOnTimeout: true,
      // The test broker's only user: the commands below are published as guest, as user_id says.
      trustedUser: 'guest',
      maxExpiryMs: 600_000,
      declareTopology: true,
      pollMs: 50,
      connection: () => fakeLibvirt,
      amqp,
      metrics: idleBridgeMetrics(),
      logger,
    });
    amqp.start();
    try {
      await until('the command consumer', () => lines.some((l) => l.msg === 'taking stop commands'));
      // A durable results queue: it keeps results published while the test has no connection open.
      const send = async (commandId: string): Promise<void> => {
        const model = await connect(broker.url);
        const channel = await model.createConfirmChannel();
        await channel.assertQueue('results', { durable: true });
        await channel.bindQueue('results', EXCHANGE, commandResultRoutingKey(HOST));
        channel.publish(
          EXCHANGE,
          commandRoutingKey(HOST),
          Buffer.from(
            JSON.stringify({
              schema: COMMAND_SCHEMA,
              command_id: commandId,
              action: 'stop',
              host: HOST,
              instance_uuid: UUID,
              reason: 'test',
              issued_at: isoMicros(nowMicros()),
              expires_at: isoMicros(nowMicros() + 60_000_000),
            }),
          ),
          { persistent: true, userId: 'guest' },
        );
        await channel.waitForConfirms();
        await model.close();
      };
      await send(C1);
      await until('c-1 to be running', () => shutdowns >= 1);
      await send(C2); // chained behind c-1 (same domain)
      await sleep(100);
      // The broker drops every connection of the vhost while c-1 waits for the graceful shutdown.
      await broker.ctl('close_all_connections', '-p', broker.vhost, 'test: connection lost mid-command');

      const results: CommandResult[] = [];
      await until(
        'a reconnect',
        () => amqp.isUp && lines.some((l) => l.msg === 'broker connection lost; reconnecting'),
      );
      const model = await connect(broker.url);
      try {
        const channel = await model.createChannel();
        await channel.consume(
          'results',
          (m) => m && results.push(JSON.parse(m.content.toString()) as CommandResult),
          { noAck: true },
        );
        await until('the result of c-2', () => results.some((r) => r.command_id === C2));
      } finally {
        await model.close();
      }
      assert.ok(
        results.some((r) => r.command_id === C1),
        `c-1 answered (once or again after its redelivery): ${JSON.stringify(results)}`,
      );
      assert.deepEqual(
        results.filter((r) => r.command_id === C2).map((r) => r.outcome),
        results.filter((r) => r.command_id === C2).map(() => 'already_stopped'),
      );
      assert.ok(
        lines.some((l) => l.msg.startsWith('command channel closed before the command was settled')),
        'the ack on the dead channel was caught and logged',
      );
      assert.deepEqual(unhandled, [], 'no unhandled rejection');
    } finally {
      await executor.stop();
      await amqp.close();
    }
  });

  it('a queue that rejects every publish makes the publisher back off, and nothing is lost once it accepts', async () => {
    const EXCHANGE = 'virtbus.nacktest';
    const setup = await connect(broker.url);
    const admin = await setup.createChannel();
    await admin.assertExchange(EXCHANGE, 'topic', { durable: true });
    await admin.assertQueue('full', {
      durable: true,
      arguments: { 'x-max-length': 0, 'x-overflow': 'reject-publish' },
    });
    await admin.bindQueue('full', EXCHANGE, '#');
    const copies = await BusRecorder.listen<{ n: number }>(broker.url, EXCHANGE, ['#']);

    const { logger, lines } = capturingLogger();
    const amqp = amqpConnection(broker.url, logger);
    const outbox = new MemoryOutbox(100);
    const publisher = new Publisher({
      connection: amqp,
      outbox,
      topology: { exchanges: [{ name: EXCHANGE, type: 'topic', durable: true }], queues: [], bindings: [] },
      maxInFlight: 16,
      metrics: idleBridgeMetrics(),
      logger,
    });
    await outbox.append(
      [1, 2, 3].map((n) => ({
        exchange: EXCHANGE,
        routingKey: `cmp.${n}`,
        messageId: `m-${n}`,
        type: 'test',
        occurredMicros: nowMicros(),
        transition: 'test',
        body: Buffer.from(JSON.stringify({ n })),
      })),
    );
    amqp.start();
    try {
      const window = 3000;
      await until('the first publishing channel', () =>
        lines.some((l) => l.msg === 'publishing channel open'),
      );
      await sleep(window);
      const opens = lines.filter((l) => l.msg === 'publishing channel open').length;
      const nacks = lines.filter((l) => l.msg.startsWith('broker nacked a publish'));
      // Backoff 100, 200, 400, 800, 1600 ms: about 5 reopens in 3 s (a hot loop makes hundreds).
      assert.ok(opens >= 3 && opens <= 8, `${opens} channel opens in ${window} ms`);
      assert.ok(nacks.length >= 2, 'the broker kept nacking');
      const delays = nacks.map((l) => l.retryInMs as number);
      assert.deepEqual(delays.slice(0, 4), [100, 200, 400, 800], 'the delay doubles per nack');
      assert.equal(nacks.at(-1)?.nacks, nacks.length, 'the log counts the nacks');
      assert.ok(copies.messages.length <= 3 * opens, `${copies.messages.length} copies in the other queue`);
      assert.equal(outbox.depth, 3, 'nacked records stay in the outbox');

      // The rejecting queue goes away: the next reopen delivers everything, in order.
      await admin.deleteQueue('full');
      assert.ok(await publisher.waitIdle(10000), 'the outbox drained');
      const firstSeen = [...new Set(copies.messages.map((m) => m.body.n))];
      assert.deepEqual(firstSeen, [1, 2, 3]);
      assert.deepEqual(unhandled, [], 'no unhandled rejection');
    } finally {
      await publisher.close();
      await amqp.close();
      await copies.close();
      await setup.close();
    }
  });
});

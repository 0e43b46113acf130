/**
 * The hostile-host suite, broker half: holding host A's broker credentials (user cmp-a_example_org,
 * as `virtbus broker definitions` makes it), try what an attacker on hypervisor A would try against
 * host B and the shared objects. Every attempt here must be refused by RabbitMQ itself — the AMQP
 * reply code and the resource named are asserted — because no virtbus process is involved: these
 * are the attacks that must never reach the consumer or B's bridge. Attacks the broker lets through
 * (A publishing under its own key a body that names B, …) are in hostile-host.test.ts.
 *
 * Each refusal is paired with the legitimate action it resembles (A under its own key, its own
 * queue), which must succeed: otherwise a broker refusing everything would pass the suite.
 */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { connect } from 'amqplib';
import { commandQueueName, commandResultRoutingKey, commandRoutingKey } from '../../src/messages/command';
import { lifecycleRoutingKey } from '../../src/messages/lifecycle';
import { waitUntil } from '../../src/sandbox/exec';
import {
  attempt,
  CONSUMER,
  HOST_A,
  HOST_B,
  publishConfirmed,
  shippedMaxMessageSize,
  startSecureBroker,
  USER_A,
  USER_B,
  type BrokerRefusal,
  type SecureBroker,
} from './broker-fixture';

const ACCESS_REFUSED = 403;
const PRECONDITION_FAILED = 406;

function assertRefused(
  refusal: BrokerRefusal | undefined,
  code: number,
  mentions: string | RegExp,
  what: string,
): void {
  assert.ok(refusal, `${what}: the broker must refuse it, but it was accepted`);
  assert.equal(refusal.code, code, `${what}: reply code (${refusal.message})`);
  if (typeof mentions === 'string')
    assert.ok(refusal.message.includes(mentions), `${what}: names ${mentions}; got ${refusal.message}`);
  else assert.match(refusal.message, mentions, what);
}

describe('hostile host A against the broker loaded with the generated definitions', () => {
  let broker: SecureBroker;
  let asA: string;
  let names: SecureBroker['config']['amqp'];
  const lifecycleBody = (host: string, transition: string): string =>
    JSON.stringify({ schema: 'virtbus.lifecycle/1', host, transition, event_id: randomUUID() });

  before(async () => {
    broker = await startSecureBroker();
    asA = broker.url(USER_A);
    names = broker.config.amqp;
  });

  it('A may publish its own lifecycle keys and results and consume its own command queue (the control)', async () => {
    assert.equal(
      await attempt(asA, async (ch) => {
        for (const transition of ['started', 'sync', 'sync_end'] as const)
          await publishConfirmed(
            ch,
            names.exchange,
            lifecycleRoutingKey(HOST_A, transition),
            lifecycleBody(HOST_A, transition),
            {
              userId: USER_A,
            },
          );
        await publishConfirmed(ch, names.commandExchange, commandResultRoutingKey(HOST_A), '{}', {
          userId: USER_A,
        });
        await ch.checkExchange(names.exchange); // the bridge's passive declarations
        await ch.checkExchange(names.commandExchange);
        await ch.checkQueue(commandQueueName(HOST_A));
        await ch.consume(commandQueueName(HOST_A), () => undefined);
      }),
      undefined,
    );
  });

  it('A cannot log in as B or as the consumer with its own password', async () => {
    const password = broker.passwords.get(USER_A);
    for (const user of [USER_B, CONSUMER])
      await assert.rejects(connect(broker.url(user, password)), /ACCESS.REFUSED|403/, `log in as ${user}`);
  });

  for (const transition of ['started', 'stopped', 'sync', 'sync_end', 'migration_completed'] as const) {
    it(`A cannot publish B's lifecycle key ${transition} (topic permission)`, async () => {
      const key = lifecycleRoutingKey(HOST_B, transition);
      assertRefused(
        await attempt(asA, (ch) =>
          publishConfirmed(ch, names.exchange, key, lifecycleBody(HOST_B, transition)),
        ),
        ACCESS_REFUSED,
        `topic '${key}'`,
        `publishing ${key}`,
      );
    });
  }

  it("A cannot publish B's stop result, nor any stop command (its own host's or B's)", async () => {
    for (const key of [commandResultRoutingKey(HOST_B), commandRoutingKey(HOST_B), commandRoutingKey(HOST_A)])
      assertRefused(
        await attempt(asA, (ch) => publishConfirmed(ch, names.commandExchange, key, '{}')),
        ACCESS_REFUSED,
        `topic '${key}'`,
        `publishing ${key} on ${names.commandExchange}`,
      );
  });

  it('A cannot publish as another user: user_id naming the consumer or B is refused by the broker', async () => {
    for (const userId of [CONSUMER, USER_B])
      assertRefused(
        await attempt(asA, (ch) =>
          publishConfirmed(ch, names.commandExchange, commandResultRoutingKey(HOST_A), '{}', { userId }),
        ),
        PRECONDITION_FAILED,
        `user_id property set to '${userId}'`,
        `user_id ${userId}`,
      );
  });

  it("A cannot reach B's command queue by any exchange: default exchange, unroutable, amq.* exchanges", async () => {
    const queueB = commandQueueName(HOST_B);
    for (const [exchange, key] of [
      ['', queueB],
      [names.unroutableExchange, ''],
      ['amq.direct', queueB],
      ['amq.topic', commandRoutingKey(HOST_B)],
      ['amq.fanout', ''],
      [broker.config.consumer.deadLetterExchange, '#'],
      [broker.config.consumer.notifications.exchange, 'versioned_notifications.info'],
    ] as const)
      assertRefused(
        await attempt(asA, (ch) => publishConfirmed(ch, exchange, key, '{"action":"force_stop"}')),
        ACCESS_REFUSED,
        `exchange '${exchange === '' ? 'amq.default' : exchange}'`,
        `publishing to exchange '${exchange}'`,
      );
  });

  it("A cannot consume, get, purge, delete, bind or unbind B's command queue", async () => {
    const queueB = commandQueueName(HOST_B);
    const cases: Array<[string, Parameters<typeof attempt>[1]]> = [
      ['consume', (ch) => ch.consume(queueB, () => undefined)],
      ['get', (ch) => ch.get(queueB)],
      ['purge', (ch) => ch.purgeQueue(queueB)],
      ['delete', (ch) => ch.deleteQueue(queueB)],
      ['bind to the unroutable exchange', (ch) => ch.bindQueue(queueB, names.unroutableExchange, '')],
      ['bind to the lifecycle exchange', (ch) => ch.bindQueue(queueB, names.exchange, '#')],
      [
        'bind with A.stop_result',
        (ch) => ch.bindQueue(queueB, names.commandExchange, commandResultRoutingKey(HOST_A)),
      ],
      ['unbind', (ch) => ch.unbindQueue(queueB, names.commandExchange, commandRoutingKey(HOST_B))],
    ];
    for (const [what, action] of cases)
      assertRefused(
        await attempt(asA, action),
        ACCESS_REFUSED,
        /access to (queue|exchange) '/,
        `${what} ${queueB}`,
      );
    const listed = (await broker.queues()).find((q) => q.name === queueB);
    assert.ok(listed, `${queueB} still exists`);
  });

  it("A cannot bind its own queue anywhere (reading B's commands or every event), nor bind exchanges to each other", async () => {
    const queueA = commandQueueName(HOST_A);
    const cases: Array<[string, Parameters<typeof attempt>[1]]> = [
      [
        "its queue to B's commands",
        (ch) => ch.bindQueue(queueA, names.commandExchange, commandRoutingKey(HOST_B)),
      ],
      ['its queue to every command', (ch) => ch.bindQueue(queueA, names.commandExchange, '#')],
      ['its queue to the lifecycle exchange', (ch) => ch.bindQueue(queueA, names.exchange, '#')],
      ['its queue to the unroutable exchange', (ch) => ch.bindQueue(queueA, names.unroutableExchange, '')],
      [
        'commands → unroutable',
        (ch) => ch.bindExchange(names.unroutableExchange, names.commandExchange, '#'),
      ],
      ['unroutable → commands', (ch) => ch.bindExchange(names.commandExchange, names.unroutableExchange, '')],
      ['lifecycle → commands', (ch) => ch.bindExchange(names.commandExchange, names.exchange, '#')],
      ['commands → lifecycle', (ch) => ch.bindExchange(names.exchange, names.commandExchange, '#')],
    ];
    for (const [what, action] of cases)
      assertRefused(
        await attempt(asA, action),
        ACCESS_REFUSED,
        /access to (queue|exchange) '/,
        `binding ${what}`,
      );
  });

  it('A cannot declare, redeclare or delete any shared object, nor create its own', async () => {
    const { consumer } = broker.config;
    const cases: Array<[string, string, Parameters<typeof attempt>[1]]> = [
      [
        'redeclare the command exchange',
        names.commandExchange,
        (ch) => ch.assertExchange(names.commandExchange, 'topic', { durable: true }),
      ],
      [
        'redeclare the lifecycle exchange',
        names.exchange,
        (ch) =>
          ch.assertExchange(names.exchange, 'topic', {
            durable: true,
            arguments: { 'alternate-exchange': names.unroutableExchange },
          }),
      ],
      ['delete the lifecycle exchange', names.exchange, (ch) => ch.deleteExchange(names.exchange)],
      [
        'delete the unroutable exchange',
        names.unroutableExchange,
        (ch) => ch.deleteExchange(names.unroutableExchange),
      ],
      [
        'declare its own command queue',
        commandQueueName(HOST_A),
        (ch) =>
          ch.assertQueue(commandQueueName(HOST_A), {
            durable: true,
            arguments: { 'x-queue-type': 'quorum' },
          }),
      ],
      [
        'delete its own command queue',
        commandQueueName(HOST_A),
        (ch) => ch.deleteQueue(commandQueueName(HOST_A)),
      ],
      ['delete the consumer queue', consumer.queue, (ch) => ch.deleteQueue(consumer.queue)],
      ['purge the consumer queue', consumer.queue, (ch) => ch.purgeQueue(consumer.queue)],
      [
        'purge the dead-letter queue',
        consumer.deadLetterQueue,
        (ch) => ch.purgeQueue(consumer.deadLetterQueue),
      ],
      [
        'delete the dead-letter queue',
        consumer.deadLetterQueue,
        (ch) => ch.deleteQueue(consumer.deadLetterQueue),
      ],
      ['read the unroutable queue', names.unroutableExchange, (ch) => ch.get(names.unroutableExchange)],
      ['declare a new exchange', 'virtbus.evil', (ch) => ch.assertExchange('virtbus.evil', 'fanout')],
      ['declare a server-named queue', 'amq.gen-', (ch) => ch.assertQueue('', { exclusive: true })],
    ];
    for (const [what, resource, action] of cases)
      assertRefused(await attempt(asA, action), ACCESS_REFUSED, `'${resource}`, what);
    const queues = (await broker.queues()).map((q) => q.name);
    for (const name of [
      consumer.queue,
      consumer.deadLetterQueue,
      commandQueueName(HOST_A),
      names.unroutableExchange,
    ])
      assert.ok(queues.includes(name), `${name} still exists`);
  });

  it('A cannot publish a body larger than the shipped max_message_size; one just below passes', async () => {
    const max = shippedMaxMessageSize();
    const key = lifecycleRoutingKey(HOST_A, 'started');
    assert.equal(
      await attempt(asA, (ch) => publishConfirmed(ch, names.exchange, key, Buffer.alloc(max - 1024, 0x20))),
      undefined,
      'a body under the limit is accepted',
    );
    assertRefused(
      await attempt(asA, (ch) => publishConfirmed(ch, names.exchange, key, Buffer.alloc(max + 1, 0x20))),
      PRECONDITION_FAILED,
      /larger than configured max size/,
      `a body of ${max + 1} bytes`,
    );
    assertRefused(
      await attempt(asA, (ch) =>
        publishConfirmed(ch, names.exchange, key, Buffer.alloc(24 * 1024 ** 2, 0x7b)),
      ),
      PRECONDITION_FAILED,
      /larger than configured max size/,
      'a 24 MiB body',
    );
  });

  it('A cannot open more connections than its user limit', async () => {
    const models = [];
    try {
      for (let i = 0; i < 4; i += 1) models.push(await connect(asA));
      await assert.rejects(connect(asA), /ConnectionClose|limit/i);
    } finally {
      await Promise.all(models.map((m) => m.close().catch(() => undefined)));
    }
  });

  it('the policies cap every queue: reject-publish where a drop loses an event, drop-head on the kept-for-inspection queues', async () => {
    const queues = await broker.queues();
    const { consumer } = broker.config;
    const policyOf = (name: string): { policy: string; definition: Record<string, unknown> } => {
      const queue = queues.find((q) => q.name === name);
      assert.ok(queue, `queue ${name} exists`);
      return {
        policy: queue.policy,
        definition: queue.policyDefinition,
      };
    };
    for (const name of [
      consumer.queue,
      consumer.resultQueue,
      commandQueueName(HOST_A),
      commandQueueName(HOST_B),
    ]) {
      const { definition } = policyOf(name);
      assert.equal(
        definition.overflow,
        'reject-publish',
        `${name}: a full queue refuses, the publisher keeps it`,
      );
      assert.ok(Number(definition['max-length-bytes']) > 0, `${name}: byte cap`);
    }
    for (const name of [consumer.deadLetterQueue, names.unroutableExchange, 'versioned_notifications.info']) {
      const { definition } = policyOf(name);
      assert.equal(definition.overflow, 'drop-head', `${name}: the oldest go first`);
      assert.ok(Number(definition['max-length-bytes']) > 0, `${name}: byte cap`);
    }
    for (const queue of queues) assert.notEqual(queue.policy, '', `${queue.name} has a policy`);
  });

  it("a full command queue rejects the consumer's publish instead of dropping a command", async () => {
    const max = shippedMaxMessageSize();
    const queueB = commandQueueName(HOST_B);
    const model = await connect(broker.url(CONSUMER));
    let accepted = 0;
    let nacked = false;
    try {
      const channel = await model.createConfirmChannel();
      // Nothing consumes B's queue here; 1 MiB commands until the broker refuses one.
      for (let i = 0; i < 64 && !nacked; i += 1) {
        await publishConfirmed(
          channel,
          names.commandExchange,
          commandRoutingKey(HOST_B),
          Buffer.alloc(max - 1024, 0x20),
          {
            userId: CONSUMER,
          },
        ).then(
          () => (accepted += 1),
          () => (nacked = true),
        );
      }
      assert.ok(nacked, `the broker nacked a publish once ${queueB} was full (accepted ${accepted})`);
      await waitUntil(
        'the queue depth to settle',
        async () => {
          const q = (await broker.queues()).find((x) => x.name === queueB);
          return q?.messages === accepted;
        },
        10000,
        100,
      );
    } finally {
      await model.close().catch(() => undefined);
      await broker.node.ctl('purge_queue', '-p', 'virtbus', queueB);
    }
  });
});

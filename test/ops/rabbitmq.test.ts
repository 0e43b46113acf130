/**
 * deploy/rabbitmq/definitions.json: checked against the topology the code declares (same names, types
 * and arguments, or RabbitMQ answers PRECONDITION_FAILED), then imported with
 * `rabbitmqctl import_definitions` into a private node, where the real `virtbus bridge`,
 * `virtbus consumer` and `virtbus tail` run as the least-privilege users it defines (the bridge as
 * its host's own user, see `virtbus broker definitions`): a destroyed domain goes bridge → consumer →
 * stop command → bridge → result → consumer, and every write outside a user's grant is refused with
 * ACCESS_REFUSED. The hostile-host attacks proper are in test/security/.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type ConfirmChannel } from 'amqplib';
import { lifecycleExchangeTopology, mergeTopologies, type Topology } from '../../src/amqp/topology';
import { commandTopology } from '../../src/bridge/commands';
import { loadConfig } from '../../src/config/load';
import { consumerTopology } from '../../src/consumer/topology';
import { commandQueueName, commandResultRoutingKey, commandRoutingKey } from '../../src/messages/command';
import { hostSegment } from '../../src/messages/lifecycle';
import { notificationRoutingKey } from '../../src/notify/instance-update';
import { notificationQueue } from '../../src/notify/notifier';
import { run, waitUntil } from '../../src/sandbox/exec';
import type { LibvirtdSandbox, RabbitSandbox } from '../../src/sandbox';
import type { NativeConnection } from '../../src/native/contract';
import {
  metricValue,
  scrape,
  startVirtbus,
  VIRTBUS_BIN,
  type ServiceProcess,
} from '../support/bridge-process';
import { domainXml, openDriver } from '../support/domains';
import { onTeardown, ownRabbitNode, testLibvirtd } from '../support/services';
import { deployFile, serviceMetricsUrl } from '../support/deploy';

const DEFINITIONS = deployFile('rabbitmq', 'definitions.json');
const VHOST = 'virtbus';
/** One of the example hosts deploy/rabbitmq/definitions.json is generated for. */
const HOST = 'cmp-01.example.org';
const OTHER_HOST = 'cmp-02.example.org';
const SEGMENT = hostSegment(HOST);
/** The bridge's broker user is its host's routing segment. */
const BRIDGE_USER = SEGMENT;

interface Definitions {
  vhosts: Array<{ name: string }>;
  users: Array<{ name: string; password_hash: string; tags: string[] | string }>;
  permissions: Array<{ user: string; vhost: string; configure: string; write: string; read: string }>;
  topic_permissions: Array<{ user: string; vhost: string; exchange: string; write: string; read: string }>;
  policies: Array<{
    vhost: string;
    name: string;
    pattern: string;
    'apply-to': string;
    definition: Record<string, unknown>;
  }>;
  exchanges: Array<{
    name: string;
    vhost: string;
    type: string;
    durable: boolean;
    auto_delete: boolean;
    internal: boolean;
    arguments: Record<string, unknown>;
  }>;
  queues: Array<{
    name: string;
    vhost: string;
    durable: boolean;
    auto_delete: boolean;
    arguments: Record<string, unknown>;
  }>;
  bindings: Array<{
    source: string;
    vhost: string;
    destination: string;
    destination_type: string;
    routing_key: string;
  }>;
}

function definitions(): Definitions {
  return JSON.parse(readFileSync(DEFINITIONS, 'utf8')) as Definitions;
}

const defaults = loadConfig({ role: 'consumer', env: {}, skipDefaultFile: true });

/** What the bridge declares (publisher + command executor) and what the consumer declares. */
function bridgeTopology(host: string): Topology {
  return mergeTopologies(
    lifecycleExchangeTopology(defaults.amqp.exchange, defaults.amqp.unroutableExchange),
    commandTopology(host, defaults.amqp.commandExchange),
  );
}
const consumerDeclares = (): Topology => consumerTopology(defaults);
/** oslo's default notification queue, which the consumer declares when missing and binds. */
const notifications = defaults.consumer.notifications;
const notificationQ = notificationQueue(notifications.topic, notifications.durable);
const notificationKey = notificationRoutingKey(notifications.topic);

function permission(user: string): Definitions['permissions'][number] {
  const found = definitions().permissions.find((p) => p.user === user && p.vhost === VHOST);
  assert.ok(found, `permissions for ${user}`);
  return found;
}

function topicPermission(user: string, exchange: string): { write: RegExp; read: RegExp } | undefined {
  const found = definitions().topic_permissions.find(
    (p) => p.user === user && p.vhost === VHOST && p.exchange === exchange,
  );
  return found && { write: new RegExp(found.write), read: new RegExp(found.read) };
}

describe('deploy/rabbitmq/definitions.json against the code', () => {
  it('declares every exchange and queue the code declares, with the same type, durability and arguments', () => {
    const defs = definitions();
    const code = mergeTopologies(bridgeTopology(HOST), consumerDeclares());
    for (const exchange of code.exchanges) {
      const declared = defs.exchanges.find((e) => e.name === exchange.name);
      assert.ok(declared, `definitions declare exchange ${exchange.name}`);
      assert.equal(declared.vhost, VHOST);
      assert.equal(declared.type, exchange.type, `${exchange.name}: type`);
      assert.equal(declared.durable, exchange.durable, `${exchange.name}: durable`);
      assert.equal(declared.auto_delete, false);
      assert.deepEqual(declared.arguments, exchange.arguments ?? {}, `${exchange.name}: arguments`);
    }
    for (const queue of code.queues) {
      const declared = defs.queues.find((q) => q.name === queue.name);
      assert.ok(declared, `definitions declare queue ${queue.name}`);
      assert.equal(declared.vhost, VHOST);
      assert.equal(declared.durable, queue.durable, `${queue.name}: durable`);
      assert.deepEqual(declared.arguments, queue.arguments ?? {}, `${queue.name}: arguments`);
      assert.equal(declared.arguments['x-queue-type'], 'quorum', `${queue.name} is a quorum queue`);
    }
    for (const binding of code.bindings) {
      assert.ok(
        defs.bindings.some(
          (b) =>
            b.source === binding.exchange &&
            b.destination === binding.queue &&
            b.destination_type === 'queue' &&
            b.routing_key === binding.pattern,
        ),
        `definitions bind ${binding.queue} to ${binding.exchange} with ${binding.pattern}`,
      );
    }
    const nova = defs.exchanges.find((e) => e.name === defaults.consumer.notifications.exchange);
    assert.ok(nova, 'the notification exchange');
    assert.equal(nova.type, 'topic');
    assert.equal(
      nova.durable,
      defaults.consumer.notifications.durable,
      "oslo's durability, so Nova can share it",
    );
    assert.equal(notifications.declareQueue, true, 'the consumer declares the queue by default');
    const queue = defs.queues.find((q) => q.name === notificationQ.name);
    assert.ok(queue, `definitions declare oslo's default queue ${notificationQ.name}`);
    assert.equal(queue.durable, notificationQ.durable, 'amqp_durable_queues, as the consumer creates it');
    assert.equal(queue.auto_delete, false);
    assert.deepEqual(queue.arguments, notificationQ.arguments, 'a classic queue without arguments, as oslo');
    assert.ok(
      defs.bindings.some(
        (b) =>
          b.source === notifications.exchange &&
          b.destination === notificationQ.name &&
          b.destination_type === 'queue' &&
          b.routing_key === notificationKey,
      ),
      `definitions bind ${notificationQ.name} to ${notifications.exchange} with ${notificationKey}`,
    );
    const everything = [...defs.exchanges, ...defs.queues, ...defs.bindings, ...defs.policies];
    assert.ok(
      everything.every((item) => item.vhost === VHOST),
      `everything lives in vhost ${VHOST}`,
    );
    assert.deepEqual(
      defs.vhosts.map((v) => v.name),
      [VHOST],
    );
  });

  it('policies: every queue is capped, command queues dead-letter and cap deliveries', () => {
    const defs = definitions();
    const applying = (name: string): string[] =>
      defs.policies.filter((p) => new RegExp(p.pattern).test(name)).map((p) => p.name);
    assert.deepEqual(applying(defaults.amqp.unroutableExchange), ['virtbus-unroutable']);
    assert.deepEqual(applying(defaults.consumer.deadLetterQueue), ['virtbus-dead-letter']);
    for (const host of [HOST, 'cmp-01', 'Compute_9.Example.ORG']) {
      assert.deepEqual(applying(commandQueueName(host)), ['virtbus-commands'], commandQueueName(host));
    }
    assert.deepEqual(applying(defaults.consumer.queue), ['virtbus-consumer'], 'a byte cap, reject-publish');
    assert.deepEqual(applying(defaults.consumer.resultQueue), ['virtbus-results']);
    assert.deepEqual(applying(notificationQ.name), ['virtbus-notifications']);
    assert.deepEqual(applying('versioned_notifications.error'), [], 'only the queue the consumer declares');
    const capped = defs.policies.find((p) => p.name === 'virtbus-notifications');
    assert.ok(Number(capped?.definition['max-length']) > 0, 'nobody may consume it: a length cap');
    assert.equal(capped?.definition.overflow, 'drop-head', 'the oldest notifications go first');
    const commands = defs.policies.find((p) => p.name === 'virtbus-commands');
    assert.equal(commands?.definition['dead-letter-exchange'], defaults.consumer.deadLetterExchange);
    assert.ok(Number(commands?.definition['delivery-limit']) > 0);
    for (const policy of defs.policies) assert.equal(policy['apply-to'], 'queues');
  });

  it('users (one per example host, the consumer, the observer) carry no usable password and no tags (no management, no admin)', () => {
    const defs = definitions();
    assert.deepEqual(defs.users.map((u) => u.name).sort(), [
      hostSegment(HOST),
      hostSegment(OTHER_HOST),
      'virtbus-consumer',
      'virtbus-observer',
    ]);
    for (const user of defs.users) {
      assert.equal(user.password_hash, '', `${user.name}: set the password with rabbitmqctl change_password`);
      assert.deepEqual(user.tags, []);
    }
  });

  it("each host's bridge user configures nothing, reads only its own command queue, writes only its own keys; nothing of the consumer", () => {
    for (const host of [HOST, OTHER_HOST]) {
      const user = hostSegment(host);
      const other = host === HOST ? OTHER_HOST : HOST;
      const p = permission(user);
      const [configure, write, read] = [p.configure, p.write, p.read].map((r) => new RegExp(r)) as [
        RegExp,
        RegExp,
        RegExp,
      ];
      // It declares passively: the definitions create everything it uses.
      const topology = bridgeTopology(host);
      for (const name of [...topology.exchanges.map((e) => e.name), ...topology.queues.map((q) => q.name)]) {
        assert.doesNotMatch(name, configure, `${user} may not configure ${name}`);
        assert.ok(
          definitions().exchanges.some((e) => e.name === name) ||
            definitions().queues.some((q) => q.name === name),
          `the definitions declare ${name} for the bridge`,
        );
      }
      assert.match(commandQueueName(host), read, `${user} consumes its command queue`);
      assert.doesNotMatch(commandQueueName(other), read, `${user} may not read ${commandQueueName(other)}`);
      for (const exchange of definitions().exchanges)
        assert.doesNotMatch(exchange.name, read, `${user} reads no exchange, so it can bind nothing`);
      for (const exchange of [defaults.amqp.exchange, defaults.amqp.commandExchange])
        assert.match(exchange, write, `${user} publishes to ${exchange}`);
      const consumerOnly = [
        defaults.consumer.queue,
        defaults.consumer.resultQueue,
        defaults.consumer.deadLetterQueue,
        defaults.consumer.notifications.exchange,
        defaults.amqp.unroutableExchange,
        notificationQ.name,
      ];
      for (const name of consumerOnly) {
        assert.doesNotMatch(name, configure, `${user} may not configure ${name}`);
        assert.doesNotMatch(name, write, `${user} may not write ${name}`);
        assert.doesNotMatch(name, read, `${user} may not read ${name}`);
      }
      const commands = topicPermission(user, defaults.amqp.commandExchange);
      assert.ok(commands);
      assert.match(commandResultRoutingKey(host), commands.write, `${user} publishes its results`);
      assert.doesNotMatch(
        commandResultRoutingKey(other),
        commands.write,
        `${user} cannot forge ${other}'s results`,
      );
      assert.doesNotMatch(commandRoutingKey(host), commands.write, `${user} cannot forge stop commands`);
      const lifecycle = topicPermission(user, defaults.amqp.exchange);
      assert.ok(lifecycle);
      assert.match(`${hostSegment(host)}.stopped`, lifecycle.write);
      assert.doesNotMatch(
        `${hostSegment(other)}.stopped`,
        lifecycle.write,
        `${user} cannot publish as ${other}`,
      );
    }
  });

  it('the consumer may use its queues, bind to the exchanges, publish commands and notifications; nothing of the bridge', () => {
    const p = permission('virtbus-consumer');
    const [configure, write, read] = [p.configure, p.write, p.read].map((r) => new RegExp(r)) as [
      RegExp,
      RegExp,
      RegExp,
    ];
    const topology = consumerDeclares();
    for (const name of [...topology.exchanges.map((e) => e.name), ...topology.queues.map((q) => q.name)])
      assert.match(name, configure, `consumer configures ${name}`);
    assert.match(
      defaults.consumer.notifications.exchange,
      configure,
      'consumer re-creates a lost nova exchange',
    );
    for (const binding of topology.bindings) {
      assert.match(binding.queue, write, `consumer binds queue ${binding.queue}`);
      assert.match(binding.exchange, read, `consumer binds from ${binding.exchange}`);
    }
    assert.match(notificationQ.name, configure, `consumer declares ${notificationQ.name} when missing`);
    assert.match(notificationQ.name, write, `consumer binds ${notificationQ.name}`);
    assert.match(notifications.exchange, read, `consumer binds from ${notifications.exchange}`);
    assert.doesNotMatch(
      notificationQ.name,
      read,
      'the consumer does not read the notifications it publishes',
    );
    assert.doesNotMatch('versioned_notifications.error', configure, 'no other notification queue');
    const nova = topicPermission('virtbus-consumer', notifications.exchange);
    assert.ok(nova, `the consumer's routing keys on ${notifications.exchange} are limited`);
    assert.match(notificationKey, nova.write, 'consumer publishes its notifications');
    assert.match(notificationKey, nova.read, 'consumer binds the queue with its routing key');
    for (const key of ['versioned_notifications.error', 'notifications.info', '#']) {
      assert.doesNotMatch(key, nova.write, `the consumer cannot publish ${key}`);
      assert.doesNotMatch(key, nova.read, `the consumer cannot bind with ${key}`);
    }
    for (const queue of [defaults.consumer.queue, defaults.consumer.resultQueue])
      assert.match(queue, read, `consumer consumes ${queue}`);
    for (const exchange of [
      defaults.amqp.commandExchange,
      defaults.consumer.notifications.exchange,
      defaults.consumer.deadLetterExchange,
    ])
      assert.match(exchange, write, `consumer publishes to ${exchange}`);
    assert.doesNotMatch(defaults.amqp.exchange, write, 'the consumer cannot forge lifecycle events');
    assert.doesNotMatch(commandQueueName(HOST), read, "the consumer cannot take a bridge's commands");
    assert.doesNotMatch(commandQueueName(HOST), configure);
    const commands = topicPermission('virtbus-consumer', defaults.amqp.commandExchange);
    assert.ok(commands);
    assert.match(commandRoutingKey(HOST), commands.write);
    assert.doesNotMatch(commandResultRoutingKey(HOST), commands.write, 'the consumer cannot forge results');
  });
});

/** A refusal: the broker closes the channel (or rejects the call) with 403 ACCESS_REFUSED. */
async function expectRefused(
  url: string,
  what: string,
  /** The resource the refusal must name, e.g. "exchange 'nova'" or "topic 'x.stop'". */
  resource: string,
  action: (channel: ConfirmChannel) => Promise<unknown>,
): Promise<string> {
  const model = await connect(url);
  try {
    const channel = await model.createConfirmChannel();
    const closed = new Promise<string>((resolve) => {
      channel.on('error', (error: Error) => resolve(error.message));
      channel.on('close', () => resolve('closed'));
    });
    let thrown: string | undefined;
    try {
      await action(channel);
    } catch (error) {
      thrown = error instanceof Error ? error.message : String(error);
    }
    const message = thrown?.includes('ACCESS_REFUSED')
      ? thrown
      : await Promise.race([
          closed,
          new Promise<string>((resolve) => setTimeout(() => resolve('no error'), 5000)),
        ]);
    assert.match(
      message,
      /403 \(ACCESS-REFUSED\)|ACCESS_REFUSED/,
      `${what} must be refused; got: ${message}`,
    );
    assert.ok(message.includes(`access to ${resource}`), `${what}: refused for ${resource}; got: ${message}`);
    return message;
  } finally {
    await model.close().catch(() => undefined);
  }
}

function publish(channel: ConfirmChannel, exchange: string, key: string, body = '{}'): Promise<void> {
  return new Promise((resolve, reject) => {
    channel.publish(exchange, key, Buffer.from(body), { persistent: true }, (error: unknown) =>
      error ? reject(error instanceof Error ? error : new Error('publish nacked')) : resolve(),
    );
  });
}

interface QueueInfo {
  name: string;
  type: string;
  policy: string;
  messages: number;
}

describe('deploy/rabbitmq/definitions.json imported into a private RabbitMQ node', () => {
  let node: RabbitSandbox;
  let libvirtd: LibvirtdSandbox;
  let driver: NativeConnection;
  let scratch: string;
  let dbUrl: string;
  const passwords = {
    [BRIDGE_USER]: randomBytes(12).toString('hex'),
    'virtbus-consumer': randomBytes(12).toString('hex'),
    'virtbus-observer': randomBytes(12).toString('hex'),
  };
  const url = (user: 'bridge' | 'consumer' | 'observer'): string => {
    const name = user === 'bridge' ? BRIDGE_USER : `virtbus-${user}`;
    return `amqp://${name}:${passwords[name]}@127.0.0.1:${node.port}/${VHOST}`;
  };
  let bridge: ServiceProcess;
  let consumer: ServiceProcess;
  let tail: ChildProcess;
  const tailed: Array<Record<string, unknown>> = [];

  const queues = async (): Promise<QueueInfo[]> =>
    JSON.parse(
      await node.ctl('list_queues', '-p', VHOST, 'name', 'type', 'policy', 'messages', '--formatter', 'json'),
    ) as QueueInfo[];

  const virtbusCli = (args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> =>
    run(process.execPath, [VIRTBUS_BIN, ...args], {
      env: { ...process.env, VIRTBUS_DB_URL: dbUrl, VIRTBUS_LOG_LEVEL: 'warn' },
    });

  before(async () => {
    [node, libvirtd] = await Promise.all([ownRabbitNode({ name: 'virtbus-defs' }), testLibvirtd()]);
    scratch = mkdtempSync(join(tmpdir(), 'virtbus-defs-'));
    onTeardown(() => Promise.resolve(rmSync(scratch, { recursive: true, force: true })));
    dbUrl = `sqlite:${join(scratch, 'instances.db')}`;
    // The broker reads the file as user rabbitmq, which may not traverse the checkout (say, under
    // /root): hand it a copy in the node's own directory.
    const readable = join(node.dir, 'definitions.json');
    copyFileSync(DEFINITIONS, readable);
    chmodSync(readable, 0o644);
    await node.ctl('import_definitions', readable);
    driver = await openDriver(libvirtd.uri);
    onTeardown(() => driver.close());
  });

  after(async () => {
    tail?.kill('SIGTERM');
    const exits = await Promise.all([bridge?.stop(), consumer?.stop()]);
    for (const exit of exits)
      if (exit) assert.deepEqual(exit, { code: 0, signal: null }, 'clean exit on SIGTERM');
  });

  it('the import creates the vhost, exchanges, quorum queues with their policies, and users that cannot log in yet', async () => {
    const exchanges = JSON.parse(
      await node.ctl('list_exchanges', '-p', VHOST, 'name', 'type', 'durable', '--formatter', 'json'),
    ) as Array<{ name: string; type: string; durable: boolean }>;
    for (const expected of definitions().exchanges) {
      const found = exchanges.find((e) => e.name === expected.name);
      assert.ok(found, `exchange ${expected.name} exists`);
      assert.equal(found.type, expected.type);
    }
    const listed = await queues();
    for (const queue of definitions().queues) {
      const type = (queue.arguments['x-queue-type'] as string | undefined) ?? 'classic';
      assert.equal(listed.find((q) => q.name === queue.name)?.type, type, queue.name);
    }
    assert.equal(listed.find((q) => q.name === notificationQ.name)?.type, 'classic');
    assert.equal(listed.find((q) => q.name === 'virtbus.unroutable')?.policy, 'virtbus-unroutable');
    assert.equal(listed.find((q) => q.name === 'virtbus.dead-letter')?.policy, 'virtbus-dead-letter');
    assert.equal(listed.find((q) => q.name === notificationQ.name)?.policy, 'virtbus-notifications');
    // Imported without a password: nobody can log in until the operator sets one.
    await assert.rejects(connect(`amqp://${BRIDGE_USER}:@127.0.0.1:${node.port}/${VHOST}`), /ACCESS.REFUSED/);
    await assert.rejects(
      connect(`amqp://${BRIDGE_USER}:anything@127.0.0.1:${node.port}/${VHOST}`),
      /ACCESS.REFUSED/,
    );
    for (const [user, password] of Object.entries(passwords))
      await node.ctl('change_password', user, password);
  });

  it('virtbus bridge, consumer and tail run as their users: a destroyed domain is stopped in the database through the bus', async () => {
    const ref = await driver.defineXML(domainXml('defs-1'));
    await driver.start(ref.uuid);
    const instances = join(scratch, 'instances.json');
    writeFileSync(
      instances,
      JSON.stringify([
        {
          uuid: ref.uuid,
          host: HOST,
          vm_state: 'active',
          task_state: null,
          power_state: 1,
          launched_at: '2026-01-01T00:00:00Z',
        },
      ]),
    );
    const imported = await virtbusCli(['instances', 'import', instances]);
    assert.equal(imported.code, 0, imported.stderr);

    consumer = startVirtbus('consumer', {
      VIRTBUS_AMQP_URL: url('consumer'),
      VIRTBUS_DB_URL: dbUrl,
      VIRTBUS_STOP_TIMEOUT_MS: '30000',
    });
    tail = spawn(process.execPath, [VIRTBUS_BIN, 'tail', '--json'], {
      env: { ...process.env, VIRTBUS_AMQP_URL: url('observer') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let partial = '';
    let tailErr = '';
    tail.stdout?.on('data', (chunk: Buffer) => {
      partial += chunk.toString('utf8');
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) if (line.trim()) tailed.push(JSON.parse(line) as Record<string, unknown>);
    });
    tail.stderr?.on('data', (chunk: Buffer) => (tailErr += chunk.toString('utf8')));
    // tail's own exclusive queue (amq.gen-…, the only name its user may declare) is bound before
    // the bridge starts, so it sees the start snapshot.
    await waitUntil(
      "virtbus tail's queue as virtbus-observer",
      async () => (await queues()).some((q) => q.name.startsWith('amq.gen-')),
      20000,
      100,
    ).catch((error: unknown) => {
      throw new Error(`${String(error)}; virtbus tail stderr: ${tailErr}`);
    });
    bridge = startVirtbus('bridge', {
      VIRTBUS_HOST: HOST,
      VIRTBUS_LIBVIRT_URI: libvirtd.uri,
      VIRTBUS_AMQP_URL: url('bridge'),
      VIRTBUS_BRIDGE_DECLARE_TOPOLOGY: 'false',
      VIRTBUS_STOP_DELAY_MS: '0',
      VIRTBUS_OUTBOX_DIR: join(scratch, 'outbox'),
      VIRTBUS_GRACEFUL_SHUTDOWN_TIMEOUT_MS: '1000',
    });

    const [bridgeUrl, consumerUrl] = await Promise.all([
      serviceMetricsUrl(bridge),
      serviceMetricsUrl(consumer),
    ]);
    const ready = async (base: string): Promise<boolean> =>
      (await fetch(`${base}/readyz`).catch(() => undefined))?.status === 200;
    await waitUntil('bridge /readyz', () => ready(bridgeUrl), 30000, 100);
    await waitUntil('consumer /readyz', () => ready(consumerUrl), 30000, 100);
    await consumer.waitForLog('consuming', (line) => line.msg === 'consuming');
    await waitUntil(
      'virtbus tail to print the start snapshot',
      () => tailed.some((m) => m.transition === 'sync_end'),
      20000,
      50,
    );

    // Behind the system's back: Nova's 4b, "Instance shutdown by itself. Calling the stop API."
    await driver.destroy(ref.uuid);
    const list = async (): Promise<Array<Record<string, unknown>>> => {
      const listed = await virtbusCli(['instances', 'list', '--json']);
      assert.equal(listed.code, 0, listed.stderr);
      return JSON.parse(listed.stdout) as Array<Record<string, unknown>>;
    };
    await waitUntil(
      'the row to reach vm_state stopped through the stop command',
      async () => (await list()).some((r) => r.uuid === ref.uuid && r.vm_state === 'stopped'),
      30000,
      200,
    );
    const row = (await list()).find((r) => r.uuid === ref.uuid);
    assert.equal(row?.power_state, 4);
    assert.equal(row?.task_state, null);
    assert.ok(
      tailed.some((m) => m.instance_uuid === ref.uuid && m.transition === 'stopped'),
      'the observer saw the stopped event',
    );

    const bridgeMetrics = await scrape(bridgeUrl);
    assert.ok(
      (metricValue(bridgeMetrics, 'virtbus_events_published_total', { transition: 'stopped' }) ?? 0) >= 1,
    );
    assert.ok((metricValue(bridgeMetrics, 'virtbus_commands_total', { action: 'stop' }) ?? 0) >= 1);
    assert.equal(
      metricValue(bridgeMetrics, 'virtbus_publish_failures_total'),
      undefined,
      'no publish failed',
    );
    const consumerMetrics = await scrape(consumerUrl);
    assert.ok(
      (metricValue(consumerMetrics, 'virtbus_consumer_messages_total', { outcome: 'command_result' }) ?? 0) >=
        1,
    );
    assert.ok(
      (metricValue(consumerMetrics, 'virtbus_notifications_total', { outcome: 'published' }) ?? 0) >= 1,
      'notifications on the nova exchange were confirmed',
    );
    assert.equal(
      metricValue(consumerMetrics, 'virtbus_notifications_total', { outcome: 'failed' }),
      undefined,
    );
    const listed = await queues();
    assert.ok(
      (listed.find((q) => q.name === notificationQ.name)?.messages ?? 0) >= 1,
      `with no listener bound, the notifications were kept in ${notificationQ.name}`,
    );
    assert.equal(
      listed.find((q) => q.name === commandQueueName(HOST))?.policy,
      'virtbus-commands',
      "the bridge's command queue picked up the commands policy",
    );
  });

  it('a malformed stop command is dead-lettered by the commands policy, not lost', async () => {
    const deadLetter = async (): Promise<number> =>
      (await queues()).find((q) => q.name === defaults.consumer.deadLetterQueue)?.messages ?? 0;
    const before = await deadLetter();
    const model = await connect(url('consumer'));
    try {
      const channel = await model.createConfirmChannel();
      // From the verified consumer identity, so only its content is wrong.
      await new Promise<void>((resolve, reject) =>
        channel.publish(
          defaults.amqp.commandExchange,
          commandRoutingKey(HOST),
          Buffer.from('{"not":"a command"}'),
          { persistent: true, userId: 'virtbus-consumer' },
          (error: unknown) => (error ? reject(new Error('nacked')) : resolve()),
        ),
      );
    } finally {
      await model.close();
    }
    await waitUntil(
      'the malformed command in the dead-letter queue',
      async () => (await deadLetter()) > before,
      15000,
      200,
    );
    await bridge.waitForLog(
      'the bridge dropping it',
      (line) => line.msg === 'malformed stop command dropped',
    );
  });

  it('the bridge user is refused everything outside its grant', async () => {
    const bridgeUrl = url('bridge');
    await expectRefused(bridgeUrl, 'publishing a notification', "exchange 'nova'", (ch) =>
      publish(ch, 'nova', 'versioned_notifications.info'),
    );
    await expectRefused(
      bridgeUrl,
      'forging a stop command for another host',
      `topic '${commandRoutingKey(OTHER_HOST)}'`,
      (ch) => publish(ch, defaults.amqp.commandExchange, commandRoutingKey(OTHER_HOST)),
    );
    await expectRefused(
      bridgeUrl,
      'publishing to the dead-letter exchange',
      "exchange 'virtbus.dead-letter'",
      (ch) => publish(ch, defaults.consumer.deadLetterExchange, 'x'),
    );
    await expectRefused(
      bridgeUrl,
      'declaring the notification queue',
      `queue '${notificationQ.name}'`,
      (ch) => ch.assertQueue(notificationQ.name, { durable: notificationQ.durable }),
    );
    await expectRefused(bridgeUrl, 'declaring another queue', "queue 'virtbus.sneaky'", (ch) =>
      ch.assertQueue('virtbus.sneaky'),
    );
    await expectRefused(
      bridgeUrl,
      'reading the unroutable queue',
      `queue '${defaults.amqp.unroutableExchange}'`,
      (ch) => ch.consume(defaults.amqp.unroutableExchange, () => undefined),
    );
    await expectRefused(bridgeUrl, 'declaring an exclusive server-named queue', "queue 'amq.gen-", (ch) =>
      ch.assertQueue('', { exclusive: true }),
    );
    await expectRefused(bridgeUrl, 'consuming the consumer queue', "queue 'virtbus.consumer'", (ch) =>
      ch.consume(defaults.consumer.queue, () => undefined),
    );
    await expectRefused(bridgeUrl, 'deleting the consumer queue', "queue 'virtbus.consumer'", (ch) =>
      ch.deleteQueue(defaults.consumer.queue),
    );
  });

  it('the consumer user is refused everything outside its grant', async () => {
    const consumerUrl = url('consumer');
    await expectRefused(consumerUrl, 'forging a lifecycle event', "exchange 'virtbus.lifecycle'", (ch) =>
      publish(ch, defaults.amqp.exchange, `${SEGMENT}.stopped`),
    );
    await expectRefused(
      consumerUrl,
      'forging a stop result',
      `topic '${commandResultRoutingKey(HOST)}'`,
      (ch) => publish(ch, defaults.amqp.commandExchange, commandResultRoutingKey(HOST)),
    );
    await expectRefused(
      consumerUrl,
      "consuming a bridge's command queue",
      `queue '${commandQueueName(HOST)}'`,
      (ch) => ch.consume(commandQueueName(HOST), () => undefined),
    );
    await expectRefused(consumerUrl, 'declaring another exchange', "exchange 'virtbus.other'", (ch) =>
      ch.assertExchange('virtbus.other', 'topic'),
    );
    await expectRefused(
      consumerUrl,
      'reading the notification queue',
      `queue '${notificationQ.name}'`,
      (ch) => ch.consume(notificationQ.name, () => undefined),
    );
    await expectRefused(
      consumerUrl,
      'declaring another notification queue',
      "queue 'versioned_notifications.error'",
      (ch) => ch.assertQueue('versioned_notifications.error', { durable: false }),
    );
    await expectRefused(
      consumerUrl,
      'publishing a notification with another routing key',
      "topic 'versioned_notifications.error'",
      (ch) => publish(ch, notifications.exchange, 'versioned_notifications.error'),
    );
    await expectRefused(consumerUrl, 'binding its own queue to every notification', "topic '#'", (ch) =>
      ch.bindQueue(defaults.consumer.queue, notifications.exchange, '#'),
    );
  });

  it('the observer user (virtbus tail) may only read the lifecycle exchange through its own temporary queue', async () => {
    const observerUrl = url('observer');
    await expectRefused(observerUrl, 'publishing a lifecycle event', "exchange 'virtbus.lifecycle'", (ch) =>
      publish(ch, defaults.amqp.exchange, `${SEGMENT}.started`),
    );
    await expectRefused(observerUrl, 'consuming the consumer queue', "queue 'virtbus.consumer'", (ch) =>
      ch.consume(defaults.consumer.queue, () => undefined),
    );
    await expectRefused(
      observerUrl,
      'binding to the command exchange',
      "exchange 'virtbus.commands'",
      async (ch) => {
        const { queue } = await ch.assertQueue('', { exclusive: true });
        await ch.bindQueue(queue, defaults.amqp.commandExchange, '#');
      },
    );
    await expectRefused(observerUrl, 'declaring a named queue', "queue 'virtbus.tail.", (ch) =>
      ch.assertQueue(`virtbus.tail.${randomUUID()}`),
    );
  });
});

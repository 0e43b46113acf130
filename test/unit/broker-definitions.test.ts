/**
 * `virtbus broker definitions` (src/broker/): the shipped deploy/rabbitmq/definitions.json must be
 * exactly what the generator writes for the example hosts (so the secure file and the tool never
 * drift), the permission patterns must give each host its own keys and queue and nothing else, the
 * policies must cap every queue, and password files must be private and reused. The broker-side
 * proof that these patterns are enforced is test/security/broker-refusals.test.ts.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadOrCreatePasswords, credentialUrl, passwordFile } from '../../src/broker/credentials';
import {
  DefinitionsError,
  formatDefinitions,
  generateDefinitions,
  parseHostList,
  passwordMatches,
  rabbitPasswordHash,
  type Definitions,
} from '../../src/broker/definitions';
import { loadConfig } from '../../src/config/load';
import { consumerTopology } from '../../src/consumer/topology';
import { commandQueueName, commandResultRoutingKey, commandRoutingKey } from '../../src/messages/command';
import { TRANSITIONS } from '../../src/libvirt/translate';
import { hostSegment, lifecycleRoutingKey } from '../../src/messages/lifecycle';
import { run } from '../../src/sandbox/exec';
import { VIRTBUS_BIN } from '../support/bridge-process';
import { deployFile } from '../support/deploy';

/** The hosts deploy/rabbitmq/definitions.json is generated for (docs/operations.md says so). */
const EXAMPLE_HOSTS = ['cmp-01.example.org', 'cmp-02.example.org'];
const defaults = loadConfig({ role: 'consumer', env: {}, skipDefaultFile: true });
const generate = (hosts = EXAMPLE_HOSTS): Definitions => generateDefinitions({ hosts, config: defaults });

describe('virtbus broker definitions', () => {
  it('the shipped deploy/rabbitmq/definitions.json is the generator output for the example hosts', async () => {
    const shipped = readFileSync(deployFile('rabbitmq', 'definitions.json'), 'utf8');
    assert.equal(shipped, formatDefinitions(generate()), 'regenerate: see docs/operations.md');
    const cli = await run(
      process.execPath,
      [VIRTBUS_BIN, 'broker', 'definitions', '--hosts', EXAMPLE_HOSTS.join(','), '--certificates'],
      { env: { PATH: process.env.PATH ?? '' } },
    );
    assert.equal(cli.code, 0, cli.stderr);
    assert.equal(cli.stdout, shipped, 'the command writes the same file');
  });

  it('each host gets a user named after its routing segment that configures nothing and reads only its own command queue', () => {
    const defs = generate();
    for (const host of EXAMPLE_HOSTS) {
      const user = hostSegment(host);
      const other = EXAMPLE_HOSTS.find((h) => h !== host) as string;
      assert.ok(defs.users.some((u) => u.name === user && u.tags.length === 0));
      const p = defs.permissions.find((x) => x.user === user);
      assert.ok(p, `permissions of ${user}`);
      const [configure, write, read] = [p.configure, p.write, p.read].map((r) => new RegExp(r)) as [
        RegExp,
        RegExp,
        RegExp,
      ];
      const everyName = [
        ...defs.exchanges.map((e) => e.name),
        ...defs.queues.map((q) => q.name),
        'amq.default',
        'amq.topic',
        'amq.gen-x',
      ];
      for (const name of everyName) assert.doesNotMatch(name, configure, `${user} configures ${name}`);
      assert.deepEqual(
        everyName.filter((name) => read.test(name)),
        [commandQueueName(host)],
        `${user} reads only its own command queue (no exchange: it can bind nothing)`,
      );
      assert.deepEqual(
        everyName.filter((name) => write.test(name)).sort(),
        [defaults.amqp.commandExchange, defaults.amqp.exchange].sort(),
        `${user} publishes to the lifecycle and command exchanges only`,
      );
      const topic = (exchange: string): { write: RegExp; read: RegExp } => {
        const t = defs.topic_permissions.find((x) => x.user === user && x.exchange === exchange);
        assert.ok(t, `${user} has topic permissions on ${exchange}`);
        return { write: new RegExp(t.write), read: new RegExp(t.read) };
      };
      const lifecycle = topic(defaults.amqp.exchange);
      for (const transition of TRANSITIONS) {
        assert.match(lifecycleRoutingKey(host, transition), lifecycle.write);
        assert.doesNotMatch(lifecycleRoutingKey(other, transition), lifecycle.write);
      }
      assert.doesNotMatch(`${hostSegment(host)}.stopped.x`, lifecycle.write);
      const commands = topic(defaults.amqp.commandExchange);
      assert.match(commandResultRoutingKey(host), commands.write);
      for (const key of [commandResultRoutingKey(other), commandRoutingKey(host), commandRoutingKey(other)])
        assert.doesNotMatch(key, commands.write, `${user} may not publish ${key}`);
      for (const t of [lifecycle, commands]) assert.doesNotMatch('#', t.read);
    }
  });

  it('declares the shared objects exactly as the consumer declares them, plus each host’s command queue and binding', () => {
    const defs = generate();
    const code = consumerTopology(defaults);
    for (const queue of code.queues)
      assert.deepEqual(
        defs.queues.find((q) => q.name === queue.name)?.arguments,
        queue.arguments ?? {},
        `${queue.name}: the consumer's redeclaration must be equivalent`,
      );
    for (const exchange of code.exchanges)
      assert.deepEqual(
        defs.exchanges.find((e) => e.name === exchange.name)?.arguments,
        exchange.arguments ?? {},
      );
    for (const host of EXAMPLE_HOSTS) {
      assert.deepEqual(defs.queues.find((q) => q.name === commandQueueName(host))?.arguments, {
        'x-queue-type': 'quorum',
      });
      assert.ok(
        defs.bindings.some(
          (b) =>
            b.source === defaults.amqp.commandExchange &&
            b.destination === commandQueueName(host) &&
            b.routing_key === commandRoutingKey(host),
        ),
      );
    }
    assert.ok(
      !defs.bindings.some((b) => b.destination_type !== 'queue'),
      'no exchange-to-exchange binding is shipped',
    );
    const unroutable = defs.bindings.filter((b) => b.destination === defaults.amqp.unroutableExchange);
    assert.deepEqual(
      unroutable.map((b) => b.source),
      [defaults.amqp.unroutableExchange],
      'only the alternate exchange feeds the unroutable queue',
    );
  });

  it('exactly one capping policy applies to every queue: reject-publish on the ones whose loss is an event lost', () => {
    const defs = generate(['cmp-01.example.org', 'Compute_9.Example.ORG']);
    for (const queue of defs.queues) {
      const applying = defs.policies.filter((p) => new RegExp(p.pattern).test(queue.name));
      assert.equal(applying.length, 1, `${queue.name}: ${applying.map((p) => p.name).join(', ')}`);
      const definition = (applying[0] as Definitions['policies'][number]).definition;
      assert.ok(Number(definition['max-length-bytes']) > 0, `${queue.name} is capped in bytes`);
      const losesEvents =
        [defaults.consumer.queue, defaults.consumer.resultQueue].includes(queue.name) ||
        queue.name.startsWith('virtbus.commands.');
      assert.equal(definition.overflow, losesEvents ? 'reject-publish' : 'drop-head', queue.name);
    }
    const commands = defs.policies.find((p) => p.name === 'virtbus-commands');
    assert.equal(commands?.definition['dead-letter-exchange'], defaults.consumer.deadLetterExchange);
  });

  it('follows renamed queues and exchanges from the configuration', () => {
    const config = loadConfig({
      role: 'consumer',
      env: { VIRTBUS_CONSUMER_QUEUE: 'site.events', VIRTBUS_EXCHANGE: 'site.lifecycle' },
      skipDefaultFile: true,
    });
    const defs = generateDefinitions({ hosts: ['h1'], config });
    assert.ok(defs.queues.some((q) => q.name === 'site.events'));
    assert.ok(
      defs.policies.some((p) => p.name === 'virtbus-consumer' && new RegExp(p.pattern).test('site.events')),
    );
    assert.ok(defs.topic_permissions.some((t) => t.user === 'h1' && t.exchange === 'site.lifecycle'));
  });

  it('refuses host lists that would make two hosts one identity or a host a service user', () => {
    assert.throws(() => generate([]), DefinitionsError);
    assert.throws(() => generate(['cmp-01.example.org', 'CMP-01.example.org']), /share the routing segment/);
    assert.throws(() => generate(['cmp_01', 'cmp.01']), /share the routing segment/);
    assert.throws(() => generate(['virtbus-consumer']), /service user/);
    assert.throws(() => generate([' h1']), /spaces/);
    assert.deepEqual(parseHostList('# hypervisors\ncmp-01.example.org\n\ncmp-02 # rack 2\n'), [
      'cmp-01.example.org',
      'cmp-02',
    ]);
    assert.deepEqual(parseHostList('a, b,c'), ['a', 'b', 'c']);
  });

  it("hashes passwords in RabbitMQ's salted SHA-256 format, never in clear", () => {
    const hash = rabbitPasswordHash('cmp-01_example_org', 'correct horse battery staple');
    const raw = Buffer.from(hash, 'base64');
    assert.equal(raw.length, 4 + 32, '4-byte salt, SHA-256 digest');
    const expected = createHash('sha256')
      .update(Buffer.concat([raw.subarray(0, 4), Buffer.from('correct horse battery staple')]))
      .digest();
    assert.deepEqual(raw.subarray(4), expected);
    assert.ok(passwordMatches(hash, 'correct horse battery staple'));
    assert.ok(!passwordMatches(hash, 'wrong'));
    assert.notEqual(rabbitPasswordHash('other', 'correct horse battery staple'), hash, 'salted per user');
    const defs = generateDefinitions({
      hosts: ['h1'],
      config: defaults,
      passwords: new Map([['h1', 'correct horse battery staple']]),
    });
    assert.ok(!formatDefinitions(defs).includes('correct horse'), 'no clear password in the file');
    assert.ok(
      passwordMatches(
        defs.users.find((u) => u.name === 'h1')?.password_hash ?? '',
        'correct horse battery staple',
      ),
    );
    assert.equal(
      defs.users.find((u) => u.name === 'virtbus-consumer')?.password_hash,
      '',
      'no password given: no login',
    );
  });

  it('password files are created 0600 in a 0700 directory, reused, and refused when readable by others', () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'virtbus-pw-')), 'passwords');
    try {
      const first = loadOrCreatePasswords(dir, ['h1', 'h2']);
      assert.deepEqual(first.created, ['h1', 'h2']);
      assert.equal(statSync(dir).mode & 0o777, 0o700);
      assert.equal(statSync(passwordFile(dir, 'h1')).mode & 0o777, 0o600);
      assert.ok((first.passwords.get('h1') ?? '').length >= 40);
      assert.notEqual(first.passwords.get('h1'), first.passwords.get('h2'));
      const again = loadOrCreatePasswords(dir, ['h1', 'h2']);
      assert.deepEqual(again.created, []);
      assert.equal(again.passwords.get('h1'), first.passwords.get('h1'), 'reused, not regenerated');
      writeFileSync(passwordFile(dir, 'h3'), 'short\n', { mode: 0o600 });
      assert.throws(() => loadOrCreatePasswords(dir, ['h3']), /at least 16/);
      chmodSync(passwordFile(dir, 'h1'), 0o644);
      assert.throws(() => loadOrCreatePasswords(dir, ['h1']), /readable by others/);
    } finally {
      rmSync(join(dir, '..'), { recursive: true, force: true });
    }
    assert.equal(
      credentialUrl('amqps://rabbit.example.org:5671,amqps://rabbit2:5671', 'virtbus', 'h1', 'p/w'),
      'amqps://h1:p%2Fw@rabbit.example.org:5671/virtbus,amqps://h1:p%2Fw@rabbit2:5671/virtbus',
    );
  });

  it('the command exits 2 naming the problem on bad usage', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['definitions', '--certificates'], /--hosts is required/],
      [['definitions', '--hosts', 'a'], /exactly one of --passwords DIR and --certificates/],
      [['definitions', '--hosts', 'a', '--certificates', '--passwords', '/tmp/x'], /exactly one/],
      [['definitions', '--hosts', 'a,A', '--certificates'], /share the routing segment/],
      [['definitions', '--hosts', '/nonexistent/hosts', '--certificates'], /does not exist/],
      [['definitions', '--hosts', 'a', '--certificates', '--broker-url', 'amqp://x'], /needs --passwords/],
      [['nonsense'], /subcommand 'definitions'/],
    ];
    for (const [args, message] of cases) {
      const result = await run(process.execPath, [VIRTBUS_BIN, 'broker', ...args], {
        env: { PATH: process.env.PATH ?? '' },
      });
      assert.equal(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
      assert.match(result.stderr, message);
    }
  });
});

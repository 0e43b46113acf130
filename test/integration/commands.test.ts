/**
 * Stop commands against a real `virtbus bridge` process, a real RabbitMQ vhost and the test-driver
 * libvirtd (issue 10, bridge side): only the trusted consumer's broker-verified commands for this host
 * run; a replayed command is not executed again, also after a bridge restart; a command valid too far
 * ahead is refused; results carry the bridge's broker user as user_id; a broker-side cancel of the
 * command consumer is followed by a new subscription; with the default passive topology the bridge
 * declares nothing and names what is missing.
 */
import { stopCommandBody } from '../support/commands';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitUntil } from '../support/wait';
import { connect, type ChannelModel, type ConfirmChannel, type Options } from 'amqplib';
import { testBroker, testLibvirtd, type TestBroker } from '../support/services';
import { metricValue, scrape, startVirtbus, type ServiceProcess } from '../support/bridge-process';
import { domainXml, openDriver } from '../support/domains';
import type { LibvirtdSandbox } from '../../src/sandbox';
import type { NativeConnection } from '../../src/native/contract';
import {
  commandQueueName,
  commandResultRoutingKey,
  commandRoutingKey,
  type CommandResult,
} from '../../src/messages/command';
import { isoMicros, nowMicros } from '../../src/util/time';

const HOST = 'cmp-cmd';
const RUNNING = 1;

interface Received {
  readonly result: CommandResult;
  readonly userId: unknown;
}

/** Waits with this file's default bound (20 s). */
const until = (what: string, predicate: () => boolean | Promise<boolean>, timeoutMs = 20000): Promise<void> =>
  waitUntil(what, predicate, timeoutMs);

/** The message of a log line's serialized error, or ''. */
function errorMessage(line: Record<string, unknown>): string {
  const message = (line.err as { message?: unknown } | undefined)?.message;
  return typeof message === 'string' ? message : '';
}

function uuid(n: number): string {
  return `d0000000-0000-4000-8000-${String(n).padStart(12, '0')}`;
}

describe('bridge stop commands: senders, replays, horizon, re-subscription', () => {
  let libvirtd: LibvirtdSandbox;
  let broker: TestBroker;
  let driver: NativeConnection;
  let bridge: ServiceProcess;
  let model: ChannelModel;
  let channel: ConfirmChannel;
  let resultQueue: string;
  const results: Received[] = [];
  const outbox = mkdtempSync(join(tmpdir(), 'virtbus-commands-'));
  const env = (): NodeJS.ProcessEnv => ({
    VIRTBUS_HOST: HOST,
    VIRTBUS_LIBVIRT_URI: libvirtd.uri,
    VIRTBUS_AMQP_URL: broker.url,
    VIRTBUS_OUTBOX_DIR: outbox,
    VIRTBUS_GRACEFUL_SHUTDOWN_TIMEOUT_MS: '1000',
  });
  const startBridge = async (): Promise<ServiceProcess> => {
    const started = startVirtbus('bridge', env());
    await started.waitForLog('the command consumer', (l) => l.msg === 'taking stop commands', 30000);
    return started;
  };
  const commands = async (outcome: string): Promise<number> =>
    metricValue(await scrape(await bridge.metricsUrl()), 'virtbus_commands_total', { outcome }) ?? 0;

  const send = async (
    id: string,
    domain: string,
    extra: Record<string, unknown> = {},
    properties: Options.Publish = { userId: 'guest' },
  ): Promise<void> => {
    channel.publish('virtbus.commands', commandRoutingKey(HOST), stopCommandBody(HOST, id, domain, extra), {
      persistent: true,
      ...properties,
    });
    await channel.waitForConfirms();
  };
  const resultOf = async (id: string): Promise<Received> => {
    await until(`the result of ${id}`, () => results.some((r) => r.result.command_id === id));
    return results.find((r) => r.result.command_id === id)!;
  };
  const runningDomain = async (name: string): Promise<string> => {
    const ref = await driver.defineXML(domainXml(name));
    await driver.start(ref.uuid);
    return ref.uuid;
  };
  const state = async (domain: string): Promise<number> => (await driver.domainState(domain)).state;

  before(async () => {
    [libvirtd, broker] = await Promise.all([testLibvirtd(), testBroker()]);
    driver = await openDriver(libvirtd.uri);
    bridge = await startBridge();
    model = await connect(broker.url);
    channel = await model.createConfirmChannel();
    const { queue } = await channel.assertQueue('', { exclusive: true });
    resultQueue = queue;
    await channel.bindQueue(queue, 'virtbus.commands', commandResultRoutingKey(HOST));
    await channel.consume(
      queue,
      (m) =>
        m &&
        results.push({
          result: JSON.parse(m.content.toString()) as CommandResult,
          userId: m.properties.userId,
        }),
      { noAck: true },
    );
  });

  after(async () => {
    await model.close();
    const exit = await bridge.stop('SIGTERM');
    assert.deepEqual(exit, { code: 0, signal: null }, bridge.stderr());
    await driver.close();
  });

  it('executes only what the trusted consumer sent for this host; the rest is counted, not run', async () => {
    const domain = await runningDomain('cmd-trust');
    await send(uuid(1), domain, {}, {}); // no user_id: not verified by the broker
    await send(uuid(2), domain, { host: 'cmp-other' }); // routed here, but for another host
    await send('not-a-uuid', domain);
    channel.publish('virtbus.commands', commandRoutingKey(HOST), Buffer.alloc(64 * 1024, 0x7b), {
      userId: 'guest',
    });
    await channel.waitForConfirms();
    await until('the rejections counted', async () => (await commands('malformed')) >= 2);
    await until('the sender rejection counted', async () => (await commands('untrusted_sender')) >= 1);
    await until('the host rejection counted', async () => (await commands('wrong_host')) >= 1);
    assert.equal(await state(domain), RUNNING, 'the guest was not touched');
    assert.ok(!results.some((r) => [uuid(1), uuid(2)].includes(r.result.command_id)), 'nothing answered');
    assert.ok(bridge.logs.some((l) => l.msg === 'stop command not executed' && l.outcome === 'wrong_host'));
    // Still taking commands: the trusted one runs, and its result names the bridge's broker user.
    await send(uuid(3), domain);
    const done = await resultOf(uuid(3));
    assert.equal(done.result.outcome, 'stopped');
    assert.equal(done.userId, 'guest', "the result's user_id is the bridge's broker user");
    assert.equal(await state(domain), 5);
  });

  it('a replayed command is not executed again, also after a bridge restart', async () => {
    const domain = await runningDomain('cmd-replay');
    await send(uuid(10), domain);
    assert.equal((await resultOf(uuid(10))).result.outcome, 'stopped');
    await driver.start(domain);
    const before = await commands('replayed');
    await send(uuid(10), domain);
    await until('the replay counted', async () => (await commands('replayed')) > before);
    assert.equal(await state(domain), RUNNING, 'the replay did not stop the guest');

    const file = join(outbox, 'executed-commands.jsonl');
    assert.equal(statSync(file).mode & 0o777, 0o600, 'the executed ids file is private');
    const exit = await bridge.stop('SIGTERM');
    assert.equal(exit.code, 0, bridge.stderr());
    bridge = await startBridge();
    await send(uuid(10), domain);
    await until('the replay counted after the restart', async () => (await commands('replayed')) >= 1);
    assert.equal(await state(domain), RUNNING, 'the replay after a restart did not stop the guest');
    assert.equal(results.filter((r) => r.result.command_id === uuid(10)).length, 1, 'answered once');
  });

  it('a command valid further ahead than the horizon is refused, without reading libvirt', async () => {
    const domain = await runningDomain('cmd-horizon');
    await send(uuid(20), domain, { expires_at: isoMicros(nowMicros() + 3_600_000_000) });
    const { result } = await resultOf(uuid(20));
    assert.equal(result.outcome, 'refused');
    assert.equal(result.power_state, null);
    assert.match(result.error ?? '', /maxExpiryMs/);
    assert.equal(await state(domain), RUNNING);
  });

  it('a result the broker returns (mandatory, no queue bound) is not lost: the command is answered once a queue is bound', async () => {
    await channel.unbindQueue(resultQueue, 'virtbus.commands', commandResultRoutingKey(HOST));
    const domain = await runningDomain('cmd-unroutable');
    await send(uuid(25), domain);
    await until('the returned result noticed', () =>
      bridge.logs.some(
        (l) =>
          l.msg === 'could not publish a command result; the command will be redelivered' &&
          errorMessage(l).includes('returned the result'),
      ),
    );
    assert.ok(
      (metricValue(await scrape(await bridge.metricsUrl()), 'virtbus_publish_failures_total', {
        reason: 'result_unroutable',
      }) ?? 0) >= 1,
    );
    assert.equal(await state(domain), 5, 'the command itself ran');
    await channel.bindQueue(resultQueue, 'virtbus.commands', commandResultRoutingKey(HOST));
    const { result } = await resultOf(uuid(25));
    assert.equal(result.outcome, 'stopped', 'the stored result, not a second run (already_stopped)');
  });

  it('subscribes again after the broker cancels the command consumer', async () => {
    const admin = await model.createChannel();
    await admin.deleteQueue(commandQueueName(HOST));
    await admin.close();
    await until('the cancel noticed', () =>
      bridge.logs.some((l) => l.msg === 'the broker cancelled the command consumer; subscribing again'),
    );
    await until(
      'a new subscription',
      () => bridge.logs.filter((l) => l.msg === 'taking stop commands').length >= 2,
    );
    const domain = await runningDomain('cmd-cancel');
    await send(uuid(30), domain);
    assert.equal((await resultOf(uuid(30))).result.outcome, 'stopped');
  });
});

describe('bridge topology: passive by default', () => {
  it('declares nothing shared, names what is missing and how to create it, and starts once it exists', async () => {
    const [libvirtd, broker] = await Promise.all([testLibvirtd(), testBroker()]);
    const bridge = startVirtbus('bridge', {
      VIRTBUS_HOST: HOST,
      VIRTBUS_LIBVIRT_URI: libvirtd.uri,
      VIRTBUS_AMQP_URL: broker.url,
      VIRTBUS_BRIDGE_DECLARE_TOPOLOGY: 'false',
    });
    try {
      const missing = (what: RegExp) => (l: Record<string, unknown>) => what.test(errorMessage(l));
      const lifecycle = await bridge.waitForLog(
        'the missing lifecycle exchange named',
        missing(/exchange "virtbus\.(unroutable|lifecycle)" is missing/),
        30000,
      );
      assert.match(errorMessage(lifecycle), /virtbus broker definitions/);
      await bridge.waitForLog(
        'the missing command exchange or queue named',
        missing(/"virtbus\.commands/),
        30000,
      );
      const exchanges = await broker.ctl('list_exchanges', '-p', broker.vhost, 'name');
      assert.ok(!/virtbus\./.test(exchanges), `the bridge declared nothing: ${exchanges}`);

      // What the shipped definitions create: the bridge then starts without declaring anything.
      const model = await connect(broker.url);
      const admin = await model.createChannel();
      await admin.assertExchange('virtbus.unroutable', 'fanout', { durable: true });
      await admin.assertExchange('virtbus.lifecycle', 'topic', {
        durable: true,
        arguments: { 'alternate-exchange': 'virtbus.unroutable' },
      });
      await admin.assertExchange('virtbus.commands', 'topic', { durable: true });
      await admin.assertQueue(commandQueueName(HOST), {
        durable: true,
        arguments: { 'x-queue-type': 'quorum' },
      });
      await admin.bindQueue(commandQueueName(HOST), 'virtbus.commands', commandRoutingKey(HOST));
      await model.close();
      await bridge.waitForLog('the publishing channel', (l) => l.msg === 'publishing channel open', 60000);
      await bridge.waitForLog('the command consumer', (l) => l.msg === 'taking stop commands', 60000);
      const queues = await broker.ctl('list_queues', '-p', broker.vhost, 'name');
      assert.ok(
        !queues.includes('virtbus.unroutable'),
        'the unroutable queue was not declared by the bridge',
      );
    } finally {
      const exit = await bridge.stop('SIGTERM');
      assert.equal(exit.code, 0, bridge.stderr());
    }
  });
});

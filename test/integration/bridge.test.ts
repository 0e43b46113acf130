/**
 * `virtbus bridge` end to end against a real libvirtd (test driver, over its unix socket) and a real
 * RabbitMQ node: routing keys, bodies, bindings, Nova's delayed STOPPED, the start snapshot, stop
 * commands, unroutable messages and a clean SIGTERM.
 */
import { stopCommandBody } from '../support/commands';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'amqplib';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { testBroker, testLibvirtd, type TestBroker } from '../support/services';
import { BusRecorder, type Received } from '../support/bus';
import {
  metricValue,
  scrape,
  startVirtbus,
  VIRTBUS_BIN,
  type ServiceProcess,
} from '../support/bridge-process';
import { domainXml, openDriver } from '../support/domains';
import type { LibvirtdSandbox } from '../../src/sandbox';
import type { NativeConnection } from '../../src/native/contract';
import type { LifecycleMessage } from '../../src/messages/lifecycle';
import { commandRoutingKey, type CommandResult } from '../../src/messages/command';
import { isoMicros, nowMicros } from '../../src/util/time';

const HOST = 'cmp-01.Example.org';
const SEGMENT = 'cmp-01_example_org';
const STOP_DELAY_MS = 1500;
const EXCHANGE_ARGS = { arguments: { 'alternate-exchange': 'virtbus.unroutable' } };

describe('virtbus bridge', () => {
  let libvirtd: LibvirtdSandbox;
  let broker: TestBroker;
  let bridge: ServiceProcess;
  let driver: NativeConnection;
  let all: BusRecorder;
  let hostOnly: BusRecorder;
  let stoppedOnly: BusRecorder;
  let otherHost: BusRecorder;

  before(async () => {
    [libvirtd, broker] = await Promise.all([testLibvirtd(), testBroker()]);
    [all, hostOnly, stoppedOnly, otherHost] = await Promise.all([
      BusRecorder.listen(broker.url, 'virtbus.lifecycle', ['#'], EXCHANGE_ARGS),
      BusRecorder.listen(broker.url, 'virtbus.lifecycle', [`${SEGMENT}.*`], EXCHANGE_ARGS),
      BusRecorder.listen(broker.url, 'virtbus.lifecycle', ['*.stopped'], EXCHANGE_ARGS),
      BusRecorder.listen(broker.url, 'virtbus.lifecycle', ['cmp-02.*'], EXCHANGE_ARGS),
    ]);
    driver = await openDriver(libvirtd.uri);
    bridge = startVirtbus('bridge', {
      VIRTBUS_HOST: HOST,
      VIRTBUS_LIBVIRT_URI: libvirtd.uri,
      VIRTBUS_AMQP_URL: broker.url,
      VIRTBUS_STOP_DELAY_MS: String(STOP_DELAY_MS),
      VIRTBUS_GRACEFUL_SHUTDOWN_TIMEOUT_MS: '1000',
    });
    await all.waitFor('the start snapshot', (m) => m.some((x) => x.body.transition === 'sync_end'));
  });

  after(async () => {
    const exit = await bridge.stop('SIGTERM');
    assert.deepEqual(
      exit,
      { code: 0, signal: null },
      `bridge exit after SIGTERM; stderr: ${bridge.stderr()}`,
    );
    assert.ok(bridge.logs.some((l) => l.msg === 'bridge stopped'));
    await driver.close();
    await Promise.all([all.close(), hostOnly.close(), stoppedOnly.close(), otherHost.close()]);
  });

  const forDomain = (recorder: BusRecorder, uuid: string): Array<Received<LifecycleMessage>> =>
    recorder.filter((m) => m.body.instance_uuid === uuid);

  it('publishes a complete sync snapshot at start', () => {
    const syncs = all.filter((m) => m.body.transition === 'sync');
    const end = all.filter((m) => m.body.transition === 'sync_end');
    assert.equal(end.length, 1);
    const test = syncs.find((m) => m.body.domain_name === 'test');
    assert.ok(test, 'the default domain `test` is in the snapshot');
    assert.equal(test.routingKey, `${SEGMENT}.sync`);
    assert.equal(test.body.power_state, 1);
    assert.equal(test.body.power_state_name, 'running');
    assert.equal(test.body.nova_transition, null);
    assert.deepEqual(test.body.libvirt, {
      event: 'STATE',
      detail: 'RUNNING',
      event_code: -1,
      detail_code: 1,
    });
    assert.equal(test.body.snapshot?.reason, 'start');
    assert.equal(test.body.snapshot?.count, syncs.length);
    const endBody = end[0]!.body;
    assert.equal(end[0]!.routingKey, `${SEGMENT}.sync_end`);
    assert.equal(endBody.instance_uuid, null);
    assert.equal(endBody.snapshot?.id, test.body.snapshot?.id);
    assert.deepEqual(
      [...(endBody.instance_uuids ?? [])].sort(),
      syncs.map((m) => m.body.instance_uuid).sort(),
    );
    assert.ok(
      syncs.every((m) => m.body.seq < endBody.seq),
      'sync_end comes after its syncs',
    );
  });

  it('publishes defined, started, paused, resumed, stopped and undefined with the right keys and bodies', async () => {
    const ref = await driver.defineXML(domainXml('life-1'));
    await driver.start(ref.uuid);
    await driver.suspend(ref.uuid);
    await driver.resume(ref.uuid);
    await driver.destroy(ref.uuid);
    await all.waitFor('stopped after the delay', () =>
      forDomain(all, ref.uuid).some((m) => m.body.transition === 'stopped'),
    );
    await driver.undefine(ref.uuid);
    await all.waitFor('undefined', () =>
      forDomain(all, ref.uuid).some((m) => m.body.transition === 'undefined'),
    );

    const seen = forDomain(all, ref.uuid);
    assert.deepEqual(
      seen.map((m) => m.body.transition),
      ['defined', 'started', 'paused', 'resumed', 'stopped', 'undefined'],
    );
    const expected: Record<string, [string, string, number, number, string | null]> = {
      defined: ['DEFINED', 'ADDED', 0, 0, null],
      started: ['STARTED', 'BOOTED', 2, 0, 'Started'],
      paused: ['SUSPENDED', 'PAUSED', 3, 0, 'Paused'],
      resumed: ['RESUMED', 'UNPAUSED', 4, 0, 'Resumed'],
      stopped: ['STOPPED', 'DESTROYED', 5, 1, 'Stopped'],
      undefined: ['UNDEFINED', 'REMOVED', 1, 0, null],
    };
    for (const message of seen) {
      const { body, properties, routingKey } = message;
      const [event, detail, eventCode, detailCode, nova] = expected[body.transition]!;
      assert.equal(routingKey, `${SEGMENT}.${body.transition}`);
      assert.equal(body.schema, 'virtbus.lifecycle/1');
      assert.equal(body.host, HOST);
      assert.equal(body.domain_name, 'life-1');
      assert.deepEqual(body.libvirt, { event, detail, event_code: eventCode, detail_code: detailCode });
      assert.equal(body.nova_transition, nova);
      assert.match(body.occurred_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
      assert.ok(Date.parse(body.published_at) >= Date.parse(body.occurred_at) - 1);
      assert.equal(properties.messageId, body.event_id);
      assert.equal(properties.deliveryMode, 2, 'persistent');
      assert.equal(properties.contentType, 'application/json');
      assert.equal(properties.appId, 'virtbus');
      assert.equal(properties.type, 'virtbus.lifecycle.v1');
      assert.equal(typeof properties.timestamp, 'number');
    }
    const stopped = seen.find((m) => m.body.transition === 'stopped')!.body;
    assert.equal(stopped.power_state, 4, 'live state after the delay: shut off');
    assert.ok(
      stopped.delayed_ms >= STOP_DELAY_MS - 50 && stopped.delayed_ms < STOP_DELAY_MS + 2000,
      `delayed_ms ${stopped.delayed_ms}`,
    );
    assert.equal(seen.find((m) => m.body.transition === 'started')!.body.delayed_ms, 0);
    // Live state sampled after the event: the domain was undefined by then → NOSTATE.
    assert.equal(seen.find((m) => m.body.transition === 'undefined')!.body.power_state, 0);
    const seqs = all.messages.map((m) => m.body.seq);
    assert.deepEqual(
      seqs,
      [...seqs].sort((a, b) => a - b),
      'seq increases on the wire',
    );
    assert.equal(new Set(all.messages.map((m) => m.body.boot_id)).size, 1);
  });

  it('bindings host.*, *.stopped and # receive exactly what they should', async () => {
    const ref = await driver.createXML(domainXml('bind-1'));
    await driver.destroy(ref.uuid);
    await all.waitFor('bind-1 stopped', () =>
      forDomain(all, ref.uuid).some((m) => m.body.transition === 'stopped'),
    );
    await sleep(300);
    assert.deepEqual(
      forDomain(hostOnly, ref.uuid).map((m) => m.routingKey),
      [`${SEGMENT}.started`, `${SEGMENT}.stopped`],
    );
    assert.deepEqual(
      hostOnly.messages.map((m) => m.body.event_id),
      all.messages.map((m) => m.body.event_id),
    );
    assert.deepEqual(
      stoppedOnly.messages.map((m) => m.body.event_id),
      all.filter((m) => m.routingKey.endsWith('.stopped')).map((m) => m.body.event_id),
    );
    assert.ok(stoppedOnly.messages.length >= 2);
    assert.ok(stoppedOnly.messages.every((m) => m.body.transition === 'stopped'));
    assert.equal(otherHost.messages.length, 0, 'another host binding receives nothing');
  });

  it("Nova's delayed STOPPED: a destroy followed by a start within the delay publishes no stopped", async () => {
    const ref = await driver.defineXML(domainXml('reboot-1'));
    await driver.start(ref.uuid);
    await driver.destroy(ref.uuid);
    await sleep(200);
    await driver.start(ref.uuid);
    await sleep(STOP_DELAY_MS + 1000);
    const transitions = forDomain(all, ref.uuid).map((m) => m.body.transition);
    assert.deepEqual(transitions, ['defined', 'started', 'started']);
    const text = await scrape(await bridge.metricsUrl());
    assert.ok((metricValue(text, 'virtbus_delayed_stops_total', { outcome: 'cancelled' }) ?? 0) >= 1);
  });

  it('a lone destroy publishes stopped after the delay with power_state 4', async () => {
    const ref = await driver.createXML(domainXml('lone-1'));
    const before = Date.now();
    await driver.destroy(ref.uuid);
    await sleep(STOP_DELAY_MS - 500);
    assert.ok(!forDomain(all, ref.uuid).some((m) => m.body.transition === 'stopped'), 'not before the delay');
    await all.waitFor('lone stopped', () =>
      forDomain(all, ref.uuid).some((m) => m.body.transition === 'stopped'),
    );
    const stopped = forDomain(all, ref.uuid).find((m) => m.body.transition === 'stopped')!.body;
    assert.ok(Date.now() - before >= STOP_DELAY_MS);
    // A transient domain vanishes when destroyed: the live state is NOSTATE (0), which Nova's
    // staleness guard then treats as "not SHUTDOWN". A persistent one reads SHUTDOWN (4):
    assert.equal(stopped.power_state, 0);
    const persistent = await driver.defineXML(domainXml('lone-2'));
    await driver.start(persistent.uuid);
    await driver.destroy(persistent.uuid);
    await all.waitFor('lone-2 stopped', () =>
      forDomain(all, persistent.uuid).some((m) => m.body.transition === 'stopped'),
    );
    const persistentStopped = forDomain(all, persistent.uuid).find(
      (m) => m.body.transition === 'stopped',
    )!.body;
    assert.equal(persistentStopped.power_state, 4);
    assert.equal(persistentStopped.power_state_name, 'shutdown');
  });

  it('executes stop commands and reports the outcome', async () => {
    const IDS = {
      'c-stop': 'c5000001-0000-4000-8000-000000000001',
      'c-again': 'c5000002-0000-4000-8000-000000000002',
      'c-expired': 'c5000003-0000-4000-8000-000000000003',
      'c-guarded': 'c5000004-0000-4000-8000-000000000004',
    } as const;
    const model = await connect(broker.url);
    try {
      const channel = await model.createConfirmChannel();
      await channel.assertExchange('virtbus.commands', 'topic', { durable: true });
      const { queue } = await channel.assertQueue('', { exclusive: true });
      await channel.bindQueue(queue, 'virtbus.commands', `${SEGMENT}.stop_result`);
      const results: CommandResult[] = [];
      await channel.consume(
        queue,
        (m) => m && results.push(JSON.parse(m.content.toString()) as CommandResult),
        { noAck: true },
      );
      const running = await driver.defineXML(domainXml('cmd-1'));
      await driver.start(running.uuid);
      const send = (
        id: string,
        uuid: string,
        action: string,
        expiresInMs = 60000,
        onlyIf?: number[],
      ): void => {
        channel.publish(
          'virtbus.commands',
          commandRoutingKey(HOST),
          stopCommandBody(HOST, id, uuid, {
            action,
            expires_at: isoMicros(nowMicros() + expiresInMs * 1000),
            ...(onlyIf ? { only_if_power_states: onlyIf } : {}),
          }),
          // As the consumer publishes them: user_id is its broker user (guest here), which the bridge trusts.
          { persistent: true, userId: 'guest' },
        );
      };
      send(IDS['c-stop'], running.uuid, 'force_stop');
      const deadline = Date.now() + 15000;
      while (!results.some((r) => r.command_id === IDS['c-stop']) && Date.now() < deadline) await sleep(50);
      send(IDS['c-again'], running.uuid, 'stop');
      send(IDS['c-expired'], running.uuid, 'stop', -1000);
      while (results.length < 3 && Date.now() < deadline) await sleep(50);
      assert.equal((await driver.domainState(running.uuid)).state, 5, 'force_stop shut the domain off');
      // The 4b re-check: "stop only if still shut off" for a guest that was restarted meanwhile.
      await driver.start(running.uuid);
      send(IDS['c-guarded'], running.uuid, 'stop', 60000, [4, 6]);
      while (results.length < 4 && Date.now() < deadline) await sleep(50);
      const byId = new Map(results.map((r) => [r.command_id, r]));
      assert.equal(byId.get(IDS['c-stop'])?.outcome, 'stopped');
      assert.equal(byId.get(IDS['c-stop'])?.power_state, 4);
      assert.equal(byId.get(IDS['c-again'])?.outcome, 'already_stopped');
      assert.equal(byId.get(IDS['c-expired'])?.outcome, 'expired');
      assert.equal(byId.get(IDS['c-expired'])?.power_state, null, 'an expired command did not read libvirt');
      assert.equal(byId.get(IDS['c-guarded'])?.outcome, 'skipped');
      assert.equal(byId.get(IDS['c-guarded'])?.power_state, 1);
      assert.equal((await driver.domainState(running.uuid)).state, 1, 'the restarted guest was left running');
      assert.equal(byId.get(IDS['c-stop'])?.schema, 'virtbus.command-result/1');
      assert.equal(byId.get(IDS['c-stop'])?.host, HOST);
    } finally {
      await model.close();
    }
  });

  it('`virtbus tail` prints one line per event, filtered by --bind, or JSON with --json', async () => {
    const env = { ...process.env, VIRTBUS_AMQP_URL: broker.url };
    const human = spawn(process.execPath, [VIRTBUS_BIN, 'tail', '--bind', '*.started', '--no-color'], {
      env,
    });
    const json = spawn(process.execPath, [VIRTBUS_BIN, 'tail', '--json'], { env });
    let humanOut = '';
    let jsonOut = '';
    human.stdout.on('data', (chunk: Buffer) => (humanOut += chunk.toString()));
    json.stdout.on('data', (chunk: Buffer) => (jsonOut += chunk.toString()));
    try {
      const listening = (child: typeof human): Promise<void> =>
        new Promise((resolve) =>
          child.stderr.on('data', (chunk: Buffer) => chunk.toString().includes('listening') && resolve()),
        );
      await Promise.all([listening(human), listening(json)]);
      const ref = await driver.createXML(domainXml('tail-1'));
      await driver.suspend(ref.uuid);
      const deadline = Date.now() + 10000;
      while ((!humanOut.includes('tail-1') || !jsonOut.includes('"paused"')) && Date.now() < deadline)
        await sleep(50);
      const line = humanOut.split('\n').find((l) => l.includes('tail-1'));
      assert.ok(line, `tail printed: ${humanOut}`);
      assert.match(
        line,
        /^\d{4}-\d\d-\d\dT[\d:.]+Z cmp-01\.Example\.org tail-1 started\s+STARTED\/BOOTED power=(running|paused)$/,
      );
      assert.ok(
        humanOut
          .trim()
          .split('\n')
          .every((l) => / started /.test(l)),
        'the *.started binding filters out every other transition',
      );
      const bodies = jsonOut
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as LifecycleMessage)
        .filter((b) => b.domain_name === 'tail-1');
      assert.deepEqual(
        bodies.map((b) => b.transition),
        ['started', 'paused'],
      );
    } finally {
      human.kill('SIGINT');
      json.kill('SIGINT');
      const codes = await Promise.all([once(human, 'exit'), once(json, 'exit')]);
      assert.deepEqual(
        codes.map(([code]) => code as number),
        [0, 0],
      );
    }
  });

  it('keeps messages no binding matches in the unroutable queue instead of losing them', async () => {
    // A vhost where nobody is bound to the lifecycle exchange.
    const lonely = await testBroker();
    const other = startVirtbus('bridge', {
      VIRTBUS_HOST: 'cmp-09',
      VIRTBUS_LIBVIRT_URI: libvirtd.uri,
      VIRTBUS_AMQP_URL: lonely.url,
      VIRTBUS_STOP_DELAY_MS: '0',
    });
    try {
      await other.waitForLog('the start snapshot', (l) => l.msg === 'snapshot published');
      await other.waitForLog('the topology', (l) => l.msg === 'publishing channel open');
      const model = await connect(lonely.url);
      const channel = await model.createChannel();
      let count = 0;
      const deadline = Date.now() + 20000;
      while (count < 2 && Date.now() < deadline) {
        count = (await channel.checkQueue('virtbus.unroutable')).messageCount;
        await sleep(100);
      }
      await model.close();
      assert.ok(count >= 2, `sync + sync_end kept in virtbus.unroutable (saw ${count})`);
      const text = await scrape(await other.metricsUrl());
      assert.equal(metricValue(text, 'virtbus_publish_failures_total', { reason: 'unroutable' }) ?? 0, 0);
    } finally {
      assert.deepEqual(await other.stop(), { code: 0, signal: null });
    }
  });
});

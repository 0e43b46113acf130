/**
 * Notifications OpenStack's own code accepts (issue 13): with consumer.notifications.payloadVersion
 * 2.0, every kind of instance.update a real consumer emits — a power_state-only save, the
 * task_state swap when it sends a stop, the completion (vm_state stopped), a failed stop clearing
 * the task — for rows imported with a full flavor, with only the instance's flavor columns, and with
 * no attributes at all, is received from the test's private RabbitMQ by an oslo.messaging
 * notification listener (Debian python3-oslo.messaging) and checked against Nova 26's own payload
 * objects (Debian python3-nova): keys equal to InstanceUpdatePayload's fields, versions equal to
 * Nova's, every value passing its field type, nested objects (FlavorPayload, …) the same way
 * (test/fixtures/nova/check_notifications.py). The checker itself is shown to refuse what Nova
 * refuses: the former `flavor: null`, a bare flavor dict, and a 2.1 payload (`shares`) on Nova 26.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import { packageRoot } from '../../src/config/load';
import { buildInstanceUpdate } from '../../src/notify/instance-update';
import type { InstanceRow } from '../../src/store/types';
import { testBroker } from '../support/services';
import { Bus, EventFactory, instance, startConsumer, tempSqliteUrl, waitUntil } from '../support/consumer';

const PYTHON = '/usr/bin/python3'; // Debian's interpreter, where python3-nova is installed
const CHECKER = join(packageRoot(), 'test', 'fixtures', 'nova', 'check_notifications.py');
const HOST = 'cmp-nova26';

interface Checked {
  readonly event_type: string;
  readonly publisher_id: string;
  readonly uuid: string;
  readonly version: string;
  readonly message_id?: string;
  readonly context_is_admin?: boolean;
  readonly summary: {
    readonly power_state: string;
    readonly state: string;
    readonly task_state: string | null;
    readonly old_state: string | null;
    readonly old_task_state: string | null;
    readonly new_task_state: string | null;
    readonly flavor_name: string | null;
    readonly memory_mb: number | null;
  };
  readonly errors: readonly string[];
}

/** Runs the checker; resolves with its JSON lines once it exits. */
function runChecker(args: readonly string[], input?: string): Promise<Array<Checked | { ready: true }>> {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, [CHECKER, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const lines: Array<Checked | { ready: true }> = [];
    let stderr = '';
    createInterface({ input: child.stdout }).on('line', (line) => lines.push(JSON.parse(line) as Checked));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve(lines) : reject(new Error(`checker exited ${code}: ${stderr.slice(-2000)}`)),
    );
    child.stdin.end(input ?? '');
  });
}

function results(lines: ReadonlyArray<Checked | { ready: true }>): Checked[] {
  return lines.filter((line): line is Checked => !('ready' in line));
}

const ROW: InstanceRow = {
  uuid: '178b0921-8f85-4257-88b6-2e743b5a975c',
  host: HOST,
  vm_state: 'active',
  task_state: null,
  power_state: 4,
  launched_at: '2026-08-20T10:00:30.000000Z',
  created_at: '2026-08-20T10:00:00.000000Z',
  updated_at: '2026-08-21T21:01:48.123456Z',
  event_at_us: null,
  event_boot_id: null,
  event_seq: null,
  pending_command_id: null,
  pending_command_host: null,
  pending_action: null,
  command_deadline_ms: null,
  last_action: null,
  last_action_at: null,
  last_error: null,
  migration: null,
  attrs: { display_name: 'some-server' },
  version: 1,
};

describe('the checker refuses what Nova 26 refuses', () => {
  it('flavor null, a bare flavor dict and a 2.1 payload are rejected; the 2.0 payload passes', async () => {
    const message = (version: '2.0' | '2.1', flavor?: unknown): string => {
      const built = buildInstanceUpdate(ROW, ROW, {
        nowMicros: Date.now() * 1000,
        payloadVersion: version,
      }).message;
      const data = { ...built.payload['nova_object.data'] };
      if (flavor !== undefined) data.flavor = flavor;
      return JSON.stringify({ ...built, payload: { ...built.payload, 'nova_object.data': data } });
    };
    const input = [message('2.0', null), message('2.0', { name: 'm1' }), message('2.1'), message('2.0')].join(
      '\n',
    );
    const [flavorNull, bareDict, v21, v20] = results(await runChecker(['stdin'], input));
    assert.deepEqual(flavorNull?.errors, [
      'payload.flavor: null, but the field is not nullable (ObjectField)',
    ]);
    assert.match(
      bareDict?.errors[0] ?? '',
      /^payload\.flavor: nova_object\.name None, expected 'FlavorPayload'/,
    );
    assert.deepEqual(v21?.errors, [
      "payload: nova_object.version '2.1', Nova has 2.0",
      'payload: unexpected key shares',
    ]);
    assert.deepEqual(v20?.errors, []);
  });
});

describe('instance.update in 2.0 mode, received by oslo.messaging and checked with Nova 26 objects', async () => {
  // Started in the describe body: an after() registered inside a before() hook would stop it at once.
  const broker = await testBroker();
  const url = broker.url.replace(/^amqp:/, 'rabbit:');
  const consumer = await startConsumer({
    amqpUrl: broker.url,
    dbUrl: tempSqliteUrl(),
    env: { VIRTBUS_NOTIFICATION_PAYLOAD_VERSION: '2.0', VIRTBUS_CONSUMER_MODE: 'nova' },
  });
  const bus = await Bus.open(broker.url, consumer.config);
  const events = new EventFactory();
  const full = '2b1f0000-0000-4000-8000-00000000000a';
  const bare = '2b1f0000-0000-4000-8000-00000000000b';
  const columns = '2b1f0000-0000-4000-8000-00000000000c';

  it('every notification kind passes field by field', async () => {
    await consumer.store.upsert([
      instance({
        uuid: full,
        host: HOST,
        attrs: {
          display_name: 'web-1',
          user_id: 'fake',
          tenant_id: '6f70656e737461636b20342065766572',
          availability_zone: 'nova',
          image_uuid: '155d900f-4e14-4e4c-a73d-069cbf4541e6',
          key_name: 'my-key',
          metadata: { role: 'web' },
          tags: ['prod'],
          // As `openstack server show -f json` gives it (Nova's API form, swap "" when none).
          flavor: {
            id: 'a22d5517-147c-4147-a0d1-e698df5cd4e3',
            name: 'm1.small',
            ram: 2048,
            vcpus: 1,
            disk: 20,
            'OS-FLV-EXT-DATA:ephemeral': 0,
            swap: '',
            rxtx_factor: 1.0,
            'os-flavor-access:is_public': true,
            extra_specs: { 'hw:cpu_policy': 'shared', 'quota:cpu_shares': 1024 },
          },
        },
      }),
      instance({ uuid: bare, host: HOST }),
      instance({
        uuid: columns,
        host: HOST,
        attrs: { flavor: 'm1.tiny', memory_mb: 512, vcpus: 1, root_gb: 1, ephemeral_gb: 0 },
      }),
    ]);
    bus.answerCommands((command) =>
      command.instance_uuid === bare
        ? { outcome: 'stopped', power_state: 4 }
        : { outcome: 'failed', power_state: 4, error: 'libvirt: operation failed' },
    );
    await bus.publishLifecycle(consumer.config.amqp.exchange, [
      events.event(HOST, full, 'paused', 3),
      events.event(HOST, bare, 'stopped', 4),
      events.event(HOST, columns, 'stopped', 4),
    ]);
    // paused: one (power_state); each stop: power_state, the task swap, the completion or failure.
    await waitUntil('seven notifications', () => bus.notifications.length >= 7, 15_000);
    await waitUntil(
      'the stops settled',
      async () =>
        (await consumer.store.get(bare))?.vm_state === 'stopped' &&
        (await consumer.store.get(columns))?.task_state === null,
      15_000,
    );
    await new Promise((resolve) => setTimeout(resolve, 300)); // nothing else follows
    const sent = bus.notifications.map((notification) => notification.message_id).sort();
    assert.equal(sent.length, 7);

    // The consumer declared oslo's queue versioned_notifications.info: they wait there for the listener.
    const checked = results(await runChecker(['listen', url, String(sent.length), '60']));
    assert.deepEqual(
      checked.map((result) => result.message_id).sort(),
      sent,
      'the listener got exactly these',
    );
    for (const result of checked) {
      assert.deepEqual(result.errors, [], `${result.uuid} ${JSON.stringify(result.summary)}`);
      assert.equal(result.event_type, 'instance.update');
      assert.equal(result.version, '2.0');
      assert.equal(result.publisher_id, `nova-compute:${HOST}`);
      assert.equal(result.context_is_admin, true);
    }
    const of = (uuid: string): Checked[] => checked.filter((result) => result.uuid === uuid);
    assert.deepEqual(
      of(full).map((result) => [
        result.summary.power_state,
        result.summary.flavor_name,
        result.summary.memory_mb,
      ]),
      [['paused', 'm1.small', 2048]],
    );
    const kinds = (uuid: string): string[] =>
      of(uuid)
        .map(
          ({ summary: s }) =>
            `${s.old_state}>${s.state} ${s.old_task_state}>${s.new_task_state} ${s.power_state}`,
        )
        .sort();
    assert.deepEqual(kinds(bare), [
      'active>active null>null shutdown',
      'active>active null>powering-off shutdown',
      'active>stopped powering-off>null shutdown',
    ]);
    assert.deepEqual(kinds(columns), [
      'active>active null>null shutdown',
      'active>active null>powering-off shutdown',
      'active>active powering-off>null shutdown',
    ]);
    assert.ok(
      of(bare).every((result) => result.summary.flavor_name === '' && result.summary.memory_mb === null),
    );
    assert.ok(
      of(columns).every(
        (result) => result.summary.flavor_name === 'm1.tiny' && result.summary.memory_mb === 512,
      ),
    );
  });
});

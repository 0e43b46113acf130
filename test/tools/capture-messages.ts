/**
 * Regenerates docs/message-format.md with real messages captured from a private sandbox: a
 * libvirtd (test driver), a RabbitMQ node, the real bridge and consumer. Run with
 * `npm run docs:messages` (after `npm run setup`). Not a test suite: it lives outside the suite
 * directories test/run.ts hands to node:test.
 */
import { connect } from 'amqplib';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadNativeBinding } from '../../src/native/binding';
import { packageRoot } from '../../src/config/load';
import { startLibvirtd, startRabbitMQ, startVirtbus, VIRTBUS_BIN } from '../../src/sandbox';

interface Captured {
  readonly exchange: string;
  readonly routingKey: string;
  readonly properties: Record<string, unknown>;
  readonly body: string;
}

const UUID = '178b0921-8f85-4257-88b6-2e743b5a975c';

async function capture(): Promise<Captured[]> {
  const [libvirtd, rabbit] = await Promise.all([startLibvirtd(), startRabbitMQ({ name: 'virtbus-capture' })]);
  const dir = mkdtempSync(join(tmpdir(), 'virtbus-capture-'));
  const keeper = await loadNativeBinding().openConnection(libvirtd.uri, {
    readOnly: false,
    keepaliveInterval: 0,
    keepaliveCount: 1,
  });
  const env = {
    VIRTBUS_HOST: 'cmp-01.example.org',
    VIRTBUS_AMQP_URL: rabbit.url,
    VIRTBUS_LIBVIRT_URI: libvirtd.uri,
    VIRTBUS_DB_URL: `sqlite:${join(dir, 'virtbus.db')}`,
    VIRTBUS_STOP_DELAY_MS: '2000',
    VIRTBUS_LOG_LEVEL: 'info',
  };
  const got: Captured[] = [];
  try {
    await keeper.defineXML(
      `<domain type='test'><name>instance-0000002a</name><uuid>${UUID}</uuid><memory>65536</memory><os><type>hvm</type></os></domain>`,
    );
    await keeper.start(UUID);
    const rows = [
      {
        uuid: UUID,
        host: 'cmp-01.example.org',
        vm_state: 'active',
        task_state: null,
        power_state: 1,
        launched_at: '2026-11-27T08:00:00Z',
        display_name: 'some-server',
      },
    ];
    writeFileSync(join(dir, 'instances.json'), JSON.stringify(rows));
    execFileSync(process.execPath, [VIRTBUS_BIN, 'instances', 'import', join(dir, 'instances.json')], {
      env: { ...process.env, ...env },
    });
    const consumer = startVirtbus('consumer', env);
    await consumer.waitForLog('the consumer', (l) => l.msg === 'consuming');
    const model = await connect(rabbit.url);
    const channel = await model.createChannel();
    const tap = async (exchange: string): Promise<void> => {
      const { queue } = await channel.assertQueue('', { exclusive: true });
      await channel.bindQueue(queue, exchange, '#');
      await channel.consume(
        queue,
        (m) =>
          m &&
          got.push({
            exchange,
            routingKey: m.fields.routingKey,
            properties: m.properties as unknown as Record<string, unknown>,
            body: m.content.toString(),
          }),
        { noAck: true },
      );
    };
    await tap('virtbus.commands');
    await tap('nova');
    await tap('virtbus.dead-letter');
    let bridge = startVirtbus('bridge', env);
    await bridge.waitForLog('the bridge', (l) => l.msg === 'publishing channel open');
    await tap('virtbus.lifecycle');
    await sleep(300);
    await keeper.suspend(UUID);
    await sleep(300);
    await keeper.resume(UUID);
    await sleep(300);
    await keeper.destroy(UUID); // behind the system's back: stopped after 2 s, then Nova's stop
    await sleep(4000);
    channel.publish(
      'virtbus.lifecycle',
      'cmp-01_example_org.started',
      Buffer.from('{"schema":"virtbus.lifecycle/1","transition":"started"}'),
      { persistent: true },
    );
    await sleep(1500);
    await bridge.stop();
    bridge = startVirtbus('bridge', { ...env, VIRTBUS_AMQP_FORMAT: 'oslo' });
    await bridge.waitForLog('the bridge', (l) => l.msg === 'publishing channel open');
    await keeper.start(UUID); // started while the row says stopped: force_stop
    await sleep(2000);
    await bridge.stop();
    // The CloudEvents formats: binary mode, then structured (issue 13).
    bridge = startVirtbus('bridge', { ...env, VIRTBUS_AMQP_FORMAT: 'cloudevents' });
    await bridge.waitForLog('the bridge', (l) => l.msg === 'publishing channel open');
    await keeper.start(UUID);
    await sleep(1500);
    await bridge.stop();
    bridge = startVirtbus('bridge', { ...env, VIRTBUS_AMQP_FORMAT: 'cloudevents-structured' });
    await bridge.waitForLog('the bridge', (l) => l.msg === 'publishing channel open');
    await keeper.start(UUID); // force-stopped by the consumer after the binary-mode start
    await sleep(1500);
    await bridge.stop();
    await consumer.stop();
    await model.close();
  } finally {
    await keeper.close().catch(() => undefined);
    await Promise.allSettled([libvirtd.dispose(), rabbit.dispose()]);
    rmSync(dir, { recursive: true, force: true });
  }
  return got;
}

function pretty(body: string): string {
  const value = JSON.parse(body) as Record<string, unknown>;
  return JSON.stringify(value, null, 2);
}

function decodeOslo(body: string): string {
  const value = JSON.parse(body) as Record<string, string>;
  return JSON.stringify(JSON.parse(value['oslo.message'] ?? '{}'), null, 2);
}

function properties(m: Captured): string {
  const keep = ['contentType', 'deliveryMode', 'messageId', 'appId', 'type', 'timestamp', 'headers'];
  const shown = Object.fromEntries(
    keep
      .filter(
        (k) =>
          m.properties[k] !== undefined &&
          !(k === 'headers' && Object.keys(m.properties[k] as object).length === 0),
      )
      .map((k) => [k, m.properties[k]]),
  );
  return JSON.stringify(shown);
}

function find(got: Captured[], predicate: (m: Captured) => boolean, what: string): Captured {
  const found = got.find(predicate);
  if (!found) throw new Error(`no ${what} captured`);
  return found;
}

function render(got: Captured[]): string {
  const isCloudEvent = (m: Captured): boolean =>
    m.properties.contentType === 'application/cloudevents+json' ||
    (m.properties.headers as Record<string, unknown> | undefined)?.['ce-specversion'] !== undefined;
  const lifecycle = got.filter(
    (m) =>
      m.exchange === 'virtbus.lifecycle' &&
      !m.body.includes('"oslo.version"') &&
      m.properties.type &&
      !isCloudEvent(m),
  );
  const binary = find(
    got,
    (m) =>
      isCloudEvent(m) && m.properties.contentType === 'application/json' && m.routingKey.endsWith('.started'),
    'binary CloudEvent',
  );
  const structured = find(
    got,
    (m) => m.properties.contentType === 'application/cloudevents+json' && m.routingKey.endsWith('.started'),
    'structured CloudEvent',
  );
  const stopped = find(lifecycle, (m) => m.routingKey.endsWith('.stopped'), 'stopped');
  const paused = find(lifecycle, (m) => m.routingKey.endsWith('.paused'), 'paused');
  const oslo = got.filter((m) => m.exchange === 'virtbus.lifecycle' && m.body.includes('"oslo.version"'));
  const sync = find(
    oslo,
    (m) => m.routingKey.endsWith('.sync') && m.body.includes('instance-0000002a'),
    'sync',
  );
  const syncEnd = find(oslo, (m) => m.routingKey.endsWith('.sync_end'), 'sync_end');
  const started = find(oslo, (m) => m.routingKey.endsWith('.started'), 'oslo started');
  const stop = find(
    got,
    (m) => m.routingKey.endsWith('.stop') && m.body.includes('"action":"stop"'),
    'stop command',
  );
  const forceStop = find(
    got,
    (m) => m.routingKey.endsWith('.stop') && m.body.includes('force_stop'),
    'force_stop command',
  );
  const result = find(
    got,
    (m) => m.routingKey.endsWith('.stop_result') && m.body.includes('"action":"force_stop"'),
    'command result',
  );
  const notification = find(
    got,
    (m) => m.exchange === 'nova' && m.body.includes('\\"old_state\\":\\"active\\",\\"state\\":\\"stopped\\"'),
    'notification',
  );
  const dead = find(got, (m) => m.exchange === 'virtbus.dead-letter', 'dead letter');
  const block = (title: string, m: Captured, body: string, lang = 'json'): string =>
    `${title}\n\nexchange \`${m.exchange}\`, routing key \`${m.routingKey}\`, properties \`${properties(m)}\`\n\n\`\`\`${lang}\n${body}\n\`\`\`\n`;
  return `# Message formats

Every message virtbus puts on the bus, with **real examples captured from a run** of the bridge and
the consumer against a private libvirtd (test driver) and RabbitMQ node — regenerate them with
\`npm run docs:messages\` (test/tools/capture-messages.ts). Consumers must ignore fields they do not
know; a breaking change bumps \`schema\`.

| exchange (type) | routing key | body | from → to |
|---|---|---|---|
| \`virtbus.lifecycle\` (topic, alternate exchange \`virtbus.unroutable\`) | \`<host-segment>.<transition>\` | \`virtbus.lifecycle/1\` (or, by \`amqp.format\`, its oslo envelope or a CloudEvent) | bridge → consumers, tail, anyone |
| \`virtbus.commands\` (topic) | \`<host-segment>.stop\` | \`virtbus.command/1\` | consumer → that host's bridge |
| \`virtbus.commands\` (topic) | \`<host-segment>.stop_result\` | \`virtbus.command-result/1\` | bridge → consumers |
| \`nova\` (topic) | \`versioned_notifications.info\` | oslo.messaging v2 envelope, \`instance.update\` | consumer → notification pipelines |
| \`virtbus.dead-letter\` (topic) | the original routing key | the original body, reason in header \`x-virtbus-reason\` | consumer → operators |

The **host segment** is the host name lower-cased with every character outside \`[a-z0-9_-]\`
replaced by \`_\` (\`cmp-01.example.org\` → \`cmp-01_example_org\`), so a dotted name stays one topic word.

## Lifecycle messages (\`virtbus.lifecycle/1\`)

Transitions: Nova's \`started stopped paused resumed postcopy_started migration_completed\`
(\`nova_transition\` carries Nova's name), the lifecycle events Nova drops
\`defined undefined shutdown pmsuspended crashed\`, \`rebooted\` (VIR_DOMAIN_EVENT_ID_REBOOT) and the
snapshot pair \`sync\`/\`sync_end\`. A SUSPENDED/MIGRATED event is \`migration_completed\` when its
migration job completed and \`paused\` otherwise (failed migrations too: Nova bug #1788014); when the
job cannot be read at all — an unexpected libvirt error, or libvirt disconnected — nothing is
published, as Nova's callback queues nothing then (its job query raises); the bridge logs a warning,
and the state reaches the consumer through the next snapshot (a reconnect snapshot follows a lost
connection).

| field | meaning |
|---|---|
| \`schema\` | \`virtbus.lifecycle/1\` |
| \`event_id\` | UUID of this message, also the AMQP \`message_id\`; redeliveries keep it |
| \`host\` | the bridge's host name (\`host\` setting) |
| \`instance_uuid\`, \`domain_name\` | the libvirt domain (its UUID is Nova's instance UUID); null in \`sync_end\` |
| \`transition\`, \`nova_transition\` | see above; \`nova_transition\` is null for transitions Nova ignores |
| \`libvirt\` | \`{event, detail, event_code, detail_code}\`: libvirt's names and numbers. A code newer than virtbus is carried as its number (the name is the number as a string). REBOOT has \`event_code\` -1 and a null detail; \`sync\` has event \`STATE\` with the virDomainState; null in \`sync_end\`. The consumer reads \`event_code\`/\`detail_code\` to tell a live migration's STARTED/RESUMED/STOPPED (detail \`MIGRATED\`, \`POSTCOPY\`) from others |
| \`power_state\`, \`power_state_name\` | the domain's **live** state read when the message was dispatched (after any stop delay), in Nova's codes: 0 pending (also: the domain no longer exists), 1 running, 3 paused, 4 shutdown, 6 crashed, 7 suspended. null when libvirt could not be asked (disconnected); a reconnect snapshot follows |
| \`occurred_at\` | when libvirt called back (taken on the native thread), ISO-8601 UTC with microseconds; for snapshots when the state was read |
| \`published_at\` | when the message was built (dispatch time) |
| \`delayed_ms\` | how long a STOPPED was held (Nova's delay, \`bridge.stopDelayMs\`); 0 otherwise |
| \`seq\`, \`boot_id\` | monotonic per bridge process (assigned at dispatch), and that process' id: the consumer orders one process's messages by \`seq\`, never by its wall clock |
| \`snapshot\` | sync/sync_end only: \`{id, reason: start\\|reconnect\\|periodic\\|overflow, count, taken_at, interval_seconds}\`; \`interval_seconds\` is the bridge's \`bridge.resyncIntervalSeconds\` (0: no periodic snapshots), so consumers can tell when the host's next snapshot is overdue (\`virtbus hosts list\`); optional: older bridges omit it, older consumers ignore it |
| \`instance_uuids\` | sync_end only: every domain in the snapshot (at most 100,000: a longer list is dead-lettered) |

AMQP properties: persistent, \`content_type\` \`application/json\`, \`message_id\` = \`event_id\`,
\`timestamp\`, \`app_id\` \`virtbus\`, \`type\` \`virtbus.lifecycle.v1\`, header \`traceparent\`
(below); published on a confirm channel with \`mandatory\`.

**Trace context.** Every lifecycle message carries a W3C \`traceparent\` header, in every format:
\`00-<trace-id>-<parent-id>-<flags>\` where the trace-id is the \`event_id\` without its dashes (a
version-4 UUID is 122 random bits, as W3C asks of a trace-id; derived rather than stored, it survives
the outbox journal and a republish, and an event's trace is found by its id), the parent-id is the
second half of those digits (the bridge's publish span) and the flags are \`01\` when the bridge
exports spans (OTEL_EXPORTER_OTLP_ENDPOINT set), \`00\` otherwise. The consumer carries it onto the
stop command and the \`instance.update\` notifications the message causes: unchanged when the consumer
exports no spans, with its own span as parent-id when it does (docs/operations.md, Tracing). A
command result, an expired command and anything else not caused by a lifecycle message carries
none. A missing or invalid \`traceparent\` on a received message is ignored, never a reason to refuse it.

${block("A guest destroyed behind the system's back — `stopped`, held for the 2 s stop delay of this run:", stopped, pretty(stopped.body))}
${block("A `paused` event, its live `power_state` read at dispatch. Had the guest moved on before then (resumed, destroyed), the live state would say so and the consumer's staleness guard (Nova bug #1468431) would ignore the event, as Nova does:", paused, pretty(paused.body))}
### CloudEvents (\`amqp.format = cloudevents\` or \`cloudevents-structured\`)

For tools that speak [CloudEvents 1.0](https://github.com/cloudevents/spec), a bridge can publish
each lifecycle message as a CloudEvent; the consumer reads every format whatever the bridges are set
to (so hosts can be switched one at a time). The attributes are derived from the message:

| attribute | value |
|---|---|
| \`id\` | \`event_id\` |
| \`source\` | the host, \`urn:virtbus:host:<host>\` (the host name percent-encoded where a URI needs it) |
| \`type\` | the transition, \`virtbus.lifecycle.<transition>\` (\`virtbus.lifecycle.stopped\`, \`….sync_end\`) |
| \`subject\` | \`instance_uuid\` (absent in \`sync_end\`, which names no instance) |
| \`time\` | \`occurred_at\` |
| \`datacontenttype\` | \`application/json\`: the data is the \`virtbus.lifecycle/1\` object above, unchanged |
| \`sequence\` (extension) | \`seq\` as a 16-digit zero-padded string, so text order is \`seq\` order |
| \`bootid\` (extension) | \`boot_id\`: \`sequence\` counts per bridge process, so it orders events of one \`bootid\` only |

**Binary mode** (\`cloudevents\`): the body is the lifecycle object itself, \`content_type\` is the
datacontenttype, and every attribute is a header named \`ce-<attribute>\`. **AMQP 0-9-1 has no
CloudEvents protocol binding** (the CloudEvents AMQP binding is for AMQP 1.0, whose application
properties 0-9-1 does not have); virtbus follows the prefix of the HTTP and Kafka bindings, so an
AMQP 0-9-1 reader hands the headers, with \`content-type\` = the message's \`content_type\`, and the
body to any HTTP-binding reader (the tests read them with the \`cloudevents\` SDK's \`HTTP.toEvent\`).
**Structured mode** (\`cloudevents-structured\`): the body is the JSON event format,
\`content_type\` \`application/cloudevents+json\`, the lifecycle object in \`data\`; no \`ce-\` headers.
Everything else (routing key, \`message_id\`, \`type\`, \`traceparent\`) is as for \`json\`.

The consumer validates the data as it validates a plain message (same schema, same sender checks,
which read \`host\` from the data) and dead-letters an event whose \`id\`, \`source\`, \`type\`,
\`subject\` or \`sequence\` contradicts its data, or whose \`specversion\` is not \`1.0\`: a reader that
trusts the attributes must not be told another story than the consumer acts on.

${block('A `started` in binary mode (`ce-` headers; the body is the lifecycle object):', binary, pretty(binary.body))}
${block('The same transition in structured mode:', structured, pretty(structured.body))}
### On a real hypervisor (QEMU 7.2, libvirt 9.0)

The order of transitions a real host publishes, as captured by \`test/qemu/\` (docs/testing.md has
the full table with what the consumer does with each; docs/consumer.md the migration sequences):

| what happens                      | transitions on the bus, in order (libvirt event/detail)                                                                                            |
| --------------------------------- | -------------------------------------------------------------------------------------------------------------------------------------------------- |
| boot                              | \`resumed\` (RESUMED/UNPAUSED), then \`started\` (STARTED/BOOTED): RESUMED comes first                                                                   |
| guest reboot, \`virsh reboot\`      | one to three \`rebooted\`, no lifecycle transition                                                                                                   |
| guest power-off, \`virsh shutdown\` | \`shutdown\` (SHUTDOWN/FINISHED), then \`stopped\` (STOPPED/SHUTDOWN) after the stop delay                                                             |
| hard reboot (destroy + start)     | \`shutdown\` (SHUTDOWN/HOST), the STOPPED/DESTROYED held and cancelled, \`resumed\`, \`started\`: no \`stopped\`                                          |
| guest panic                       | \`crashed\` (CRASHED/PANICKED), then with \`on_crash=destroy\` \`stopped\` (STOPPED/CRASHED); with \`preserve\` snapshots say power_state 6                 |
| guest S3, \`dompmwakeup\`           | \`pmsuspended\` (PMSUSPENDED/MEMORY), snapshots say power_state 7; wake-up: \`started\` (STARTED/WAKEUP)                                               |
| save/restore, managedsave + start | \`paused\` (SUSPENDED/PAUSED), STOPPED/SAVED held, \`started\` (STARTED/RESTORED), \`resumed\` (RESUMED/FROM_SNAPSHOT)                                    |
| live migration, source            | \`paused\` (SUSPENDED/MIGRATED: the job is still running, so not \`migration_completed\`), then \`stopped\` (STOPPED/MIGRATED) after the delay            |
| live migration, destination       | \`started\` (STARTED/MIGRATED, power_state 3), then \`resumed\` (RESUMED/MIGRATED, or POSTCOPY in post-copy, power_state 1); post-copy source: \`postcopy_started\` |

### Snapshots: \`sync\` … \`sync_end\`

At start, after every libvirt reconnect, every \`bridge.resyncIntervalSeconds\` and after a native
queue overflow the bridge publishes one \`sync\` per domain and then one \`sync_end\` listing them all.
Every snapshot message carries the bridge's periodic interval (\`snapshot.interval_seconds\`): the
consumers record each host's last applied \`sync_end\` and report a host whose snapshots are more
than two intervals overdue while its rows say guests run as silent
([operations.md](operations.md#hosts-and-maintenance)).
A consumer treats rows of that host that are missing from \`instance_uuids\` (and unchanged since
\`taken_at\`) as domains that vanished (NOSTATE) — or, when another host said the guest arrived by
live migration, as the source's word that it left ([consumer.md](consumer.md#live-migration-the-row-follows-the-guest)). A domain whose STOPPED is being held (Nova's delay)
gets **no** \`sync\` — the held STOPPED speaks for it: published as \`stopped\` when the delay ends, or
cancelled by the event that ends the reboot — but it is still listed in \`instance_uuids\`, so it does
not look vanished; \`snapshot.count\` is the number of \`sync\` messages. The same holds, for at most
the stop delay, for a domain listed off whose STOPPED has not reached the bridge yet (libvirt shows
the new state before it emits the event; docs/architecture.md). These were captured with \`amqp.format = oslo\`:
the body is an oslo.messaging v2 envelope whose \`oslo.message\` is a JSON **string**
(\`event_type\` \`libvirt.domain.lifecycle\`, \`publisher_id\` \`virtbus:<host>\`); shown decoded:

${block('`sync` (oslo envelope, decoded):', sync, decodeOslo(sync.body))}
${block('`sync_end` (oslo envelope, decoded):', syncEnd, decodeOslo(syncEnd.body))}
${block('A `started` in the oslo envelope, raw as it travels:', started, pretty(started.body))}
## Stop commands and results

Where Nova's \`_sync_instance_power_state\` calls \`compute_api.stop\` (4b, 4c) or \`force_stop\` (4g,
4h), the consumer (in \`nova\` mode) sets \`task_state = powering-off\` and sends a command to the
instance's host. The bridge re-reads the live state, honours \`only_if_power_states\` (Nova's re-check
before stopping; otherwise outcome \`skipped\`) and then does what Nova's \`power_off\` does: a clean
(ACPI) shutdown, skipped when the guest is already shutting down (libvirt \`SHUTDOWN\`) or crashed
(\`CRASHED\`), as Nova's \`_clean_shutdown\` returns at once for those states; then a destroy unless the
domain is really shut off — right away for a guest shutting down or crashed, after
\`bridge.commands.gracefulTimeoutMs\` for a guest that ignores the shutdown (always for \`force_stop\`,
for \`stop\` when \`bridge.commands.destroyOnTimeout\`, the default; with it false a \`stop\` never
destroys and answers \`failed\`). Outcomes: \`stopped\` (\`method\` \`shutdown\` or \`destroy\`),
\`already_stopped\` (only a domain already \`SHUTOFF\`), \`not_found\` (this host has no such domain: it
may run elsewhere, e.g. after a live migration; never a reason to mark the instance stopped),
\`skipped\`, \`failed\` (with \`error\`), \`expired\` (arrived after \`expires_at\`, not executed), \`refused\`
(read-only bridge, commands disabled, or \`expires_at\` beyond the bridge's horizon). \`power_state\`
is the live Nova power_state read after the command, and \`null\` when the bridge did not read libvirt
(\`expired\`, \`refused\`, \`not_found\`, \`failed\` while libvirt is disconnected): it then says nothing
about the guest. The command is acked only after its result is confirmed, so a bridge that dies
mid-command gets it again.

${block('`stop` (4b: an active instance found shut off):', stop, pretty(stop.body))}
${block('`force_stop` (4g: a stopped instance found running):', forceStop, pretty(forceStop.body))}
${block('Its result:', result, pretty(result.body))}
The consumer reads a result as follows ([consumer.md](consumer.md#stop-and-force_stop-closing-the-loop)):
\`command_id\` must be a UUID (the consumer's commands always are); \`host\` must be the host the
command was sent to, or the result is dead-lettered; only \`stopped\`/\`already_stopped\` mark the
instance stopped and take \`power_state\` (when not null); \`failed\`, \`refused\`, \`expired\`, \`skipped\`
and \`not_found\` only clear the task and record why — their \`power_state\` is never written, and
\`not_found\` (no such domain on the commanded host) never marks the instance stopped.

## Notifications: versioned \`instance.update\`

For every change of power_state, vm_state or task_state the consumer emits Nova's versioned
\`instance.update\` (\`InstanceUpdatePayload\` 2.1 with \`state_update\`, power_state as a string,
\`nova_object.*\` keys) in the oslo.messaging v2 envelope on exchange \`nova\`, routing key
\`versioned_notifications.info\`; \`timestamp\` in Python's \`str(utcnow())\` form, \`message_id\` a dashed
UUID, \`_unique_id\` hex. \`consumer.notifications.enabled = false\` turns them off. Shown decoded
(the \`oslo.message\` string parsed): the stop completing, \`active\` → \`stopped\`:

${block('`instance.update`:', notification, decodeOslo(notification.body))}
## Dead letters

A message the consumer cannot use — not JSON, an unknown or missing schema, missing or ill-typed
fields, absurd values — is republished unchanged to the dead-letter exchange with the reason, and
only then acknowledged. Messages that keep failing are dead-lettered by the quorum queue's delivery
limit (header \`x-death\`).

${block('A lifecycle message without `event_id`:', dead, dead.body)}`;
}

async function main(): Promise<void> {
  const got = await capture();
  const doc = render(got);
  writeFileSync(join(packageRoot(), 'docs', 'message-format.md'), doc);
  console.log(`captured ${got.length} messages; wrote docs/message-format.md`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});

/**
 * The CloudEvents output formats as pure functions, read back by the `cloudevents` SDK (the external
 * reader an operator's tooling would use) and by the consumer's validation: the attributes virtbus
 * promises, both modes, and the consumer's refusal of attributes that contradict the data. The same
 * formats from a real bridge through a real broker: test/integration/cloudevents.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HTTP, type CloudEventV1 } from 'cloudevents';
import { buildLifecycleMessage, type LifecycleMessage } from '../../src/messages/lifecycle';
import {
  binaryCloudEventHeaders,
  binaryCloudEventMismatch,
  cloudEventAttributes,
  structuredCloudEvent,
} from '../../src/messages/cloudevents';
import {
  encodeLifecycleBody,
  LIFECYCLE_FORMATS,
  lifecycleContentType,
  lifecycleFormatHeaders,
} from '../../src/messages/formats';
import { validateLifecycle } from '../../src/consumer/validate';
import { readDelivery } from '../../src/consumer/intake';
import type { ConsumeMessage } from 'amqplib';
import { schema as configSchema } from '../../src/config/schema';

const UUID = '6f0c2b1e-3a4d-4e5f-8a7b-9c0d1e2f3a4b';
const NOW_US = Date.now() * 1000;

function message(fields: Partial<Parameters<typeof buildLifecycleMessage>[0]> = {}): LifecycleMessage {
  return buildLifecycleMessage({
    host: 'cmp-01.example.org',
    instanceUuid: UUID,
    domainName: 'instance-0001',
    transition: 'stopped',
    libvirt: { event: 'STOPPED', detail: 'DESTROYED', event_code: 5, detail_code: 1 },
    powerState: 4,
    occurredMicros: NOW_US - 2_000_000,
    publishedMicros: NOW_US - 1_000_000,
    delayedMs: 0,
    seq: 42,
    bootId: 'a3c1f2d4-5b6e-4f70-8192-a3b4c5d6e7f8',
    ...fields,
  });
}

/** An AMQP message as HTTP headers + body, the way an AMQP 0-9-1 reader hands it to the SDK. */
function read(contentType: string, headers: Record<string, string>, body: object): CloudEventV1<unknown> {
  const event = HTTP.toEvent({
    headers: { ...headers, 'content-type': contentType },
    body: JSON.stringify(body),
  });
  assert.ok(!Array.isArray(event), 'one event');
  return event;
}

describe('CloudEvents formats', () => {
  it('the configuration offers exactly the formats the bridge implements', () => {
    const schema = configSchema as unknown as {
      amqp: { format: { format: readonly string[]; default: string } };
    };
    assert.deepEqual([...schema.amqp.format.format], [...LIFECYCLE_FORMATS]);
    assert.equal(schema.amqp.format.default, 'json', 'the default format is unchanged');
  });

  it('binary mode: attributes as ce- headers, the lifecycle message as the data (read by the SDK)', () => {
    const lifecycle = message();
    const body = encodeLifecycleBody('cloudevents', lifecycle, NOW_US);
    assert.equal(body, lifecycle, 'the body is the virtbus.lifecycle/1 object itself');
    const headers = lifecycleFormatHeaders('cloudevents', Buffer.from(JSON.stringify(body)));
    assert.ok(headers);
    assert.ok(Object.keys(headers).every((name) => name.startsWith('ce-')));
    const event = read(lifecycleContentType('cloudevents'), headers, body);
    assert.equal(event.specversion, '1.0');
    assert.equal(event.id, lifecycle.event_id);
    assert.equal(event.source, 'urn:virtbus:host:cmp-01.example.org');
    assert.equal(event.type, 'virtbus.lifecycle.stopped');
    assert.equal(event.subject, UUID);
    assert.equal(new Date(event.time as string).getTime(), Math.floor((NOW_US - 2_000_000) / 1000));
    assert.equal(event.sequence, '0000000000000042');
    assert.equal(event.bootid, lifecycle.boot_id);
    assert.equal(event.datacontenttype, 'application/json');
    assert.deepEqual(event.data, JSON.parse(JSON.stringify(lifecycle)));
  });

  it('structured mode: application/cloudevents+json with the message as data (read by the SDK)', () => {
    const lifecycle = message();
    const body = encodeLifecycleBody('cloudevents-structured', lifecycle, NOW_US);
    assert.equal(
      lifecycleFormatHeaders('cloudevents-structured', Buffer.from(JSON.stringify(body))),
      undefined,
    );
    assert.equal(lifecycleContentType('cloudevents-structured'), 'application/cloudevents+json');
    const event = read('application/cloudevents+json', {}, body);
    assert.equal(event.id, lifecycle.event_id);
    assert.equal(event.type, 'virtbus.lifecycle.stopped');
    assert.equal(event.subject, UUID);
    assert.equal(event.sequence, '0000000000000042');
    assert.deepEqual(event.data, JSON.parse(JSON.stringify(lifecycle)));
  });

  it('the sequence extension sorts as text in seq order; sync_end has no subject', () => {
    const sequences = [9, 10, 99, 100, 123456789].map(
      (seq) => cloudEventAttributes(message({ seq })).sequence,
    );
    assert.deepEqual([...sequences].sort(), sequences);
    const end = message({ transition: 'sync_end', instanceUuid: null, libvirt: null, powerState: null });
    const attributes = cloudEventAttributes(end);
    assert.equal(attributes.subject, undefined);
    assert.equal(attributes.type, 'virtbus.lifecycle.sync_end');
    const event = read('application/json', binaryCloudEventHeaders(end), end);
    assert.equal(event.subject, undefined);
  });

  it('a host name outside URI characters is percent-encoded in source', () => {
    const attributes = cloudEventAttributes(message({ host: 'cmp 01/rack#2' }));
    assert.equal(attributes.source, 'urn:virtbus:host:cmp%2001%2Frack%232');
  });

  it('the consumer reads every format to the same event', () => {
    const lifecycle = message();
    const read = LIFECYCLE_FORMATS.map((format) => {
      const result = validateLifecycle(
        Buffer.from(JSON.stringify(encodeLifecycleBody(format, lifecycle, NOW_US))),
        NOW_US,
        60_000,
      );
      assert.ok(result.ok, `${format}: ${result.ok ? '' : result.reason}`);
      return result.value;
    });
    for (const value of read.slice(1)) assert.deepEqual(value, read[0]);
    assert.equal(read[0]?.eventId, lifecycle.event_id);
  });

  it('the consumer refuses a structured event whose attributes contradict its data', () => {
    const lifecycle = message();
    const cases: Array<[string, Record<string, unknown>, RegExp]> = [
      ['id', { id: 'another' }, /attribute id/],
      ['source', { source: 'urn:virtbus:host:elsewhere' }, /attribute source/],
      ['type', { type: 'virtbus.lifecycle.started' }, /attribute type/],
      ['subject', { subject: '11111111-2222-4333-8444-555555555555' }, /attribute subject/],
      ['sequence', { sequence: '0000000000000001' }, /attribute sequence/],
      ['specversion', { specversion: '0.3' }, /specversion/],
      ['datacontenttype', { datacontenttype: 'text/plain' }, /datacontenttype/],
      ['data', { data: 'text' }, /JSON object as its data/],
    ];
    for (const [what, change, reason] of cases) {
      const event = { ...structuredCloudEvent(lifecycle), ...change };
      const result = validateLifecycle(Buffer.from(JSON.stringify(event)), NOW_US, 60_000);
      assert.equal(result.ok, false, what);
      if (!result.ok) assert.match(result.reason, reason, what);
    }
  });

  it('binary mode: ce- headers that contradict the body are a reason to refuse; absent ones are not', () => {
    const lifecycle = message();
    const result = validateLifecycle(Buffer.from(JSON.stringify(lifecycle)), NOW_US, 60_000);
    assert.ok(result.ok);
    const headers = binaryCloudEventHeaders(lifecycle);
    assert.equal(binaryCloudEventMismatch(headers, result.value), undefined);
    assert.equal(binaryCloudEventMismatch(undefined, result.value), undefined);
    assert.equal(binaryCloudEventMismatch({ traceparent: 'x' }, result.value), undefined);
    assert.match(
      binaryCloudEventMismatch({ ...headers, 'ce-source': 'urn:virtbus:host:other' }, result.value) ?? '',
      /attribute source/,
    );
    assert.match(
      binaryCloudEventMismatch({ ...headers, 'ce-id': Buffer.from('other') }, result.value) ?? '',
      /attribute id/,
    );
    assert.match(
      binaryCloudEventMismatch({ ...headers, 'ce-specversion': '2.0' }, result.value) ?? '',
      /specversion/,
    );
  });

  it('sender checks apply unchanged to CloudEvents: the data names the host, the routing key must agree', () => {
    const counted: string[] = [];
    const metrics = {
      oversized: { inc: () => counted.push('oversized') },
      senderRejections: { inc: (labels: { reason: string }) => counted.push(labels.reason) },
    } as unknown as Parameters<typeof readDelivery>[4];
    const lifecycle = message(); // host cmp-01.example.org
    const deliver = (
      routingKey: string,
      userId: string,
      body: object,
      headers: Record<string, unknown> = {},
    ) =>
      readDelivery(
        'lifecycle',
        {
          content: Buffer.from(JSON.stringify(body)),
          fields: { deliveryTag: 1, redelivered: false, exchange: 'virtbus.lifecycle', routingKey },
          properties: { headers, userId },
        } as unknown as ConsumeMessage,
        NOW_US,
        {
          maxMessageBytes: 1 << 20,
          maxFutureSkewMs: 60_000,
          senders: { mode: 'strict', userTemplate: '{segment}' },
        },
        metrics,
      );
    const structured = structuredCloudEvent(lifecycle);
    const binary = binaryCloudEventHeaders(lifecycle);
    // From its own host: accepted in both modes.
    assert.ok(!('reason' in deliver('cmp-01_example_org.stopped', 'cmp-01_example_org', structured)));
    assert.ok(!('reason' in deliver('cmp-01_example_org.stopped', 'cmp-01_example_org', lifecycle, binary)));
    // Another host's credential and routing key, the victim's name in the data (and attributes).
    for (const [body, headers] of [
      [structured, {}],
      [lifecycle, binary],
    ] as const) {
      const forged = deliver('cmp-02_example_org.stopped', 'cmp-02_example_org', body, headers);
      assert.ok('reason' in forged);
      assert.match(forged.reason, /sender not verified/);
      const wrongUser = deliver('cmp-01_example_org.stopped', 'cmp-02_example_org', body, headers);
      assert.ok('reason' in wrongUser);
      assert.match(wrongUser.reason, /published by broker user/);
    }
    assert.deepEqual(counted, [
      'routing_key_mismatch',
      'user_mismatch',
      'routing_key_mismatch',
      'user_mismatch',
    ]);
  });
});

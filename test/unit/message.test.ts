import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  buildLifecycleMessage,
  hostSegment,
  lifecycleRoutingKey,
  osloEnvelope,
  unwrapLifecycleBody,
  LIFECYCLE_SCHEMA,
} from '../../src/messages/lifecycle';
import { isoMicros, osloTimestamp, novaDateTime, parseIsoMicros } from '../../src/util/time';

describe('routing keys', () => {
  it('lower-cases the host and replaces every character outside [a-z0-9_-] by _', () => {
    assert.equal(hostSegment('cmp-01.example.org'), 'cmp-01_example_org');
    assert.equal(hostSegment('CMP_01'), 'cmp_01');
    assert.equal(hostSegment('a b*c#d.e'), 'a_b_c_d_e');
    assert.equal(hostSegment('ünï'), '_n_');
    assert.equal(lifecycleRoutingKey('Cmp-01.Example.org', 'stopped'), 'cmp-01_example_org.stopped');
  });
  it('a dotted host stays one topic word', () => {
    assert.equal(lifecycleRoutingKey('a.b.c', 'sync_end').split('.').length, 2);
  });
});

describe('time formats', () => {
  it('isoMicros keeps microseconds and round-trips', () => {
    const micros = Date.UTC(2026, 10, 27, 8, 50, 27) * 1000 + 745123;
    assert.equal(isoMicros(micros), '2026-11-27T08:50:27.745123Z');
    assert.equal(parseIsoMicros('2026-11-27T08:50:27.745123Z'), micros);
    assert.equal(parseIsoMicros('2026-11-27T08:50:27Z'), micros - 745123);
    assert.ok(Number.isNaN(parseIsoMicros('yesterday')));
  });
  it('oslo timestamps use a space and drop a zero fraction; Nova datetimes have seconds', () => {
    const micros = Date.UTC(2026, 7, 21, 21, 1, 48) * 1000 + 123456;
    assert.equal(osloTimestamp(micros), '2026-08-21 21:01:48.123456');
    assert.equal(osloTimestamp(micros - 123456), '2026-08-21 21:01:48');
    assert.equal(novaDateTime(micros), '2026-08-21T21:01:48Z');
  });
});

describe('lifecycle message', () => {
  const fields = {
    host: 'cmp-01.example.org',
    instanceUuid: '6695eb01-f6a4-8304-79aa-97f2502e193f',
    domainName: 'instance-0000002a',
    transition: 'stopped' as const,
    libvirt: { event: 'STOPPED', detail: 'DESTROYED', event_code: 5, detail_code: 1 },
    powerState: 4 as const,
    occurredMicros: Date.UTC(2026, 10, 27, 8, 50, 27) * 1000 + 745123,
    publishedMicros: Date.UTC(2026, 10, 27, 8, 50, 42) * 1000 + 746001,
    delayedMs: 15000,
    seq: 4711,
    bootId: 'c3a1d2e4-0000-4000-8000-000000000000',
  };

  it('has exactly the contract fields with Nova names', () => {
    const message = buildLifecycleMessage(fields);
    assert.deepEqual(Object.keys(message).sort(), [
      'boot_id',
      'delayed_ms',
      'domain_name',
      'event_id',
      'host',
      'instance_uuid',
      'libvirt',
      'nova_transition',
      'occurred_at',
      'power_state',
      'power_state_name',
      'published_at',
      'schema',
      'seq',
      'transition',
    ]);
    assert.equal(message.schema, LIFECYCLE_SCHEMA);
    assert.match(message.event_id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(message.nova_transition, 'Stopped');
    assert.equal(message.power_state_name, 'shutdown');
    assert.equal(message.occurred_at, '2026-11-27T08:50:27.745123Z');
    assert.equal(message.published_at, '2026-11-27T08:50:42.746001Z');
    assert.equal(message.delayed_ms, 15000);
    assert.notEqual(buildLifecycleMessage(fields).event_id, message.event_id);
  });

  it('null power state when it could not be read', () => {
    const message = buildLifecycleMessage({ ...fields, powerState: null });
    assert.equal(message.power_state, null);
    assert.equal(message.power_state_name, null);
  });

  it('the oslo v2 envelope carries the message as a JSON string payload', () => {
    const message = buildLifecycleMessage(fields);
    const envelope = osloEnvelope(message, fields.publishedMicros) as Record<string, string>;
    assert.equal(envelope['oslo.version'], '2.0');
    assert.equal(typeof envelope['oslo.message'], 'string');
    const inner = JSON.parse(envelope['oslo.message'] as string) as Record<string, unknown>;
    assert.equal(inner.event_type, 'libvirt.domain.lifecycle');
    assert.equal(inner.publisher_id, 'virtbus:cmp-01.example.org');
    assert.equal(inner.priority, 'INFO');
    assert.equal(inner.message_id, message.event_id);
    assert.equal(inner.timestamp, '2026-11-27 08:50:42.746001');
    assert.match(String(inner._unique_id), /^[0-9a-f]{32}$/);
    assert.deepEqual(inner.payload, JSON.parse(JSON.stringify(message)));
    assert.deepEqual(unwrapLifecycleBody(envelope), JSON.parse(JSON.stringify(message)));
    assert.deepEqual(unwrapLifecycleBody(message), message);
  });
});

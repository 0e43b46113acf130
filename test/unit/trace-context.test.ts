/**
 * W3C traceparent handling without OpenTelemetry: the bridge's ids derived from the event_id, the
 * header's format, and a reader that ignores what is not a valid traceparent (never fails a message).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import {
  bridgeSpanIds,
  bridgeTraceparent,
  formatTraceparent,
  parseTraceparent,
} from '../../src/tracing/trace-context';

describe('trace context', () => {
  it('derives the trace from the event_id: trace-id = its hex, the two span ids = its halves', () => {
    const ids = bridgeSpanIds('6f0c2b1e-3a4d-4e5f-8a7b-9c0d1e2f3a4b');
    assert.deepEqual(ids, {
      traceId: '6f0c2b1e3a4d4e5f8a7b9c0d1e2f3a4b',
      eventSpanId: '6f0c2b1e3a4d4e5f',
      publishSpanId: '8a7b9c0d1e2f3a4b',
    });
    assert.equal(
      bridgeTraceparent('6f0c2b1e-3a4d-4e5f-8a7b-9c0d1e2f3a4b', true),
      '00-6f0c2b1e3a4d4e5f8a7b9c0d1e2f3a4b-8a7b9c0d1e2f3a4b-01',
    );
    assert.match(bridgeTraceparent(randomUUID(), false) ?? '', /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
    // Even an all-zero random part leaves the version and variant digits: never an invalid id.
    const zeros = bridgeSpanIds('00000000-0000-4000-8000-000000000000');
    assert.ok(zeros && !/^0+$/.test(zeros.eventSpanId) && !/^0+$/.test(zeros.publishSpanId));
  });

  it('derives nothing from an id that is not a version-4 UUID', () => {
    for (const id of [
      'not-a-uuid',
      '6F0C2B1E-3A4D-4E5F-8A7B-9C0D1E2F3A4B',
      '6f0c2b1e-3a4d-1e5f-8a7b-9c0d1e2f3a4b',
    ])
      assert.equal(bridgeTraceparent(id, true), undefined, id);
  });

  it('reads valid headers (string or Buffer) and ignores invalid ones', () => {
    const header = '00-6f0c2b1e3a4d4e5f8a7b9c0d1e2f3a4b-8a7b9c0d1e2f3a4b-01';
    const parsed = parseTraceparent(header);
    assert.deepEqual(parsed, {
      traceId: '6f0c2b1e3a4d4e5f8a7b9c0d1e2f3a4b',
      spanId: '8a7b9c0d1e2f3a4b',
      sampled: true,
    });
    assert.equal(formatTraceparent(parsed), header);
    assert.deepEqual(parseTraceparent(Buffer.from(header)), parsed);
    assert.equal(parseTraceparent(header.replace(/-01$/, '-02'))?.sampled, false);
    // A later version is read as 00 (its first four fields), per W3C.
    assert.equal(parseTraceparent(`01${header.slice(2)}-extra`)?.spanId, '8a7b9c0d1e2f3a4b');
    for (const bad of [
      undefined,
      42,
      '',
      `ff${header.slice(2)}`,
      `${header}-extra`,
      '00-00000000000000000000000000000000-8a7b9c0d1e2f3a4b-01',
      '00-6f0c2b1e3a4d4e5f8a7b9c0d1e2f3a4b-0000000000000000-01',
      '00-6F0C2B1E3A4D4E5F8A7B9C0D1E2F3A4B-8a7b9c0d1e2f3a4b-01',
      'x'.repeat(1000),
    ])
      assert.equal(parseTraceparent(bad), undefined, String(bad));
  });
});

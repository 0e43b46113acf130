/**
 * The tracing hooks' promises: without OTEL_EXPORTER_OTLP_ENDPOINT no OpenTelemetry SDK or exporter
 * module is loaded (checked in a fresh process that loads the bridge and the consumer), with it they
 * are; and the consumer passes a received traceparent on, unchanged when it records no spans, only
 * to what the message's own effects publish.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { ConsumeMessage } from 'amqplib';
import { effectsWithTrace, startMessageTrace, traceHeaders } from '../../src/tracing/consumer';
import { activeTracing } from '../../src/tracing/otel';

const DIST_SRC = join(__dirname, '..', '..', 'src');

/** Loads the services' modules in a fresh process, starts tracing as the CLI does, reports. */
function loadedIn(env: NodeJS.ProcessEnv): { sdkModules: number; active: boolean } {
  const script = `
    const src = ${JSON.stringify(DIST_SRC)};
    require(src + '/bridge/bridge.js');
    require(src + '/consumer/service.js');
    const otel = require(src + '/tracing/otel.js');
    otel.startTracing('virtbus-test', 'h', require(src + '/util/log.js').createLogger('silent', 't'));
    const sdk = Object.keys(require.cache).filter((p) => /@opentelemetry[\\\\/](sdk-|exporter-|resources|otlp-)/.test(p));
    process.stdout.write(JSON.stringify({ sdkModules: sdk.length, active: otel.activeTracing() !== undefined }));
    otel.stopTracing();`;
  const clean = { ...process.env };
  delete clean.OTEL_EXPORTER_OTLP_ENDPOINT;
  delete clean.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
  const out = execFileSync(process.execPath, ['-e', script], { env: { ...clean, ...env }, encoding: 'utf8' });
  return JSON.parse(out) as { sdkModules: number; active: boolean };
}

function delivery(headers: Record<string, unknown> | undefined): ConsumeMessage {
  return {
    content: Buffer.from('{}'),
    fields: { deliveryTag: 1, redelivered: false, exchange: 'virtbus.lifecycle', routingKey: 'h.stopped' },
    properties: { headers },
  } as unknown as ConsumeMessage;
}

describe('tracing hooks', () => {
  it('loads no OpenTelemetry SDK or exporter without an OTLP endpoint', () => {
    assert.deepEqual(loadedIn({}), { sdkModules: 0, active: false });
  });

  it('loads them when OTEL_EXPORTER_OTLP_ENDPOINT is set', () => {
    const loaded = loadedIn({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9' });
    assert.equal(loaded.active, true);
    assert.ok(loaded.sdkModules > 0);
  });

  it('without span export: a received traceparent is carried unchanged, only by its own effects', async () => {
    assert.equal(activeTracing(), undefined, 'this process exports nothing');
    const header = '00-6f0c2b1e3a4d4e5f8a7b9c0d1e2f3a4b-8a7b9c0d1e2f3a4b-00';
    const trace = startMessageTrace(delivery({ traceparent: header }));
    assert.equal(trace?.outgoing, header);
    let during: ReturnType<typeof traceHeaders> = {};
    const published = effectsWithTrace(trace, () => {
      during = traceHeaders();
      return Promise.resolve();
    });
    await published;
    assert.deepEqual(during, { headers: { traceparent: header } });
    assert.deepEqual(traceHeaders(), {}, 'nothing outside the effects');
    // A message without a header costs nothing and adds none.
    assert.equal(startMessageTrace(delivery(undefined)), undefined);
    assert.equal(startMessageTrace(delivery({ traceparent: 'garbage' })), undefined);
    let untraced: ReturnType<typeof traceHeaders> | undefined;
    void effectsWithTrace(undefined, () => {
      untraced = traceHeaders();
      return undefined;
    });
    assert.deepEqual(untraced, {});
  });
});

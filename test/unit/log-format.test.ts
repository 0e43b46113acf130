/**
 * The readable log line formatter and the start-up configuration summary (pure functions; the
 * processes printing them on a terminal and to a pipe are tested in test/consumer/log-output.test.ts).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { configSummary, prettyDestination, prettyLine, resolveLogFormat } from '../../src/cli/log-format';
import { loadConfig } from '../../src/config/load';
import { createLogger } from '../../src/util/log';

describe('log format', () => {
  it('auto is pretty on a terminal and JSON elsewhere; json and pretty are forced', () => {
    assert.equal(resolveLogFormat('auto', true), 'pretty');
    assert.equal(resolveLogFormat('auto', false), 'json');
    assert.equal(resolveLogFormat('json', true), 'json');
    assert.equal(resolveLogFormat('pretty', false), 'pretty');
  });

  it('formats a record as time, level, name[module], message and key=value fields', () => {
    const line = prettyLine(
      JSON.stringify({
        level: 40,
        time: '2026-12-07T07:40:12.345Z',
        pid: 7,
        name: 'virtbus-consumer',
        module: 'sync',
        msg: 'instance shutdown by itself',
        uuid: 'a8f7c9f0-0000-4000-8000-000000000001',
        power_state: 4,
        reason: 'two words',
      }),
      false,
    );
    assert.equal(
      line,
      '07:40:12.345 WARN  virtbus-consumer[sync] instance shutdown by itself' +
        ' uuid=a8f7c9f0-0000-4000-8000-000000000001 power_state=4 reason="two words"\n',
    );
  });

  it('puts an error message inline and its stack frames below, and colours only when asked', () => {
    const record = {
      level: 50,
      time: '2026-12-07T07:40:12.345Z',
      name: 'virtbus-bridge',
      msg: 'publish failed',
      err: { type: 'Error', message: 'boom', stack: 'Error: boom\n    at f (x.js:1:1)\n    at g (y.js:2:2)' },
    };
    const plain = prettyLine(JSON.stringify(record), false);
    assert.equal(
      plain,
      '07:40:12.345 ERROR virtbus-bridge publish failed err=boom\n    at f (x.js:1:1)\n    at g (y.js:2:2)\n',
    );
    const coloured = prettyLine(JSON.stringify(record), true);
    const esc = String.fromCharCode(27);
    assert.ok(coloured.includes(`${esc}[31mERROR${esc}[0m`));
    assert.ok(!plain.includes(esc));
  });

  it('passes a line that is not a JSON record through', () => {
    assert.equal(prettyLine('not json', false), 'not json\n');
  });

  it('keeps redaction: the pretty destination formats what pino already censored', () => {
    const lines: string[] = [];
    const logger = createLogger(
      'info',
      'virtbus-test',
      prettyDestination({ write: (text) => lines.push(text) }, false),
    );
    logger.info({ password: 'hunter2', amqp: { url: 'amqp://u:p@h' } }, 'secrets');
    assert.equal(lines.length, 1);
    assert.doesNotMatch(lines[0] as string, /hunter2|u:p@/);
    assert.match(lines[0] as string, /INFO {2}virtbus-test secrets password="\[redacted\]"/);
  });

  it('summarises the configuration in a few keys with secrets masked', () => {
    const config = loadConfig({
      role: 'consumer',
      args: ['--amqp-url', 'amqp://virtbus:s3cret@broker:5672', '--db-url', 'postgres://v:pw@db:5432/nova'],
      env: {},
    });
    const summary = configSummary(config, 'consumer');
    const text = JSON.stringify(summary);
    assert.doesNotMatch(text, /s3cret|:pw@/);
    assert.equal(summary.role, 'consumer');
    assert.equal(summary.mode, 'nova');
    assert.equal(summary.senders, 'strict');
    assert.match(String(summary.amqp), /^amqp:\/\/virtbus:\*+@broker:5672/);
    assert.ok(Object.keys(summary).length <= 14, 'a summary, not the whole configuration');
    const bridge = configSummary(loadConfig({ role: 'bridge', env: {} }), 'bridge');
    assert.equal(bridge.libvirt, 'qemu:///system');
  });
});

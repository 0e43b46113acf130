import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { loadConfig, redactedConfig, ConfigError, schemaLeaves } from '../../src/config/load';
import { VIRTBUS_BIN } from '../support/bridge-process';

const dir = mkdtempSync(join(tmpdir(), 'virtbus-config-test-'));
const file = (name: string, content: unknown): string => {
  const path = join(dir, name);
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
  return path;
};

describe('configuration', () => {
  it('has the contract defaults', () => {
    const config = loadConfig({ env: {}, skipDefaultFile: true });
    assert.equal(config.libvirt.uri, 'qemu:///system');
    assert.equal(config.amqp.url, 'amqp://localhost:5672');
    assert.equal(config.amqp.exchange, 'virtbus.lifecycle');
    assert.equal(config.bridge.stopDelayMs, 15000);
    assert.equal(config.consumer.queue, 'virtbus.consumer');
    assert.equal(config.db.url, 'sqlite:./data/virtbus.db');
    assert.equal(config.metrics.host, '127.0.0.1');
    assert.equal(config.log.level, 'info');
    assert.equal(config.metrics.port, 9478);
    assert.equal(loadConfig({ env: {}, role: 'consumer', skipDefaultFile: true }).metrics.port, 9479);
  });

  it('reads the contract environment names', () => {
    const config = loadConfig({
      skipDefaultFile: true,
      env: {
        VIRTBUS_HOST: 'cmp-07',
        VIRTBUS_LIBVIRT_URI: 'test:///default',
        VIRTBUS_AMQP_URL: 'amqps://u:p@broker:5671/v',
        VIRTBUS_EXCHANGE: 'ex',
        VIRTBUS_STOP_DELAY_MS: '0',
        VIRTBUS_CONSUMER_QUEUE: 'q',
        VIRTBUS_DB_URL: 'postgres://u:p@db/virtbus',
        VIRTBUS_METRICS_HOST: '0.0.0.0',
        VIRTBUS_METRICS_PORT: '0',
        VIRTBUS_LOG_LEVEL: 'debug',
      },
    });
    assert.equal(config.host, 'cmp-07');
    assert.equal(config.libvirt.uri, 'test:///default');
    assert.equal(config.amqp.url, 'amqps://u:p@broker:5671/v');
    assert.equal(config.amqp.exchange, 'ex');
    assert.equal(config.bridge.stopDelayMs, 0);
    assert.equal(config.consumer.queue, 'q');
    assert.equal(config.db.url, 'postgres://u:p@db/virtbus');
    assert.equal(config.metrics.host, '0.0.0.0');
    assert.equal(config.metrics.port, 0);
    assert.equal(config.log.level, 'debug');
  });

  it('layers files < environment < flags', () => {
    const first = file('a.json', { host: 'from-file-a', bridge: { stopDelayMs: 1000 } });
    const second = file('b.json', { host: 'from-file-b' });
    const fromFiles = loadConfig({ skipDefaultFile: true, env: { VIRTBUS_CONFIG: `${first},${second}` } });
    assert.equal(fromFiles.host, 'from-file-b');
    assert.equal(fromFiles.bridge.stopDelayMs, 1000);
    const fromEnv = loadConfig({
      skipDefaultFile: true,
      env: { VIRTBUS_CONFIG: first, VIRTBUS_HOST: 'from-env' },
    });
    assert.equal(fromEnv.host, 'from-env');
    const fromFlag = loadConfig({
      skipDefaultFile: true,
      env: { VIRTBUS_CONFIG: first, VIRTBUS_HOST: 'from-env' },
      args: ['--host', 'from-flag', '--stop-delay-ms', '7'],
    });
    assert.equal(fromFlag.host, 'from-flag');
    assert.equal(fromFlag.bridge.stopDelayMs, 7);
  });

  it('rejects bad values naming the key', () => {
    const cases: Array<[NodeJS.ProcessEnv, string]> = [
      [{ VIRTBUS_STOP_DELAY_MS: 'soon' }, 'bridge.stopDelayMs'],
      [{ VIRTBUS_AMQP_URL: 'http://broker' }, 'amqp.url'],
      [{ VIRTBUS_DB_URL: 'mysql://x' }, 'db.url'],
      [{ VIRTBUS_LOG_LEVEL: 'loud' }, 'log.level'],
      [{ VIRTBUS_METRICS_PORT: '70000' }, 'metrics.port'],
      [{ VIRTBUS_CONSUMER_MODE: 'chaos' }, 'consumer.mode'],
    ];
    for (const [env, key] of cases) {
      assert.throws(
        () => loadConfig({ env, skipDefaultFile: true }),
        (error: unknown) => error instanceof ConfigError && error.key === key && error.message.includes(key),
        `expected ConfigError for ${key}`,
      );
    }
  });

  it('rejects unknown keys (strict) and a missing VIRTBUS_CONFIG file', () => {
    const typo = file('typo.json', { bridge: { stopDelay: 5 } });
    assert.throws(
      () => loadConfig({ env: { VIRTBUS_CONFIG: typo }, skipDefaultFile: true }),
      (error: unknown) => error instanceof ConfigError && error.key === 'bridge.stopDelay',
    );
    assert.throws(
      () => loadConfig({ env: { VIRTBUS_CONFIG: join(dir, 'absent.json') }, skipDefaultFile: true }),
      (error: unknown) => error instanceof ConfigError && error.key === 'VIRTBUS_CONFIG',
    );
  });

  it('reads secrets from *_FILE and redacts them', () => {
    const secret = file('amqp-url', 'amqp://bridge:s3cret@broker:5672/prod\n');
    const config = loadConfig({
      skipDefaultFile: true,
      env: {
        VIRTBUS_AMQP_URL_FILE: secret,
        VIRTBUS_LIBVIRT_PASSWORD: 'hunter2',
        VIRTBUS_DB_URL: 'postgres://app:pw@db/x',
      },
    });
    assert.equal(config.amqp.url, 'amqp://bridge:s3cret@broker:5672/prod');
    const shown = JSON.stringify(redactedConfig(config));
    assert.ok(!shown.includes('s3cret') && !shown.includes('hunter2') && !shown.includes(':pw@'), shown);
    assert.ok(shown.includes('amqp://bridge:*****@broker:5672/prod'), shown);
  });

  it('documents every key', () => {
    for (const [key, leaf] of schemaLeaves()) assert.ok(leaf.doc.length > 10, `${key} needs a doc`);
  });

  it('`virtbus config` exits 2 naming the key, and prints redacted JSON when valid', () => {
    const bad = spawnSync(process.execPath, [VIRTBUS_BIN, 'config'], {
      env: { ...process.env, VIRTBUS_STOP_DELAY_MS: '-3' },
      encoding: 'utf8',
    });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /bridge\.stopDelayMs/);
    const good = spawnSync(process.execPath, [VIRTBUS_BIN, 'config', '--role', 'consumer'], {
      env: { ...process.env, VIRTBUS_AMQP_URL: 'amqp://a:topsecret@h' },
      encoding: 'utf8',
    });
    assert.equal(good.status, 0, good.stderr);
    const parsed = JSON.parse(good.stdout) as { metrics: { port: number }; amqp: { url: string } };
    assert.equal(parsed.metrics.port, 9479);
    assert.ok(!good.stdout.includes('topsecret'));
    const usage = spawnSync(process.execPath, [VIRTBUS_BIN, 'config', '--bogus'], { encoding: 'utf8' });
    assert.equal(usage.status, 2);
    assert.match(usage.stderr, /--bogus/);
  });
});

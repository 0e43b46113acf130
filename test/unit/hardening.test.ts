/**
 * The small hardening items of issue 10, each pinned: secrets in PostgreSQL URLs never printed
 * (userinfo and ?password=), redaction usable without loading convict, bounded consumer input in the
 * schema, sender verification's decision table, the broker user behind a URL, TLS settings kept for
 * an upper-case AMQPS:// scheme and a warning when verification is off, `virtbus tail` escaping
 * terminal control characters, and the shipped examples (metrics on loopback, PostgreSQL with
 * sslmode=verify-full).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import {
  brokerUser,
  isTlsUrl,
  socketOptions,
  warnIfUnverified,
  type AmqpTlsOptions,
} from '../../src/amqp/connection';
import { deliveryLine, formatLine, printable, printableJson } from '../../src/cli/commands/tail';
import { ConfigError, loadConfig, packageRoot } from '../../src/config/load';
import { redactedConfig, redactValue } from '../../src/config/redact';
import { expectedUser, verifySender } from '../../src/consumer/senders';
import { buildLifecycleMessage, type LifecycleMessage } from '../../src/messages/lifecycle';
import type { Logger } from '../../src/util/log';
import { VIRTBUS_BIN } from '../support/bridge-process';

const root = packageRoot();
const scratch = mkdtempSync(join(tmpdir(), 'virtbus-hardening-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

function configError(env: Record<string, string>): ConfigError {
  try {
    loadConfig({ env, role: 'consumer', skipDefaultFile: true });
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    return error;
  }
  assert.fail('expected a ConfigError');
}

describe('redaction', () => {
  it('masks the userinfo password and password-like query parameters, keeping the rest', () => {
    assert.equal(
      redactValue('postgres://virtbus:s3cret@db:5432/virtbus?sslmode=verify-full'),
      'postgres://virtbus:*****@db:5432/virtbus?sslmode=verify-full',
    );
    assert.equal(
      redactValue('postgresql://db/virtbus?user=v&password=s3cret&sslmode=require'),
      'postgresql://db/virtbus?user=v&password=*****&sslmode=require',
    );
    assert.equal(redactValue('postgres://u@h/d?sslpassword=s3cret'), 'postgres://u@h/d?sslpassword=*****');
    assert.equal(
      redactValue('amqp://a:s3cret@h1:5672/v,amqps://b:s3cret@h2'),
      'amqp://a:*****@h1:5672/v,amqps://b:*****@h2',
    );
    assert.equal(redactValue('sqlite:./data/virtbus.db'), 'sqlite:./data/virtbus.db');
    assert.equal(redactValue('not a url with s3cret'), '*****');
  });

  it('`virtbus config` does not print a PostgreSQL password given as ?password=', () => {
    const url = 'postgres://virtbus@db.example.org:5432/virtbus?password=s3cret&sslmode=verify-full';
    const shown = JSON.stringify(
      redactedConfig(loadConfig({ env: { VIRTBUS_DB_URL: url }, role: 'consumer', skipDefaultFile: true })),
    );
    assert.ok(!shown.includes('s3cret'), shown);
    const result = spawnSync(process.execPath, [VIRTBUS_BIN, 'config', '--role', 'consumer'], {
      env: { PATH: process.env.PATH, VIRTBUS_DB_URL: url, VIRTBUS_AMQP_URL: 'amqp://c:s3cret@broker/v' },
      encoding: 'utf8',
    });
    assert.equal(result.status, 0, result.stderr);
    assert.ok(!result.stdout.includes('s3cret'), result.stdout);
    assert.match(result.stdout, /password=\*\*\*\*\*&sslmode=verify-full/);
  });

  it('the AMQP connection module does not load convict (redaction has its own module)', () => {
    const probe = spawnSync(
      process.execPath,
      [
        '-e',
        `require(${JSON.stringify(join(__dirname, '..', '..', 'src', 'amqp', 'connection.js'))});
         process.stdout.write(String(Object.keys(require.cache).some((p) => /[\\\\/]convict[\\\\/]/.test(p))));`,
      ],
      { encoding: 'utf8' },
    );
    assert.equal(probe.status, 0, probe.stderr);
    assert.equal(probe.stdout, 'false');
  });
});

describe('bounded consumer input in the schema', () => {
  it('caps prefetch at 1000 (the default) and rejects a sender template without {segment}', () => {
    const config = loadConfig({ env: {}, role: 'consumer', skipDefaultFile: true });
    assert.equal(config.consumer.prefetch, 1000);
    assert.equal(config.consumer.maxMessageBytes, 1048576);
    assert.equal(config.consumer.senders.mode, 'strict');
    assert.equal(config.consumer.senders.userTemplate, '{segment}');
    assert.equal(configError({ VIRTBUS_CONSUMER_PREFETCH: '1001' }).key, 'consumer.prefetch');
    assert.equal(
      loadConfig({ env: { VIRTBUS_CONSUMER_PREFETCH: '1000' }, skipDefaultFile: true }).consumer.prefetch,
      1000,
    );
    assert.equal(
      configError({ VIRTBUS_CONSUMER_SENDER_USER_TEMPLATE: 'virtbus-bridge' }).key,
      'consumer.senders.userTemplate',
    );
    assert.equal(configError({ VIRTBUS_CONSUMER_SENDERS: 'lax' }).key, 'consumer.senders.mode');
    assert.equal(configError({ VIRTBUS_CONSUMER_MAX_MESSAGE_BYTES: '0' }).key, 'consumer.maxMessageBytes');
  });
});

describe('sender verification', () => {
  const strict = { mode: 'strict', userTemplate: '{segment}' };
  it('strict: routing key segment and broker user must both name the body host', () => {
    assert.equal(
      verifySender(strict, 'cmp-01.example.org', 'cmp-01_example_org.stopped', 'cmp-01_example_org'),
      undefined,
    );
    assert.equal(verifySender(strict, 'CMP-02', 'cmp-02.stop_result', 'cmp-02'), undefined);
    assert.equal(
      verifySender(strict, 'cmp-02', 'cmp-01.stopped', 'cmp-01')?.rejection,
      'routing_key_mismatch',
    );
    assert.equal(verifySender(strict, 'cmp-02', 'cmp-02.stopped', undefined)?.rejection, 'no_user_id');
    assert.equal(verifySender(strict, 'cmp-02', 'cmp-02.stopped', '')?.rejection, 'no_user_id');
    assert.equal(verifySender(strict, 'cmp-02', 'cmp-02.stopped', 'cmp-01')?.rejection, 'user_mismatch');
    assert.equal(verifySender(strict, 'cmp-02', 'cmp-02.stopped', 42)?.rejection, 'no_user_id');
    assert.match(
      verifySender(strict, 'cmp-02', 'cmp-02.stopped', 'cmp-01')?.reason ?? '',
      /^sender not verified: published by broker user "cmp-01", but host "cmp-02" publishes as "cmp-02"/,
    );
  });

  it('a template maps segments to user names; routing-key and off modes check less', () => {
    const prefixed = { mode: 'strict', userTemplate: 'bridge-{segment}' };
    assert.equal(expectedUser('bridge-{segment}', 'cmp-01.example.org'), 'bridge-cmp-01_example_org');
    assert.equal(verifySender(prefixed, 'cmp-01', 'cmp-01.started', 'bridge-cmp-01'), undefined);
    assert.equal(verifySender(prefixed, 'cmp-01', 'cmp-01.started', 'cmp-01')?.rejection, 'user_mismatch');
    const routing = { mode: 'routing-key', userTemplate: '{segment}' };
    assert.equal(verifySender(routing, 'cmp-01', 'cmp-01.started', undefined), undefined);
    assert.equal(
      verifySender(routing, 'cmp-01', 'cmp-02.started', 'cmp-01')?.rejection,
      'routing_key_mismatch',
    );
    assert.equal(
      verifySender({ mode: 'off', userTemplate: '{segment}' }, 'a', 'b.started', undefined),
      undefined,
    );
  });
});

describe('broker connections', () => {
  const tls = (verify: boolean, caFile = ''): AmqpTlsOptions => ({
    caFile,
    certFile: '',
    keyFile: '',
    passphrase: '',
    verify,
  });

  it('the broker user is the configured one, else the URL user (decoded), else guest (none with a client certificate)', () => {
    assert.equal(brokerUser('amqp://virtbus-consumer:pw@broker/v'), 'virtbus-consumer');
    assert.equal(brokerUser('amqp://bridge%40cmp:pw@broker/v'), 'bridge@cmp');
    assert.equal(brokerUser('amqp://broker:5672'), 'guest');
    assert.equal(brokerUser('amqps://broker:5671', 'cmp-01'), 'cmp-01');
    // Certificate login without a configured name: no user_id rather than one the broker refuses.
    assert.equal(brokerUser('amqps://broker:5671', '', true), '');
    assert.equal(brokerUser('amqps://cmp-01:pw@broker:5671', '', true), 'cmp-01');
  });

  it('AMQPS:// in upper case is TLS and keeps the CA settings', () => {
    const ca = join(scratch, 'ca.pem');
    writeFileSync(ca, 'not really a certificate');
    for (const url of ['amqps://broker:5671/v', 'AMQPS://broker:5671/v', 'AmQpS://broker/v']) {
      assert.ok(isTlsUrl(url), url);
      const options = socketOptions(url, tls(true, ca), 'test');
      assert.deepEqual(options.ca, [Buffer.from('not really a certificate')], url);
      assert.equal(options.rejectUnauthorized, true, url);
      assert.equal(options.servername, 'broker', url);
    }
    assert.ok(!isTlsUrl('amqp://broker'));
    assert.equal(socketOptions('amqp://broker', tls(true, ca), 'test').ca, undefined);
  });

  it('tls.verify=false logs a warning; true does not', () => {
    const warnings: unknown[] = [];
    const logger = { warn: (...args: unknown[]) => warnings.push(args) } as unknown as Logger;
    warnIfUnverified('amqps://broker', tls(true), logger);
    assert.equal(warnings.length, 0);
    warnIfUnverified('AMQPS://broker', tls(false), logger);
    assert.equal(warnings.length, 1);
    assert.match(JSON.stringify(warnings[0]), /NOT verified/);
    assert.match(JSON.stringify(warnings[0]), /"tlsInUse":true/);
  });
});

describe('virtbus tail escapes what it prints', () => {
  // eslint-disable-next-line no-control-regex
  const CONTROL = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;
  const hostile = (): LifecycleMessage => ({
    ...buildLifecycleMessage({
      host: 'cmp-01\u001b[2J',
      instanceUuid: '6695eb01-f6a4-8304-79aa-97f2502e193f',
      domainName: 'evil\u001b]0;owned\u0007\r\u009b31m\u202eslc.exe',
      transition: 'stopped',
      libvirt: null,
      powerState: 4,
      occurredMicros: 1_700_000_000_000_000,
      publishedMicros: 1_700_000_000_000_100,
      delayedMs: 0,
      seq: 1,
      bootId: 'b',
    }),
    power_state_name: 'shutdown\u0008\u0008\u0008running',
  });

  it('control characters in the domain name and every other field are shown escaped', () => {
    const line = formatLine(hostile(), false);
    assert.ok(!CONTROL.test(line), JSON.stringify(line));
    assert.match(line, /evil\\x1b\]0;owned\\x07\\x0d\\x9b31m\\u202eslc\.exe/);
    assert.match(line, /cmp-01\\x1b\[2J/);
    assert.match(line, /power=shutdown\\x08\\x08\\x08running/);
    // Colour stays (tail's own escape codes), the message's do not.
    const coloured = formatLine(hostile(), true);
    assert.equal(coloured.split('\u001b').length - 1, 2);
    assert.equal(printable('plain'), 'plain');
  });

  it('never throws on a hostile body, and --json output stays JSON with no raw controls', () => {
    const odd = Buffer.from(JSON.stringify({ transition: 42, host: { a: 1 }, libvirt: 'x', snapshot: 5 }));
    assert.doesNotThrow(() => deliveryLine('k', odd, false, true));
    assert.ok(!CONTROL.test(deliveryLine('k\u001b', Buffer.from('\u001b[31m not json'), false, false)));
    const json = printableJson(hostile());
    assert.ok(!CONTROL.test(json), json);
    assert.equal((JSON.parse(json) as LifecycleMessage).domain_name, hostile().domain_name);
  });
});

describe('shipped examples', () => {
  it('the example env files bind metrics to loopback', () => {
    for (const role of ['bridge', 'consumer']) {
      const text = readFileSync(join(root, 'deploy', 'systemd', `${role}.env.example`), 'utf8');
      assert.match(text, /^VIRTBUS_METRICS_HOST=127\.0\.0\.1$/m, role);
      assert.doesNotMatch(text, /^VIRTBUS_METRICS_HOST=0\.0\.0\.0/m, role);
    }
  });

  it('every PostgreSQL URL in config/examples and deploy asks for sslmode=verify-full', () => {
    const files = [
      ...readdirSync(join(root, 'config', 'examples')).map((name) => join(root, 'config', 'examples', name)),
      join(root, 'deploy', 'systemd', 'virtbus-consumer.service.d', 'postgres.conf'),
      join(root, 'deploy', 'kubernetes', 'secret.example.yaml'),
    ];
    let seen = 0;
    for (const file of files)
      for (const url of readFileSync(file, 'utf8').match(/postgres(?:ql)?:\/\/[^\s'"]+/g) ?? []) {
        seen += 1;
        assert.match(url, /[?&]sslmode=verify-full(&|$)/, `${file}: ${url}`);
      }
    assert.ok(seen >= 3, `PostgreSQL URLs found: ${seen}`);
  });
});

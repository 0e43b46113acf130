/**
 * Per-host identity by TLS client certificate (docs/security.md, "Certificates"): a broker with
 * rabbitmq_auth_mechanism_ssl (EXTERNAL, user = certificate CN) loaded with the definitions
 * `virtbus broker definitions --certificates` writes (no passwords). virtbus's own connection code
 * (AmqpConnection, as the bridge uses it) given a client certificate and a URL without a user must
 * log in as the certificate's CN — host A's routing segment — and then be held to A's grant exactly
 * as a password login is: its own key confirmed, B's key refused. A certificate whose CN is no
 * generated user cannot log in at all.
 */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AmqpConnection } from '../../src/amqp/connection';
import { formatDefinitions, generateDefinitions } from '../../src/broker/definitions';
import { loadConfig } from '../../src/config/load';
import { lifecycleRoutingKey } from '../../src/messages/lifecycle';
import type { RabbitSandbox } from '../../src/sandbox';
import { runChecked } from '../../src/sandbox/exec';
import { createLogger } from '../../src/util/log';
import { onTeardown, ownRabbitNode } from '../support/services';
import { HOST_A, HOST_B, publishConfirmed, shippedBrokerConfig, USER_A, VHOST } from './broker-fixture';

/** A client certificate with this CN, signed by the sandbox CA. */
async function clientCertificate(node: RabbitSandbox, cn: string): Promise<{ cert: string; key: string }> {
  const certs = node.certificates;
  assert.ok(certs, 'the node has TLS');
  const dir = certs.dir;
  const ossl = (...args: string[]): Promise<string> => runChecked('openssl', args, { cwd: dir });
  const key = join(dir, `${cn}.key`);
  const csr = join(dir, `${cn}.csr`);
  const cert = join(dir, `${cn}.pem`);
  await ossl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${cn}`, '-keyout', key, '-out', csr);
  await ossl(
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    certs.caFile,
    '-CAkey',
    join(dir, 'ca.key'),
    '-CAcreateserial',
    '-days',
    '2',
    '-extfile',
    join(dir, 'client.ext'),
    '-out',
    cert,
  );
  return { cert, key };
}

function connection(node: RabbitSandbox, cert: { cert: string; key: string }): AmqpConnection {
  const port = new URL(node.tlsUrl ?? '').port;
  return new AmqpConnection({
    url: `amqps://localhost:${port}/${VHOST}`,
    heartbeatSeconds: 30,
    tls: {
      caFile: node.certificates?.caFile ?? '',
      certFile: cert.cert,
      keyFile: cert.key,
      passphrase: '',
      verify: true,
    },
    connectionName: 'certificate-login test',
    reconnectInitialDelayMs: 200,
    reconnectMaxDelayMs: 1000,
    logger: createLogger('silent', 'test'),
  });
}

describe('per-host identity by client certificate (EXTERNAL)', () => {
  let node: RabbitSandbox;
  const config = loadConfig({ role: 'consumer', env: {}, skipDefaultFile: true });

  before(async () => {
    node = await ownRabbitNode({
      name: 'virtbus-certlogin',
      tls: true,
      plugins: ['rabbitmq_auth_mechanism_ssl'],
      config: [
        ...shippedBrokerConfig(),
        'auth_mechanisms.1 = EXTERNAL',
        'auth_mechanisms.2 = PLAIN',
        'ssl_cert_login_from = common_name',
      ],
    });
    const file = join(node.dir, 'definitions.json');
    writeFileSync(file, formatDefinitions(generateDefinitions({ hosts: [HOST_A, HOST_B], config })));
    chmodSync(file, 0o644);
    await node.ctl('import_definitions', file);
  });

  it("host A's certificate (CN = its segment) logs in as A and is held to A's keys", async () => {
    const amqp = connection(node, await clientCertificate(node, USER_A));
    onTeardown(() => amqp.close());
    amqp.start();
    const model = await Promise.race([
      amqp.whenUp(),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no login within 20 s')), 20000)),
    ]);
    const channel = await model.createConfirmChannel();
    await publishConfirmed(channel, config.amqp.exchange, lifecycleRoutingKey(HOST_A, 'started'), '{}', {
      userId: USER_A,
    });
    const refused = new Promise<{ code: number; message: string }>((resolve) =>
      channel.on('error', (error: { code?: number; message: string }) =>
        resolve({ code: Number(error.code), message: error.message }),
      ),
    );
    publishConfirmed(channel, config.amqp.exchange, lifecycleRoutingKey(HOST_B, 'started'), '{}').catch(
      () => undefined,
    );
    const error = await refused;
    assert.equal(error.code, 403, error.message);
    assert.ok(error.message.includes(`topic '${lifecycleRoutingKey(HOST_B, 'started')}'`), error.message);
  });

  it('a certificate whose CN is no generated user cannot log in', async () => {
    const amqp = connection(node, await clientCertificate(node, 'cmp-z_example_org'));
    onTeardown(() => amqp.close());
    let up = false;
    amqp.on('up', () => (up = true));
    amqp.start();
    await new Promise((resolve) => setTimeout(resolve, 3000));
    assert.equal(up, false, 'no connection for an unknown CN');
    const connections = await node.ctl('list_connections', 'user', '--formatter', 'json');
    assert.ok(!connections.includes('cmp-z_example_org'));
  });
});

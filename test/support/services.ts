/**
 * Services for integration tests. `npm test` (test/run.ts) starts one private RabbitMQ node and one
 * private PostgreSQL cluster for the whole run and passes them in VIRTBUS_TEST_* variables; a test
 * file run on its own starts its own. Each test file gets isolation cheaply: its own RabbitMQ vhost,
 * its own PostgreSQL database and its own libvirtd (100 ms to start). Nothing here skips: a service
 * that cannot start fails the test with the reason.
 */
import { after } from 'node:test';
import { randomBytes } from 'node:crypto';
import {
  startLibvirtd,
  startPostgres,
  startRabbitMQ,
  type LibvirtdSandbox,
  type PostgresSandbox,
  type RabbitSandbox,
} from '../../src/sandbox';
import { runChecked } from '../../src/sandbox/exec';
import { Client } from 'pg';

export const SHARED_RABBIT_ENV = 'VIRTBUS_TEST_RABBIT';
export const SHARED_POSTGRES_ENV = 'VIRTBUS_TEST_POSTGRES';

/** What test/run.ts publishes about its shared RabbitMQ node. */
export interface SharedRabbit {
  readonly host: string;
  readonly port: number;
  readonly nodeName: string;
}

export interface TestBroker {
  /** amqp URL of a fresh vhost on the shared (or own) node, as user guest. */
  readonly url: string;
  readonly vhost: string;
  /** rabbitmqctl against the node. */
  ctl(...args: string[]): Promise<string>;
}

/**
 * Teardown runs once, after the whole test file (registered at import time, so at the root: an
 * after() registered inside a before() hook would run as soon as that hook ends). Last in, first out.
 */
const cleanups: Array<() => Promise<unknown>> = [];
export function onTeardown(cleanup: () => Promise<unknown>): void {
  cleanups.push(cleanup);
}
after(async () => {
  while (cleanups.length > 0)
    await cleanups
      .pop()?.()
      .catch((error: unknown) => console.error('teardown:', error));
});

let ownRabbit: Promise<RabbitSandbox> | undefined;
let ownPostgres: Promise<PostgresSandbox> | undefined;

function uniqueName(prefix: string): string {
  return `${prefix}_${randomBytes(4).toString('hex')}`;
}

/** A private libvirtd for this test file, disposed after the file. */
export async function testLibvirtd(): Promise<LibvirtdSandbox> {
  const sandbox = await startLibvirtd();
  onTeardown(() => sandbox.dispose());
  return sandbox;
}

/** A private RabbitMQ node for tests that stop, kill or reconfigure the broker. */
export async function ownRabbitNode(
  options: Parameters<typeof startRabbitMQ>[0] = {},
): Promise<RabbitSandbox> {
  const node = await startRabbitMQ(options);
  onTeardown(() => node.dispose());
  return node;
}

async function sharedNode(): Promise<SharedRabbit & { ctlEnv: NodeJS.ProcessEnv }> {
  const shared = process.env[SHARED_RABBIT_ENV];
  if (shared) return { ...(JSON.parse(shared) as SharedRabbit), ctlEnv: process.env };
  ownRabbit ??= startRabbitMQ({ name: 'virtbus-test' }).then((node) => {
    onTeardown(() => node.dispose());
    return node;
  });
  const node = await ownRabbit;
  return { host: '127.0.0.1', port: node.port, nodeName: node.nodeName, ctlEnv: process.env };
}

/** A fresh vhost on the run's RabbitMQ node: exchanges and queues of other test files are invisible. */
export async function testBroker(): Promise<TestBroker> {
  const node = await sharedNode();
  const vhost = uniqueName('test');
  const ctl = (...args: string[]): Promise<string> =>
    runChecked('rabbitmqctl', ['-q', '-n', node.nodeName, ...args], { env: node.ctlEnv });
  await ctl('add_vhost', vhost);
  await ctl('set_permissions', '-p', vhost, 'guest', '.*', '.*', '.*');
  onTeardown(() => ctl('delete_vhost', vhost));
  return { url: `amqp://guest:guest@${node.host}:${node.port}/${encodeURIComponent(vhost)}`, vhost, ctl };
}

/** A fresh database on the run's PostgreSQL cluster. */
export async function testPostgresUrl(): Promise<string> {
  let base = process.env[SHARED_POSTGRES_ENV];
  if (!base) {
    ownPostgres ??= startPostgres().then((pg) => {
      onTeardown(() => pg.dispose());
      return pg;
    });
    base = (await ownPostgres).url;
  }
  const database = uniqueName('test');
  const admin = new Client({ connectionString: base });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${database}`);
  } finally {
    await admin.end();
  }
  const url = new URL(base);
  url.pathname = `/${database}`;
  return url.toString();
}

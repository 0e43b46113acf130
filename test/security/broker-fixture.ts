/**
 * The broker of the hostile-host suite: a private RabbitMQ node configured with the active lines of
 * the shipped deploy/rabbitmq/rabbitmq.conf (max_message_size), loaded with the definitions
 * `virtbus broker definitions --passwords` generates for two hosts, imported the way an operator
 * does it (`rabbitmqctl import_definitions`). Why generated and not the shipped example file: the
 * suite must log in as each identity, and the shipped example carries no passwords; a unit test
 * (test/unit/broker-definitions.test.ts) proves the shipped file is the generator's output.
 */
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type Channel, type ChannelModel, type ConfirmChannel } from 'amqplib';
import { loadOrCreatePasswords } from '../../src/broker/credentials';
import {
  DEFAULT_CONSUMER_USER,
  DEFAULT_OBSERVER_USER,
  DEFAULT_VHOST,
  formatDefinitions,
  generateDefinitions,
} from '../../src/broker/definitions';
import { loadConfig, type VirtbusConfig } from '../../src/config/load';
import { hostSegment } from '../../src/messages/lifecycle';
import type { RabbitSandbox } from '../../src/sandbox';
import { deployFile } from '../support/deploy';
import { onTeardown, ownRabbitNode } from '../support/services';

export const HOST_A = 'cmp-a.example.org';
export const HOST_B = 'cmp-b.example.org';
export const USER_A = hostSegment(HOST_A);
export const USER_B = hostSegment(HOST_B);
export const CONSUMER = DEFAULT_CONSUMER_USER;
export const OBSERVER = DEFAULT_OBSERVER_USER;
export const VHOST = DEFAULT_VHOST;

/** The settings line of the shipped rabbitmq.conf snippet (comments and blank lines dropped). */
export function shippedBrokerConfig(): string[] {
  return readFileSync(deployFile('rabbitmq', 'rabbitmq.conf'), 'utf8')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
}

export function shippedMaxMessageSize(): number {
  const line = shippedBrokerConfig().find((l) => l.startsWith('max_message_size'));
  const value = Number(line?.split('=')[1]?.trim());
  if (!Number.isInteger(value) || value <= 0)
    throw new Error('deploy/rabbitmq/rabbitmq.conf sets no max_message_size');
  return value;
}

export interface SecureBroker {
  readonly node: RabbitSandbox;
  readonly config: VirtbusConfig;
  readonly passwords: ReadonlyMap<string, string>;
  /** amqp://<user>:<password>@127.0.0.1:<port>/virtbus */
  url(user: string, password?: string): string;
  /** rabbitmqctl list_queues in the vhost. */
  queues(): Promise<
    Array<{ name: string; policy: string; messages: number; policyDefinition: Record<string, unknown> }>
  >;
}

export async function startSecureBroker(hosts: readonly string[] = [HOST_A, HOST_B]): Promise<SecureBroker> {
  const node = await ownRabbitNode({ name: 'virtbus-hostile', config: shippedBrokerConfig() });
  const scratch = mkdtempSync(join(tmpdir(), 'virtbus-hostile-'));
  onTeardown(() => Promise.resolve(rmSync(scratch, { recursive: true, force: true })));
  const config = loadConfig({ role: 'consumer', env: {}, skipDefaultFile: true });
  const users = [...hosts.map(hostSegment), CONSUMER, OBSERVER];
  const { passwords } = loadOrCreatePasswords(join(scratch, 'passwords'), users);
  const definitions = generateDefinitions({ hosts, config, passwords });
  // The broker reads the file as user rabbitmq: put it in the node's own directory.
  const file = join(node.dir, 'definitions.json');
  writeFileSync(file, formatDefinitions(definitions));
  chmodSync(file, 0o644);
  await node.ctl('import_definitions', file);
  rmSync(file);
  return {
    node,
    config,
    passwords,
    url: (user, password) =>
      `amqp://${encodeURIComponent(user)}:${encodeURIComponent(password ?? passwords.get(user) ?? '')}@127.0.0.1:${node.port}/${VHOST}`,
    queues: async () => {
      const ctlJson = async <T>(...args: string[]): Promise<T> =>
        JSON.parse(await node.ctl(...args, '--formatter', 'json')) as T;
      // 3.10's list_queues has no effective_policy_definition: join the policies by name.
      const [queues, policies] = await Promise.all([
        ctlJson<Array<{ name: string; policy: string; messages: number }>>(
          'list_queues',
          '-p',
          VHOST,
          'name',
          'policy',
          'messages',
        ),
        ctlJson<Array<{ name: string; definition: Record<string, unknown> | string }>>(
          'list_policies',
          '-p',
          VHOST,
        ),
      ]);
      return queues.map((queue) => {
        const definition = policies.find((p) => p.name === queue.policy)?.definition ?? {};
        return {
          ...queue,
          policyDefinition: (typeof definition === 'string' ? JSON.parse(definition) : definition) as Record<
            string,
            unknown
          >,
        };
      });
    },
  };
}

/** What the broker answered when it closed a channel (or connection): AMQP reply code and text. */
export interface BrokerRefusal {
  readonly code: number;
  readonly message: string;
}

/**
 * Runs `action` on a fresh connection and channel as `url`, and returns how the broker closed the
 * channel, or undefined when it did not within `waitMs` (the action was allowed).
 */
export async function attempt(
  url: string,
  action: (channel: ConfirmChannel, model: ChannelModel) => Promise<unknown>,
  waitMs = 3000,
): Promise<BrokerRefusal | undefined> {
  const model = await connect(url);
  try {
    const channel = await model.createConfirmChannel();
    const refused = new Promise<BrokerRefusal>((resolve) => {
      const onError = (error: unknown): void => {
        const e = error as { code?: number; message?: string };
        resolve({ code: Number(e.code ?? 0), message: String(e.message ?? error) });
      };
      channel.on('error', onError);
      model.on('error', onError);
    });
    const acted = action(channel, model).then(
      () => undefined,
      () => undefined, // the refusal itself arrives as the channel's error
    );
    return await Promise.race([
      refused,
      acted.then(
        () =>
          new Promise<BrokerRefusal | undefined>((resolve) => setTimeout(() => resolve(undefined), waitMs)),
      ),
    ]);
  } finally {
    await model.close().catch(() => undefined);
  }
}

/** Publishes on a confirm channel and resolves when the broker confirmed (rejects on nack). */
export function publishConfirmed(
  channel: ConfirmChannel,
  exchange: string,
  key: string,
  body: Buffer | string,
  options: Parameters<Channel['publish']>[3] = {},
): Promise<void> {
  return new Promise((resolve, reject) => {
    channel.publish(
      exchange,
      key,
      typeof body === 'string' ? Buffer.from(body) : body,
      { persistent: true, ...options },
      (error: unknown) => (error ? reject(new Error('publish nacked by the broker')) : resolve()),
    );
  });
}

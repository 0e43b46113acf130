/**
 * Per-host broker identities in a sandbox broker (one node or a cluster), made the way an operator
 * makes them: the definitions `virtbus broker definitions --passwords DIR` generates for the hosts
 * (one user per hypervisor named after its routing segment, the consumer and observer users, every
 * shared exchange, queue, binding and policy), imported with `rabbitmqctl import_definitions`.
 *
 * Why: on a cluster every bridge must connect as its own user, as in production, so that a test of
 * the fleet also proves the broker's per-host permissions hold with many hosts and several nodes.
 * guest is granted the vhost too: tests record what crosses the bus with an observer of their own.
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadOrCreatePasswords } from '../broker/credentials';
import {
  DEFAULT_CONSUMER_USER,
  DEFAULT_OBSERVER_USER,
  formatDefinitions,
  generateDefinitions,
} from '../broker/definitions';
import { loadConfig } from '../config/load';
import { hostSegment } from '../messages/lifecycle';

export interface BrokerIdentities {
  readonly vhost: string;
  /** The broker URL(s) for a user (comma-separated for a cluster), password and vhost filled in. */
  url(user: string): string;
  /** The URL(s) the bridge of `host` uses (its own user). */
  bridgeUrl(host: string): string;
  /** The consumer's URL(s). */
  consumerUrl(): string;
  /** The observer's URL(s) (`virtbus tail`). */
  observerUrl(): string;
  /** guest's URL(s) on the vhost, for test recorders. */
  guestUrl(): string;
}

export interface IdentityBroker {
  /** rabbitmqctl against a running node. */
  ctl(...args: string[]): Promise<string>;
  /** A directory the broker (user rabbitmq) can read, for the definitions file. */
  readonly dir: string;
  /** Comma-separated URLs for a user in a vhost. */
  urls(options: { user: string; password: string; vhost: string }): string;
}

/** Generates and imports the definitions for `hosts` in `vhost`; returns each identity's URL. */
export async function importIdentities(
  broker: IdentityBroker,
  hosts: readonly string[],
  vhost: string,
): Promise<BrokerIdentities> {
  const config = loadConfig({ role: 'consumer', env: {}, skipDefaultFile: true });
  const scratch = mkdtempSync(join(tmpdir(), 'virtbus-identities-'));
  try {
    const users = [...hosts.map(hostSegment), DEFAULT_CONSUMER_USER, DEFAULT_OBSERVER_USER];
    const { passwords } = loadOrCreatePasswords(join(scratch, 'passwords'), users);
    const definitions = generateDefinitions({ hosts, config, passwords, vhost });
    const file = join(broker.dir, `definitions-${vhost}.json`);
    writeFileSync(file, formatDefinitions(definitions));
    chmodSync(file, 0o644);
    try {
      await broker.ctl('import_definitions', file);
    } finally {
      rmSync(file, { force: true });
    }
    await broker.ctl('set_permissions', '-p', vhost, 'guest', '.*', '.*', '.*');
    const url = (user: string): string =>
      broker.urls({
        user,
        password: user === 'guest' ? 'guest' : (passwords.get(user) ?? ''),
        vhost,
      });
    return {
      vhost,
      url,
      bridgeUrl: (host) => url(hostSegment(host)),
      consumerUrl: () => url(DEFAULT_CONSUMER_USER),
      observerUrl: () => url(DEFAULT_OBSERVER_USER),
      guestUrl: () => url('guest'),
    };
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

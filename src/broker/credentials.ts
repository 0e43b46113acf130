/**
 * Per-user broker passwords kept in files, one per user (`<dir>/<user>.password`, mode 0600 in a
 * 0700 directory), for `virtbus broker definitions --passwords DIR`.
 *
 * Why files: each hypervisor must receive its own secret and nothing else, so the generator leaves
 * one file per identity for the operator (or configuration management) to hand to that host alone.
 * An existing file is reused, never overwritten: the operator may supply a password, regenerating
 * the definitions is idempotent, and rotation is "delete the file, regenerate, import, redeploy".
 * Optionally a ready `amqp-url` file per user, for systemd's LoadCredential= or a Kubernetes Secret.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DefinitionsError } from './definitions';

export function passwordFile(dir: string, user: string): string {
  return join(dir, `${user}.password`);
}

export function amqpUrlFile(dir: string, user: string): string {
  return join(dir, `${user}.amqp-url`);
}

/** 32 random bytes, base64url: no character needs escaping in a URL's user-info. */
export function newPassword(): string {
  return randomBytes(32).toString('base64url');
}

function writeSecret(path: string, content: string): void {
  // 'wx': never replace a file that appeared meanwhile; mode applies on creation.
  writeFileSync(path, content, { mode: 0o600, flag: 'wx' });
  chmodSync(path, 0o600);
}

/**
 * The password of every user: read from its file when present, otherwise generated and written.
 * Returns the passwords and the users whose file was created now.
 */
export function loadOrCreatePasswords(
  dir: string,
  users: readonly string[],
): { passwords: Map<string, string>; created: string[] } {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const passwords = new Map<string, string>();
  const created: string[] = [];
  for (const user of users) {
    const path = passwordFile(dir, user);
    if (existsSync(path)) {
      const mode = statSync(path).mode & 0o777;
      if ((mode & 0o077) !== 0)
        throw new DefinitionsError(
          `${path} is readable by others (mode ${mode.toString(8)}): chmod 600 it first`,
        );
      const password = readFileSync(path, 'utf8').replace(/\r?\n$/, '');
      if (password.length < 16)
        throw new DefinitionsError(`${path}: a password of at least 16 characters is required`);
      passwords.set(user, password);
    } else {
      const password = newPassword();
      writeSecret(path, `${password}\n`);
      passwords.set(user, password);
      created.push(user);
    }
  }
  return { passwords, created };
}

/**
 * `<broker>` with the user's name and password filled in and the vhost as path, e.g.
 * amqps://cmp-01:…@rabbitmq.example.org:5671/virtbus. Comma-separated cluster URLs each get them.
 */
export function credentialUrl(broker: string, vhost: string, user: string, password: string): string {
  return broker
    .split(',')
    .map((part) => {
      let url: URL;
      try {
        url = new URL(part.trim());
      } catch {
        throw new DefinitionsError(`--broker-url: ${part.trim()} is not a URL`);
      }
      if (url.protocol !== 'amqp:' && url.protocol !== 'amqps:')
        throw new DefinitionsError(`--broker-url: scheme ${url.protocol} is not amqp: or amqps:`);
      url.username = encodeURIComponent(user);
      url.password = encodeURIComponent(password);
      url.pathname = `/${encodeURIComponent(vhost)}`;
      return url.toString();
    })
    .join(',');
}

/** Writes (or replaces: it follows the password file) `<dir>/<user>.amqp-url`, mode 0600. */
export function writeUrlFile(dir: string, user: string, url: string): void {
  const path = amqpUrlFile(dir, user);
  writeFileSync(path, `${url}\n`, { mode: 0o600 });
  chmodSync(path, 0o600);
}

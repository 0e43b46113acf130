/**
 * Redaction of secrets for everything virtbus prints or logs: `virtbus config`, the start-up
 * configuration log line, broker and database URLs in log lines. Its own module, free of convict,
 * so the AMQP connection (and anything else that logs a URL) can use it without loading the
 * configuration machinery or registering convict formats as a side effect of an import.
 *
 * In URLs only the secret parts are masked, so the operator still sees which host and database are
 * meant: the password of the userinfo and password-like query parameters (libpq takes
 * `?password=` and `?sslpassword=` as well as the userinfo). A value that is not a URL is masked whole.
 */
import type { VirtbusConfig } from './load';
import { schema } from './schema';

export const MASK = '*****';

/** Query parameters that carry secrets (libpq's password and sslpassword among them). */
const SECRET_PARAMS = /([?&](?:password|sslpassword|pass|passwd|pwd|secret|token)=)[^&#]*/gi;

function redactUrl(part: string): string {
  const url = new URL(part);
  if (url.password) url.password = MASK;
  // Replaced in the text rather than through searchParams, which would re-encode the other params.
  url.search = url.search.replace(SECRET_PARAMS, `$1${MASK}`);
  return url.toString().replace(/\/$/, part.endsWith('/') ? '/' : '');
}

/** Replaces secrets by a mask; in URLs (comma-separated lists too) only the secret parts. */
export function redactValue(value: unknown): unknown {
  if (typeof value !== 'string' || value === '') return value;
  return value
    .split(',')
    .map((raw) => {
      const part = raw.trim();
      try {
        return redactUrl(part);
      } catch {
        return MASK;
      }
    })
    .join(',');
}

/** Dotted paths of the schema's sensitive keys. */
function sensitivePaths(node: object = schema, prefix: string[] = []): string[][] {
  const paths: string[][] = [];
  for (const [name, value] of Object.entries(node)) {
    if (value === null || typeof value !== 'object') continue;
    if ('doc' in value) {
      if ((value as { sensitive?: boolean }).sensitive) paths.push([...prefix, name]);
    } else paths.push(...sensitivePaths(value as object, [...prefix, name]));
  }
  return paths;
}

/** The effective configuration with every sensitive key redacted, for `virtbus config` and logs. */
export function redactedConfig(config: VirtbusConfig): unknown {
  const copy = structuredClone(config) as unknown as Record<string, unknown>;
  for (const path of sensitivePaths()) {
    let node: Record<string, unknown> | undefined = copy;
    for (const part of path.slice(0, -1)) node = node?.[part] as Record<string, unknown> | undefined;
    const last = path[path.length - 1];
    if (node && last !== undefined && last in node) node[last] = redactValue(node[last]);
  }
  return copy;
}

/**
 * Loads, merges and strictly validates the configuration. Any problem becomes a ConfigError that
 * names the offending key; the CLI turns it into exit code 2.
 */
import convict from 'convict';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { customFormats, schema } from './schema';

for (const format of customFormats) convict.addFormat(format);

export type ConfigRole = 'bridge' | 'consumer';
function createConvict(env: NodeJS.ProcessEnv, args: readonly string[]) {
  return convict(schema, { env, args: [...args] });
}
type Loaded = ReturnType<ReturnType<typeof createConvict>['getProperties']>;
/** The validated configuration; metrics.port is resolved to the role's default when unset. */
export type VirtbusConfig = Omit<Loaded, 'metrics'> & {
  readonly metrics: { readonly host: string; readonly port: number };
};

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(
    message: string,
    /** The configuration key (or source) at fault. */
    readonly key: string,
  ) {
    super(message);
  }
}

export const ROLE_METRICS_PORTS: Record<ConfigRole, number> = { bridge: 9478, consumer: 9479 };

/** Package root: two levels above dist/src/config or src/config. */
export function packageRoot(): string {
  let dir = __dirname;
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = resolve(dir, '..');
    if (parent === dir) return process.cwd();
    dir = parent;
  }
  return dir;
}

interface LoadOptions {
  readonly role?: ConfigRole;
  readonly env?: NodeJS.ProcessEnv;
  /** Command-line flags (e.g. ['--host', 'cmp-01']); convict maps them by each key's `arg`. */
  readonly args?: readonly string[];
  /** Skip config/default.json (tests). */
  readonly skipDefaultFile?: boolean;
}

interface SchemaLeaf {
  env?: string;
  sensitive?: boolean;
}

/** Every leaf key of the schema with its definition, as [dotted.key, leaf]. */
export function schemaLeaves(
  node: object = schema,
  prefix = '',
): Array<[string, SchemaLeaf & { doc: string; default: unknown }]> {
  const leaves: Array<[string, SchemaLeaf & { doc: string; default: unknown }]> = [];
  for (const [name, value] of Object.entries(node)) {
    const key = prefix ? `${prefix}.${name}` : name;
    if (value !== null && typeof value === 'object' && 'doc' in value) {
      leaves.push([key, value as SchemaLeaf & { doc: string; default: unknown }]);
    } else if (value !== null && typeof value === 'object') {
      leaves.push(...schemaLeaves(value as object, key));
    }
  }
  return leaves;
}

/** Secrets may come from files: VIRTBUS_AMQP_URL_FILE=/run/secrets/amqp sets amqp.url. */
function secretFileOverrides(env: NodeJS.ProcessEnv): Record<string, string> {
  const overrides: Record<string, string> = {};
  for (const [key, leaf] of schemaLeaves()) {
    if (!leaf.sensitive || !leaf.env) continue;
    const file = env[`${leaf.env}_FILE`];
    if (!file) continue;
    try {
      overrides[key] = readFileSync(file, 'utf8').trim();
    } catch (error) {
      throw new ConfigError(`${key}: cannot read ${leaf.env}_FILE ${file}: ${(error as Error).message}`, key);
    }
  }
  return overrides;
}

/** convict's messages start with the key ("amqp.url: must be …"); pick it out for ConfigError.key. */
function keyOf(message: string): string {
  const declared = /configuration param '([^']+)' not declared/.exec(message);
  if (declared?.[1]) return declared[1];
  const leading = /^([A-Za-z0-9_.]+):/.exec(message);
  return leading?.[1] ?? 'configuration';
}

export function loadConfig(options: LoadOptions = {}): VirtbusConfig {
  const env = options.env ?? process.env;
  let config: ReturnType<typeof createConvict>;
  try {
    config = createConvict(env, options.args ?? []);
  } catch (error) {
    const message = (error as Error).message;
    throw new ConfigError(message, keyOf(message));
  }
  const sources: string[] = [];
  const defaultFile = join(packageRoot(), 'config', 'default.json');
  if (!options.skipDefaultFile && existsSync(defaultFile)) sources.push(defaultFile);
  for (const file of (env.VIRTBUS_CONFIG ?? '')
    .split(',')
    .map((f) => f.trim())
    .filter(Boolean)) {
    if (!existsSync(file))
      throw new ConfigError(`VIRTBUS_CONFIG names ${file}, which does not exist`, 'VIRTBUS_CONFIG');
    sources.push(file);
  }
  try {
    // Files sit below environment and flags: convict re-applies env and args after loadFile.
    if (sources.length > 0) config.loadFile(sources);
    const secrets = secretFileOverrides(env);
    for (const [key, value] of Object.entries(secrets)) config.set(key as never, value as never);
    config.validate({ allowed: 'strict' });
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    const message = (error as Error).message.split('\n')[0] ?? String(error);
    throw new ConfigError(message, keyOf(message));
  }
  const properties = config.getProperties();
  const configuredPort = properties.metrics.port as number | null;
  const port = configuredPort ?? ROLE_METRICS_PORTS[options.role ?? 'bridge'];
  return { ...properties, metrics: { ...properties.metrics, port } };
}

// Redaction has its own module (no convict there); re-exported for existing importers.
export { redactedConfig, redactValue } from './redact';

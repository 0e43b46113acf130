/**
 * Command-line parsing shared by the subcommands: `--help`, `--flag value`, `--flag=value`, repeated
 * flags, positionals. Flags a command does not declare are a UsageError (exit 2), never ignored.
 */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export interface FlagSpec {
  /** Takes a value (`--bind PATTERN`) or is a boolean switch (`--json`). */
  readonly value: boolean;
  /** May be given more than once (values collected in order). */
  readonly repeat?: boolean;
}

export interface ParsedArgs {
  readonly flags: ReadonlyMap<string, readonly string[]>;
  readonly positionals: readonly string[];
  readonly help: boolean;
  /** Flags that are configuration keys (e.g. --host, --amqp-url), passed through to convict. */
  readonly configArgs: readonly string[];
}

/**
 * @param configFlags names of flags that are configuration keys (convict `arg`s); they are collected
 *   into configArgs for loadConfig.
 */
export function parseArgs(
  argv: readonly string[],
  spec: Readonly<Record<string, FlagSpec>>,
  configFlags: readonly string[] = [],
): ParsedArgs {
  const flags = new Map<string, string[]>();
  const positionals: string[] = [];
  const configArgs: string[] = [];
  let help = false;
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i] as string;
    if (arg === '--help' || arg === '-h') {
      help = true;
      continue;
    }
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('--')) {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq === -1 ? undefined : eq);
    const inline = eq === -1 ? undefined : arg.slice(eq + 1);
    if (configFlags.includes(name)) {
      const value = inline ?? argv[++i];
      if (value === undefined) throw new UsageError(`--${name} needs a value`);
      configArgs.push(`--${name}`, value);
      continue;
    }
    const flag = spec[name];
    if (!flag) throw new UsageError(`unknown option --${name} (see --help)`);
    let value = 'true';
    if (flag.value) {
      const next = inline ?? argv[++i];
      if (next === undefined) throw new UsageError(`--${name} needs a value`);
      value = next;
    } else if (inline !== undefined) {
      throw new UsageError(`--${name} takes no value`);
    }
    const values = flags.get(name) ?? [];
    if (values.length > 0 && !flag.repeat) throw new UsageError(`--${name} given more than once`);
    values.push(value);
    flags.set(name, values);
  }
  return { flags, positionals, help, configArgs };
}

/** The configuration keys that can be given as flags (their convict `arg` names). */
export const CONFIG_FLAGS = [
  'host',
  'log-level',
  'log-format',
  'metrics-host',
  'metrics-port',
  'libvirt-uri',
  'amqp-url',
  'exchange',
  'stop-delay-ms',
  'queue',
  'mode',
  'db-url',
];

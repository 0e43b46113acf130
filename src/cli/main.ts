/**
 * The `virtbus` command: dispatches to one module per subcommand. Exit codes: 0 clean stop,
 * 2 bad configuration or usage (the message names the key), 1 anything else fatal.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, packageRoot } from '../config/load';
import { UsageError } from './usage';

interface Command {
  readonly summary: string;
  load(): Promise<{ run(argv: readonly string[]): Promise<number> }>;
}

const COMMANDS: Record<string, Command> = {
  bridge: {
    summary: 'run the host-side bridge until SIGTERM/SIGINT',
    load: () => import('./commands/bridge.js'),
  },
  tail: {
    summary: 'print bus events live, one line each (--bind PATTERN, --json)',
    load: () => import('./commands/tail.js'),
  },
  demo: {
    summary: 'the whole pipeline on a private sandbox (libvirtd, RabbitMQ, bridge, consumer)',
    load: () => import('./commands/demo.js'),
  },
  config: {
    summary: 'validate and print the effective configuration, secrets redacted',
    load: () => import('./commands/config.js'),
  },
  consumer: {
    summary: 'run the consumer (Nova power-state sync against the instance DB) until SIGTERM/SIGINT',
    load: () => import('./commands/consumer.js'),
  },
  instances: {
    summary: 'manage instance rows: import FILE | list [--json] | set UUID key=value...',
    load: () => import('./commands/instances.js'),
  },
  hosts: {
    summary: 'the hosts view: list [--json] | disable HOST --reason TEXT [--until TIME] | enable HOST',
    load: () => import('./commands/hosts.js'),
  },
  'dead-letters': {
    summary: 'the dead-letter queue: list [--json] | replay | purge [--yes] (--reason TEXT, --limit N)',
    load: () => import('./commands/dead-letters.js'),
  },
  broker: {
    summary: 'broker set-up: definitions --hosts FILE|LIST (per-host users, queues, policies)',
    load: () => import('./commands/broker.js'),
  },
};

export const MAIN_USAGE = `Usage: virtbus <command> [options]

Carries libvirt domain lifecycle events onto RabbitMQ and keeps an instance database's power state
true to the hypervisor, the way Nova's compute manager does.

Commands:
${Object.entries(COMMANDS)
  .map(([name, command]) => `  ${name.padEnd(12)} ${command.summary}`)
  .join('\n')}

Run \`virtbus <command> --help\` for a command's options. Configuration: config/default.json, files in
VIRTBUS_CONFIG, VIRTBUS_* environment variables, flags (see docs/configuration.md).
Exit codes: 0 clean stop, 2 bad configuration or usage, 1 other fatal errors.
`;

export async function main(argv: readonly string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(MAIN_USAGE);
    return name === undefined ? 2 : 0;
  }
  if (name === '--version') {
    const manifest = JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as {
      version: string;
    };
    process.stdout.write(`${manifest.version}\n`);
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`virtbus: unknown command '${name}'\n\n${MAIN_USAGE}`);
    return 2;
  }
  try {
    const module = await command.load();
    return await module.run(rest);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`virtbus ${name}: invalid configuration: ${error.message}\n`);
      return 2;
    }
    if (error instanceof UsageError) {
      process.stderr.write(`virtbus ${name}: ${error.message}\n`);
      return 2;
    }
    process.stderr.write(
      `virtbus ${name}: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
    );
    return 1;
  }
}

if (require.main === module || process.argv[1]?.endsWith('/bin/virtbus')) {
  main(process.argv.slice(2)).then(
    (code) => {
      // Services stop their own resources; exit explicitly so nothing stray (a timer, a socket in
      // a half-closed state) can keep a stopped process alive.
      process.exitCode = code;
      process.stdout.write('', () => process.exit(code));
    },
    (error: unknown) => {
      process.stderr.write(`virtbus: ${String(error)}\n`);
      process.exitCode = 1;
    },
  );
}

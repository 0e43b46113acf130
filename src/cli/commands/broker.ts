/**
 * `virtbus broker definitions`: writes the RabbitMQ definitions of a deployment — one broker user per
 * hypervisor host (named after its routing segment) with permissions that let it touch nothing but
 * its own keys and its own command queue, the consumer and observer users, every shared exchange,
 * queue, binding and the capping policies — for `rabbitmqctl import_definitions`. Logic in
 * src/broker/; this file only parses flags and writes files.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { loadConfig } from '../../config/load';
import { credentialUrl, loadOrCreatePasswords, passwordFile, writeUrlFile } from '../../broker/credentials';
import {
  bridgeUsers,
  DEFAULT_CONSUMER_USER,
  DEFAULT_OBSERVER_USER,
  DEFAULT_VHOST,
  DefinitionsError,
  formatDefinitions,
  generateDefinitions,
  parseHostList,
} from '../../broker/definitions';
import { CONFIG_FLAGS, parseArgs, UsageError } from '../usage';

const HELP = `Usage: virtbus broker definitions --hosts FILE|HOST[,HOST...] (--passwords DIR | --certificates)
                                  [--broker-url URL] [--consumer-user NAME] [--observer-user NAME]
                                  [--vhost NAME] [--output FILE] [config flags]

Writes RabbitMQ definitions (JSON for \`rabbitmqctl import_definitions\`) giving every hypervisor
host its own broker user. The user name is the host's routing segment (the host name lower-cased,
characters outside [a-z0-9_-] replaced by _), and the broker lets it publish only <segment>.* on the
lifecycle exchange and <segment>.stop_result on the command exchange, read only its own command
queue virtbus.commands.<segment>, and declare, bind or delete nothing. Every shared object (exchanges,
the consumer's queues, dead-letter, unroutable, notifications, each host's command queue and
binding, the byte-capping policies) is in the file. Names follow the effective configuration
(VIRTBUS_* variables and config flags as the consumer would load them).

  --hosts FILE|LIST       the hypervisors as Nova knows them (CONF.host): a file with one name per
                          line (# comments) or a comma-separated list
  --passwords DIR         password login: each user's password is read from DIR/<user>.password,
                          or generated there (mode 0600, directory 0700) when missing; the file
                          carries only salted SHA-256 hashes. Delete a file and rerun to rotate.
  --certificates          TLS client-certificate login (rabbitmq_auth_mechanism_ssl, EXTERNAL):
                          users get no password; each host's certificate CN must be its user name
  --broker-url URL        with --passwords: also write DIR/<user>.amqp-url (0600), the URL each
                          process uses (VIRTBUS_AMQP_URL_FILE), e.g. amqps://rabbitmq.example.org:5671
  --consumer-user NAME    the consumer's user (default ${DEFAULT_CONSUMER_USER}; the bridges execute
                          commands only from this identity)
  --observer-user NAME    the user of \`virtbus tail\` (default ${DEFAULT_OBSERVER_USER})
  --vhost NAME            default ${DEFAULT_VHOST}
  --output FILE           write there (mode 0644) instead of standard output

Exit codes: 0 written, 2 bad usage or input (names the problem), 1 other errors.
`;

function hostsArgument(value: string): string[] {
  // An existing path is a hosts file; anything else is a list. Host names contain no '/'.
  if (value.includes('/') || existsSync(value)) {
    if (!existsSync(value)) throw new UsageError(`--hosts: file ${value} does not exist`);
    return parseHostList(readFileSync(value, 'utf8'));
  }
  return parseHostList(value);
}

export async function run(argv: readonly string[]): Promise<number> {
  const args = parseArgs(
    argv,
    {
      hosts: { value: true },
      passwords: { value: true },
      certificates: { value: false },
      'broker-url': { value: true },
      'consumer-user': { value: true },
      'observer-user': { value: true },
      vhost: { value: true },
      output: { value: true },
    },
    CONFIG_FLAGS,
  );
  if (args.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const [sub, ...extra] = args.positionals;
  if (sub !== 'definitions') throw new UsageError(`expected the subcommand 'definitions' (see --help)`);
  if (extra.length > 0) throw new UsageError(`unexpected argument ${extra[0]}`);
  const flag = (name: string): string | undefined => args.flags.get(name)?.[0];
  const hostsValue = flag('hosts');
  if (hostsValue === undefined) throw new UsageError('--hosts is required');
  const passwordsDir = flag('passwords');
  const certificates = args.flags.has('certificates');
  if ((passwordsDir === undefined) === !certificates)
    throw new UsageError('give exactly one of --passwords DIR and --certificates');
  const brokerUrl = flag('broker-url');
  if (brokerUrl !== undefined && passwordsDir === undefined)
    throw new UsageError('--broker-url needs --passwords (certificate logins carry no password)');

  const config = loadConfig({ role: 'consumer', args: args.configArgs });
  const vhost = flag('vhost') ?? DEFAULT_VHOST;
  const consumerUser = flag('consumer-user') ?? DEFAULT_CONSUMER_USER;
  const observerUser = flag('observer-user') ?? DEFAULT_OBSERVER_USER;
  try {
    const hosts = hostsArgument(hostsValue);
    const users = [
      ...bridgeUsers(hosts, [consumerUser, observerUser]).map((b) => b.user),
      consumerUser,
      observerUser,
    ];
    let passwords: Map<string, string> | undefined;
    if (passwordsDir !== undefined) {
      const loaded = loadOrCreatePasswords(passwordsDir, users);
      passwords = loaded.passwords;
      for (const user of loaded.created)
        process.stderr.write(`generated ${passwordFile(passwordsDir, user)}\n`);
      if (brokerUrl !== undefined)
        for (const user of users)
          writeUrlFile(passwordsDir, user, credentialUrl(brokerUrl, vhost, user, passwords.get(user) ?? ''));
    }
    const text = formatDefinitions(
      generateDefinitions({
        hosts,
        config,
        vhost,
        consumerUser,
        observerUser,
        ...(passwords ? { passwords } : {}),
      }),
    );
    const output = flag('output');
    if (output === undefined) process.stdout.write(text);
    else writeFileSync(output, text, { mode: 0o644 });
  } catch (error) {
    if (error instanceof DefinitionsError) throw new UsageError(error.message);
    throw error;
  }
  return Promise.resolve(0);
}

/** `virtbus config [--role bridge|consumer] [--json]`: validate and print the effective configuration, secrets redacted. */
import { loadConfig } from '../../config/load';
import { redactedConfig } from '../../config/redact';
import { CONFIG_FLAGS, parseArgs, UsageError } from '../usage';

const HELP = `Usage: virtbus config [--role bridge|consumer] [config flags]

Validates the configuration as the given role would load it (schema defaults → config/default.json →
VIRTBUS_CONFIG files → VIRTBUS_* environment → flags) and prints it as JSON with secrets redacted.
Exits 2 naming the key when something is invalid.

Options:
  --role bridge|consumer   which role's defaults apply (metrics port); default bridge
  --${CONFIG_FLAGS.join(', --')}   configuration flags
`;

export async function run(argv: readonly string[]): Promise<number> {
  const args = parseArgs(argv, { role: { value: true } }, CONFIG_FLAGS);
  if (args.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (args.positionals.length > 0) throw new UsageError(`unexpected argument ${args.positionals[0]}`);
  const role = args.flags.get('role')?.[0] ?? 'bridge';
  if (role !== 'bridge' && role !== 'consumer')
    throw new UsageError(`--role must be bridge or consumer, not ${role}`);
  const config = loadConfig({ role: role, args: args.configArgs });
  process.stdout.write(`${JSON.stringify(redactedConfig(config), null, 2)}\n`);
  return Promise.resolve(0);
}

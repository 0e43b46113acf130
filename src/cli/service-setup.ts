/**
 * The common start of `virtbus bridge` and `virtbus consumer`: parse the flags (configuration
 * flags only), print --help, load and validate the configuration for the role, create the root
 * logger (JSON lines, or readable lines on a terminal: log-format.ts) and log the effective
 * configuration: a one-line summary at info, the full dump with secrets redacted at debug.
 */
import { loadConfig, redactedConfig, type ConfigRole, type VirtbusConfig } from '../config/load';
import { createLogger, type Logger } from '../util/log';
import { configSummary, prettyDestination, resolveLogFormat } from './log-format';
import { startTracing } from '../tracing/otel';
import { CONFIG_FLAGS, parseArgs, UsageError } from './usage';

export type ServiceSetup =
  { readonly config: VirtbusConfig; readonly logger: Logger } | { readonly help: true };

export function serviceSetup(argv: readonly string[], role: ConfigRole, help: string): ServiceSetup {
  const args = parseArgs(argv, {}, CONFIG_FLAGS);
  if (args.help) {
    process.stdout.write(help);
    return { help: true };
  }
  if (args.positionals.length > 0) throw new UsageError(`unexpected argument ${args.positionals[0]}`);
  const config = loadConfig({ role, args: args.configArgs });
  const tty = process.stdout.isTTY === true;
  const destination =
    resolveLogFormat(config.log.format, tty) === 'pretty'
      ? prettyDestination(process.stdout, tty)
      : undefined;
  const logger = createLogger(config.log.level, `virtbus-${role}`, destination);
  logger.info(configSummary(config, role), 'configuration');
  logger.debug({ config: redactedConfig(config) }, 'configuration in full');
  // Span export only when OTEL_EXPORTER_OTLP_ENDPOINT is set (src/tracing/otel.ts).
  startTracing(`virtbus-${role}`, config.host, logger);
  return { config, logger };
}

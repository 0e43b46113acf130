/**
 * The common start of `virtbus bridge` and `virtbus consumer`: parse the flags (configuration
 * flags only), print --help, load and validate the configuration for the role, create the root
 * logger and log the effective configuration with secrets redacted.
 */
import { loadConfig, redactedConfig, type ConfigRole, type VirtbusConfig } from '../config/load';
import { createLogger, type Logger } from '../util/log';
import { startTracing } from '../tracing/otel'; // hook (issue 13)
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
  const logger = createLogger(config.log.level, `virtbus-${role}`);
  logger.info({ config: redactedConfig(config) }, 'configuration');
  // Span export only when OTEL_EXPORTER_OTLP_ENDPOINT is set (src/tracing/otel.ts).
  startTracing(`virtbus-${role}`, config.host, logger); // hook (issue 13)
  return { config, logger };
}

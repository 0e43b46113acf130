/** `virtbus bridge`: runs the host-side bridge until SIGTERM/SIGINT. */
import { loadConfig, redactedConfig } from '../../config/load';
import { loadNativeBinding } from '../../native/binding';
import { Bridge } from '../../bridge/bridge';
import { openOutbox } from '../../bridge/open-outbox';
import { createLogger } from '../../util/log';
import { CONFIG_FLAGS, parseArgs, UsageError } from '../usage';
import { runUntilSignal } from '../signals';

const HELP = `Usage: virtbus bridge [config flags]

Runs on a hypervisor host: listens to libvirt's domain lifecycle events on a native event-loop
thread, translates them as Nova does (with the delayed STOPPED), samples each domain's live power
state and publishes to the topic exchange with routing key <host-segment>.<transition>. Executes the
stop commands the consumer sends to this host. Serves /metrics, /healthz and /readyz.

Configuration flags (everything else: VIRTBUS_* environment, see \`virtbus config\`):
  --${CONFIG_FLAGS.join('\n  --')}

Stops on SIGTERM or SIGINT: stops intake, waits for broker confirms (bridge.shutdownTimeoutMs),
closes AMQP and libvirt, exits 0.
`;

export async function run(argv: readonly string[]): Promise<number> {
  const args = parseArgs(argv, {}, CONFIG_FLAGS);
  if (args.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (args.positionals.length > 0) throw new UsageError(`unexpected argument ${args.positionals[0]}`);
  const config = loadConfig({ role: 'bridge', args: args.configArgs });
  const logger = createLogger(config.log.level, 'virtbus-bridge');
  logger.info({ config: redactedConfig(config) }, 'configuration');
  // Open the outbox first: a journal locked by another live bridge is fatal (exit 1, with the reason).
  const outbox = await openOutbox(config, logger);
  const bridge = new Bridge({ config, binding: loadNativeBinding(), logger, outbox });
  return runUntilSignal(
    logger,
    () => bridge.start(),
    () => bridge.stop(),
  );
}

/** `virtbus bridge`: runs the host-side bridge until SIGTERM/SIGINT. */
import { loadNativeBinding } from '../../native/binding';
import { Bridge } from '../../bridge/bridge';
import { openOutbox } from '../../bridge/open-outbox';
import { CONFIG_FLAGS } from '../usage';
import { runUntilSignal } from '../signals';
import { serviceSetup } from '../service-setup';

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
  const setup = serviceSetup(argv, 'bridge', HELP);
  if ('help' in setup) return 0;
  const { config, logger } = setup;
  // Open the outbox first: a journal locked by another live bridge is fatal (exit 1, with the reason).
  const outbox = await openOutbox(config, logger);
  const bridge = new Bridge({ config, binding: loadNativeBinding(), logger, outbox });
  return runUntilSignal(
    logger,
    () => bridge.start(),
    () => bridge.stop(),
  );
}

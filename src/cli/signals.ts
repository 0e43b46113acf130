/**
 * Runs a service until SIGTERM or SIGINT, then stops it gracefully. A second signal during the
 * graceful stop exits at once (code 1), for an operator who will not wait.
 */
import type { Logger } from '../util/log';
import { stopTracing } from '../tracing/otel';

export async function runUntilSignal(
  logger: Logger,
  start: () => Promise<void>,
  stop: () => Promise<void>,
): Promise<number> {
  let signalled: (signal: NodeJS.Signals) => void = () => undefined;
  const received = new Promise<NodeJS.Signals>((resolve) => (signalled = resolve));
  let count = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    count += 1;
    if (count > 1) {
      logger.warn({ signal }, 'second signal: exiting without waiting');
      process.exit(1);
    }
    signalled(signal);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    await start();
    const signal = await received;
    logger.info({ signal }, 'shutting down');
    await stop();
    await stopTracing(); // export the last spans
    return 0;
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  }
}

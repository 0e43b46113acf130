/**
 * `virtbus consumer`: runs the consumer until SIGTERM/SIGINT. Never loads the native addon: it needs
 * only the broker and the instance database.
 */
import { hostname } from 'node:os';
import { AmqpConnection, amqpOptionsFromConfig } from '../../amqp/connection';
import { createConsumerMetrics } from '../../consumer/metrics';
import { ConsumerService } from '../../consumer/service';
import { startMetricsServer, type MetricsServer } from '../../metrics/server';
import { openStore } from '../../store/open';
import type { InstanceStore } from '../../store/types';
import { runUntilSignal } from '../signals';
import { serviceSetup } from '../service-setup';
import { CONFIG_FLAGS } from '../usage';

const HELP = `Usage: virtbus consumer [config flags]

Runs the consumer until SIGTERM or SIGINT: reads lifecycle messages from its queue
(consumer.queue, bound to the lifecycle exchange), keeps the instance database's power state true
to the hypervisor the way Nova's compute manager does (handle_lifecycle_event and the power-state
sync), sends stop/force_stop commands to the bridges (consumer.mode = nova) or only records what
Nova would do (observe), and emits instance.update notifications. Unusable messages go to the
dead-letter queue with the reason in header x-virtbus-reason.

Database: db.url = sqlite:<path> (embedded, default sqlite:./data/virtbus.db) or
postgres://user:password@host:port/db (several consumers may share it and the queue).

Options:
  --queue NAME          consumer.queue (VIRTBUS_CONSUMER_QUEUE)
  --mode nova|observe   consumer.mode (VIRTBUS_CONSUMER_MODE)
  --db-url URL          db.url (VIRTBUS_DB_URL)
  --amqp-url URL        amqp.url (VIRTBUS_AMQP_URL)
  --exchange NAME       amqp.exchange (VIRTBUS_EXCHANGE)
  --metrics-host/--metrics-port, --log-level, and the other configuration flags:
  --${CONFIG_FLAGS.join(', --')}

Every other key: VIRTBUS_* environment variables or files in VIRTBUS_CONFIG (virtbus config
--role consumer prints the effective configuration). Endpoints: /metrics, /healthz, /readyz on
metrics.host:metrics.port (default 127.0.0.1:9479).
Exit codes: 0 clean stop, 2 bad configuration or usage, 1 other fatal errors.
`;

export async function run(argv: readonly string[]): Promise<number> {
  const setup = serviceSetup(argv, 'consumer', HELP);
  if ('help' in setup) return 0;
  const { config, logger } = setup;
  let store: InstanceStore;
  try {
    store = openStore(config.db, logger.child({ module: 'store' }), 'virtbus-consumer');
  } catch (error) {
    logger.fatal({ err: error }, 'cannot open the instance database');
    return 1;
  }
  const metrics = createConsumerMetrics();
  const amqp = new AmqpConnection(
    amqpOptionsFromConfig(config.amqp, `virtbus-consumer@${hostname()}`, logger.child({ module: 'amqp' })),
  );
  const service = new ConsumerService({
    settings: config,
    store,
    metrics,
    logger: logger.child({ module: 'consumer' }),
    amqp,
  });
  let server: MetricsServer | undefined;
  try {
    return await runUntilSignal(
      logger,
      async () => {
        server = await startMetricsServer({
          host: config.metrics.host,
          port: config.metrics.port,
          registry: metrics.registry,
          readiness: service.readiness(),
        });
        logger.info(
          {
            metrics: `http://${config.metrics.host}:${server.port}/metrics`,
            mode: config.consumer.mode,
            store: store.kind,
          },
          'consumer started',
        );
        service.start();
      },
      () => service.stop(),
    );
  } finally {
    await service.stop();
    await store.close();
    await server?.close();
    logger.info('consumer stopped');
  }
}

/**
 * Database down: the consumer stops consuming, acknowledges nothing, reports not ready (HTTP /readyz
 * 503 naming db, virtbus_db_up 0), keeps every message (none dead-lettered, none lost) and, when
 * PostgreSQL is back, resumes by itself and applies everything. Uses a PostgreSQL cluster of its
 * own, because it stops it.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startMetricsServer } from '../../src/metrics/server';
import { startPostgres } from '../../src/sandbox';
import { testBroker } from '../support/services';
import { metricValue } from '../support/bridge-process';
import { Bus, EventFactory, instance, startConsumer, tempSqliteUrl, waitUntil } from '../support/consumer';

const HOST = 'cmp-db';

describe('database outage', async () => {
  const [broker, postgres] = await Promise.all([testBroker(), startPostgres()]);
  after(() => postgres.dispose());
  const consumer = await startConsumer({
    amqpUrl: broker.url,
    dbUrl: postgres.url,
    env: { VIRTBUS_CONSUMER_PREFETCH: '50' },
  });
  const server = await startMetricsServer({
    host: '127.0.0.1',
    port: 0,
    registry: consumer.metrics.registry,
    readiness: consumer.service.readiness(),
  });
  after(() => server.close());
  const base = `http://127.0.0.1:${server.port}`;
  const bus = await Bus.open(broker.url, consumer.config);
  const { queue, deadLetterQueue } = consumer.config.consumer;
  const events = new EventFactory();
  const uuids = Array.from({ length: 100 }, () => randomUUID());
  await consumer.store.upsert(
    uuids.map((uuid) => instance({ uuid, host: HOST, vm_state: 'active', power_state: 1 })),
  );

  /**
   * Ready messages and consumers from a passive declare (exact, unlike list_queues, whose quorum
   * queue figures lag), and messages in the consumer's hands (delivered, not acknowledged).
   */
  const counts = async (): Promise<{ ready: number; unacked: number; consumers: number }> => {
    const { messageCount, consumerCount } = await bus.queueCounts(queue);
    const inFlight = (await consumer.metrics.inFlight.get()).values[0]?.value ?? 0;
    return { ready: messageCount, unacked: inFlight, consumers: consumerCount };
  };

  it('is ready and applies events while the database is up', async () => {
    assert.equal((await fetch(`${base}/readyz`)).status, 200);
    const paused = uuids.map((uuid) => events.event(HOST, uuid, 'paused', 3));
    await bus.publishLifecycle(consumer.config.amqp.exchange, paused);
    await Promise.all(paused.map((m) => consumer.waitProcessed(m.event_id)));
  });

  it('with the database down: no acks, consumption paused, not ready; then recovers by itself', async () => {
    await postgres.stop('fast');
    const resumed = uuids.map((uuid) => events.event(HOST, uuid, 'resumed', 1));
    await bus.publishLifecycle(consumer.config.amqp.exchange, resumed);
    await waitUntil(
      'readiness to go false',
      async () => (await fetch(`${base}/readyz`)).status === 503,
      15000,
    );
    const body = await (await fetch(`${base}/readyz`)).text();
    assert.match(body, /db/);
    assert.match(body, /consuming/, 'consumption paused');
    // Messages the consumer hands back while pausing are briefly in neither count: settle first.
    let during = await counts();
    await waitUntil(
      'every message to be in the queue or in hand',
      async () => {
        during = await counts();
        return during.ready + during.unacked === resumed.length;
      },
      10000,
    ).catch(() => undefined);
    assert.equal(
      during.ready + during.unacked,
      resumed.length,
      'every message is still in the queue or in hand',
    );
    await sleep(2000);
    const later = await counts();
    assert.deepEqual(later, during, 'nothing delivered or acknowledged while the database is down');
    const metrics = await (await fetch(`${base}/metrics`)).text();
    assert.equal(metricValue(metrics, 'virtbus_db_up'), 0);
    assert.equal(metricValue(metrics, 'virtbus_consumer_paused'), 1);
    assert.ok((metricValue(metrics, 'virtbus_consumer_db_errors_total') ?? 0) >= 1);
    await waitUntil(
      'the queue depth metric to show the waiting messages',
      async () =>
        (metricValue(await (await fetch(`${base}/metrics`)).text(), 'virtbus_consumer_queue_depth') ?? 0) > 0,
      5000,
    );
    assert.equal(consumer.processed.filter((p) => resumed.some((m) => m.event_id === p.messageId)).length, 0);

    await postgres.start();
    await waitUntil(
      'readiness to come back',
      async () => (await fetch(`${base}/readyz`)).status === 200,
      20000,
    );
    await Promise.all(resumed.map((m) => consumer.waitProcessed(m.event_id, 20000)));
    const rows = await consumer.store.list({ host: HOST });
    assert.equal(rows.length, uuids.length);
    assert.ok(
      rows.every((row) => row.power_state === 1),
      'every resumed event applied',
    );
    await waitUntil(
      'the queue to drain',
      async () => {
        const after = await counts();
        return after.ready === 0 && after.unacked === 0;
      },
      10000,
    );
    assert.equal((await bus.queueCounts(deadLetterQueue)).messageCount, 0, 'nothing dead-lettered');
    const metrics2 = await (await fetch(`${base}/metrics`)).text();
    assert.equal(metricValue(metrics2, 'virtbus_db_up'), 1);
    assert.equal(metricValue(metrics2, 'virtbus_consumer_paused'), 0);
  });
});

describe('SQLite write lock held by another process', async () => {
  const broker = await testBroker();
  const dbUrl = tempSqliteUrl();
  const consumer = await startConsumer({
    amqpUrl: broker.url,
    dbUrl,
    env: { VIRTBUS_DB_BUSY_TIMEOUT_MS: '300' },
  });
  const bus = await Bus.open(broker.url, consumer.config);
  const events = new EventFactory();
  const uuids = Array.from({ length: 20 }, () => randomUUID());
  await consumer.store.upsert(
    uuids.map((uuid) => instance({ uuid, host: HOST, vm_state: 'active', power_state: 1 })),
  );

  it('pauses while the database is locked, acknowledges nothing, and resumes when the lock goes', async () => {
    const path = dbUrl.slice('sqlite:'.length);
    const holder = spawn(
      process.execPath,
      [
        '-e',
        `const D = require(${JSON.stringify(require.resolve('better-sqlite3'))});
         const db = new D(${JSON.stringify(path)});
         db.exec('BEGIN IMMEDIATE');
         process.stdout.write('locked\\n');
         process.stdin.once('data', () => { db.exec('ROLLBACK'); db.close(); process.exit(0); });`,
      ],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    after(() => holder.kill());
    await once(holder.stdout, 'data');
    const paused = uuids.map((uuid) => events.event(HOST, uuid, 'paused', 3));
    await bus.publishLifecycle(consumer.config.amqp.exchange, paused);
    await waitUntil('the consumer to pause', () => !consumer.service.ready, 10000);
    await sleep(1000);
    assert.equal(consumer.processed.filter((p) => paused.some((m) => m.event_id === p.messageId)).length, 0);
    assert.equal((await consumer.metrics.dbUp.get()).values[0]?.value, 0);
    holder.stdin.write('release\n');
    await once(holder, 'exit');
    await Promise.all(paused.map((m) => consumer.waitProcessed(m.event_id, 20000)));
    await consumer.service.whenReady(10000);
    const rows = await consumer.store.list({ host: HOST });
    assert.ok(rows.every((row) => row.power_state === 3));
    assert.equal((await bus.queueCounts(consumer.config.consumer.deadLetterQueue)).messageCount, 0);
  });
});

/**
 * The consumer's database state (starting → up → outage → up) driven with a store whose health the
 * test switches: which errors wait for the database and which are the message's own, one probe per
 * outage however many calls fail, and shutdown ending the wait. The real databases' outages are
 * the consumer and faults suites' job; this pins the transitions.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Registry } from 'prom-client';
import { Database } from '../../src/consumer/database';
import { createConsumerMetrics } from '../../src/consumer/metrics';
import { ShutdownAbort } from '../../src/consumer/rounds';
import { StoreUnavailableError, type InstanceStore } from '../../src/store/types';
import { createLogger } from '../../src/util/log';

/** A store that is only what Database calls: migrate and ping, failing while `down`. */
function store(): { store: InstanceStore; down: boolean; pings: number } {
  const state = {
    down: false,
    pings: 0,
    store: undefined as unknown as InstanceStore,
  };
  state.store = {
    kind: 'sqlite',
    migrate: () => (state.down ? Promise.reject(new StoreUnavailableError('down')) : Promise.resolve()),
    ping: () => {
      state.pings += 1;
      return state.down ? Promise.reject(new Error('connection refused')) : Promise.resolve();
    },
  } as unknown as InstanceStore;
  return state;
}

function database(fake: { store: InstanceStore }) {
  const events: string[] = [];
  const metrics = createConsumerMetrics(new Registry());
  const abort = new AbortController();
  const db = new Database({
    store: fake.store,
    retry: { retryInitialDelayMs: 1, retryMaxDelayMs: 5 },
    metrics,
    logger: createLogger('silent', 'database-test'),
    signal: abort.signal,
    onUp: () => events.push('up'),
    onOutage: () => events.push('outage'),
  });
  return { db, events, metrics, abort };
}

async function gauge(metrics: ReturnType<typeof createConsumerMetrics>): Promise<number | undefined> {
  return (await metrics.dbUp.get()).values[0]?.value;
}

describe('consumer database state', () => {
  it('starting until the schema migrates (retried while the database is down), then up', async () => {
    const fake = store();
    fake.down = true;
    const { db, events, metrics } = database(fake);
    assert.equal(db.state.name, 'starting');
    const started = db.start();
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(db.state.name, 'starting');
    fake.down = false;
    await started;
    assert.equal(db.state.name, 'up');
    assert.equal(db.up, true);
    assert.deepEqual(events, ['up']);
    assert.equal(await gauge(metrics), 1);
  });

  it('an error on a database that answers is the message’s own: thrown, no outage', async () => {
    const fake = store();
    const { db, events } = database(fake);
    await db.start();
    await assert.rejects(
      db.run(() => Promise.reject(new Error('constraint violated'))),
      /constraint violated/,
    );
    assert.equal(db.state.name, 'up');
    assert.deepEqual(events, ['up']);
  });

  it('an unavailable database: outage (one probe for all waiting calls), then up, and the calls retried', async () => {
    const fake = store();
    const { db, events, metrics } = database(fake);
    await db.start();
    let attempts = 0;
    const call = (): Promise<string> => {
      attempts += 1;
      return fake.down ? Promise.reject(new StoreUnavailableError('gone')) : Promise.resolve('done');
    };
    fake.down = true;
    const first = db.run(call);
    const second = db.run(call);
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(db.state.name, 'outage');
    assert.equal(db.up, false);
    assert.equal(await gauge(metrics), 0);
    assert.deepEqual(events, ['up', 'outage'], 'one outage however many calls failed');
    const third = db.run(call);
    fake.down = false;
    assert.deepEqual(await Promise.all([first, second, third]), ['done', 'done', 'done']);
    assert.equal(db.state.name, 'up');
    assert.deepEqual(events, ['up', 'outage', 'up']);
    assert.equal(attempts, 5, 'the two failed calls ran again; the third waited for the probe');
    assert.equal((await metrics.dbErrors.get()).values[0]?.value, 2);
  });

  it('any error while the database does not answer a ping is an outage, not the message’s', async () => {
    const fake = store();
    const { db, events } = database(fake);
    await db.start();
    fake.down = true;
    const waiting = db.run(() =>
      fake.down ? Promise.reject(new Error('socket hang up')) : Promise.resolve(1),
    );
    await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(db.state.name, 'outage');
    fake.down = false;
    assert.equal(await waiting, 1);
    assert.deepEqual(events, ['up', 'outage', 'up']);
  });

  it('shutdown during an outage ends the waits with ShutdownAbort', async () => {
    const fake = store();
    const { db, abort } = database(fake);
    await db.start();
    fake.down = true;
    const waiting = db.run(() => Promise.reject(new StoreUnavailableError('gone')));
    await new Promise((resolve) => setTimeout(resolve, 10));
    abort.abort();
    await assert.rejects(waiting, ShutdownAbort);
    assert.equal(db.state.name, 'outage', 'no probe answered');
  });
});

/**
 * The event queue is process-wide: a worker thread that loads the addon must not drain (steal) or
 * inject into the queue of the environment that started the event loop. queueStats stays readable.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { loadNativeBinding } from '../../src/native/binding';
import { Collector } from '../support/native-collector';

interface WorkerReport {
  drain: string | null;
  inject: string | null;
  depth: number;
  ownLoopDrain?: string | null;
}

// CommonJS source evaluated in the worker: tries each call and reports the error messages.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const binding = require(workerData.bindingPath).loadNativeBinding();
const attempt = (fn) => {
  try {
    fn();
    return null;
  } catch (error) {
    return String(error && error.message);
  }
};
const report = {
  drain: attempt(() => binding.drain()),
  inject: attempt(() => void binding.injectSyntheticEvents(1, 1)),
  depth: binding.queueStats().depth,
};
if (workerData.ownLoop) {
  binding.startEventLoop(() => undefined);
  report.ownLoopDrain = attempt(() => binding.drain());
  binding.stopEventLoop();
}
parentPort.postMessage(report);
`;

async function runWorker(ownLoop: boolean): Promise<WorkerReport> {
  const worker = new Worker(WORKER_SOURCE, {
    eval: true,
    workerData: { bindingPath: require.resolve('../../src/native/binding'), ownLoop },
  });
  // 'exit' comes after the worker's environment was torn down (and gave up the queue if it held it).
  // Listened for from the start: on a busy machine it can be emitted right after 'message', before
  // a listener attached once the report arrived would exist (the test then never ended).
  const exited = new Promise((resolve) => worker.once('exit', resolve));
  const report = await new Promise<WorkerReport>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  await exited;
  return report;
}

const NOT_OWNER = /belongs to the environment \(thread\) that started the event loop/;

void describe('native queue ownership across worker threads', () => {
  const binding = loadNativeBinding();

  void it('a worker cannot drain or inject while the main thread runs the loop; queueStats works', async () => {
    binding.drain();
    const collector = new Collector(binding);
    collector.start();
    try {
      const report = await runWorker(false);
      assert.match(report.drain ?? 'drain succeeded', NOT_OWNER);
      assert.match(report.inject ?? 'inject succeeded', NOT_OWNER);
      assert.equal(typeof report.depth, 'number');
      // The owner still gets its events.
      await binding.injectSyntheticEvents(3, 1);
      await collector.waitFor('3 events on the main thread', () => collector.events.length === 3);
    } finally {
      binding.stopEventLoop();
    }
  });

  void it('the owner keeps the queue after stop; a worker that starts the loop owns it until it exits', async () => {
    binding.drain();
    binding.startEventLoop(() => undefined);
    binding.stopEventLoop();
    await binding.injectSyntheticEvents(2, 1);
    const report = await runWorker(true);
    // Stopped, the main thread still owns what is queued…
    assert.match(report.drain ?? 'drain succeeded', NOT_OWNER);
    assert.match(report.inject ?? 'inject succeeded', NOT_OWNER);
    assert.equal(report.depth, 2);
    // …until the worker starts its own loop, which makes it the owner.
    assert.equal(report.ownLoopDrain, null);
    // The worker is gone: nobody owns the queue, the main thread can drain again.
    assert.equal(binding.drain().events.length, 0);
    binding.startEventLoop(() => undefined);
    binding.stopEventLoop();
  });
});

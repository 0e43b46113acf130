/**
 * Worker: the native hand-off alone. The addon's injector thread pushes synthetic events through the
 * real enqueue path; the real EventPump drains them into a target that only counts (no translation,
 * no publishing). Measures events/s into JavaScript and the native queue's high-water mark.
 */
import { EventPump } from '../../src/bridge/event-pump';
import { loadNativeBinding } from '../../src/native/binding';
import { createLogger } from '../../src/util/log';
import { waitUntil } from '../../src/sandbox';
import { serve } from '../lib/ipc';
import { ResourceSampler } from '../lib/stats';

const binding = loadNativeBinding();
let received = 0;
let overflowed = 0;
const pump = new EventPump(
  binding,
  {
    events: (batch) => {
      received += batch.length;
      return Promise.resolve();
    },
    close: () => undefined,
    overflow: (dropped) => {
      overflowed += dropped;
    },
  },
  createLogger('error', 'bench-handoff'),
);

serve({
  start(params: { capacity: number }) {
    binding.setQueueCapacity(params.capacity);
    binding.startEventLoop(pump.wake);
    return Promise.resolve({ capacity: binding.queueStats().capacity });
  },

  /**
   * `count` events; waitWhenFull: the injector waits for room (the hand-off's ceiling) or, like
   * libvirt's callbacks, drops when the queue is full (what a burst costs).
   */
  async run(params: { count: number; domains: number; waitWhenFull: boolean }) {
    const before = binding.queueStats();
    const start = received;
    const droppedBefore = overflowed;
    const sampler = new ResourceSampler();
    const started = performance.now();
    await binding.injectSyntheticEvents(params.count, params.domains, { waitWhenFull: params.waitWhenFull });
    const after = binding.queueStats();
    const expected = params.count - (after.dropped - before.dropped);
    await waitUntil('the pump to drain everything', () => received - start >= expected, 60_000, 1);
    const seconds = (performance.now() - started) / 1000;
    return {
      events: received - start,
      seconds,
      rate: (received - start) / seconds,
      dropped: after.dropped - before.dropped,
      overflowReported: overflowed - droppedBefore,
      highWater: binding.queueStats().highWater,
      capacity: after.capacity,
      resources: sampler.stop(),
    };
  },

  /** `rate` events/s for `seconds` in small injections: the queue depth under a realistic load. */
  async paced(params: { rate: number; seconds: number; domains: number }) {
    const total = Math.round(params.rate * params.seconds);
    const start = received;
    const started = performance.now();
    let injected = 0;
    const pending: Array<Promise<void>> = [];
    while (injected < total) {
      const due =
        Math.min(total, Math.floor(((performance.now() - started) / 1000) * params.rate)) - injected;
      if (due > 0) {
        pending.push(
          binding.injectSyntheticEvents(due, Math.min(params.domains, due), { waitWhenFull: true }),
        );
        injected += due;
      }
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    await Promise.all(pending);
    await waitUntil('the pump to drain everything', () => received - start >= total, 60_000, 1);
    return { events: total, highWater: binding.queueStats().highWater };
  },

  stop() {
    binding.stopEventLoop();
    return Promise.resolve({});
  },
});

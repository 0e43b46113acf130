/**
 * The ordering rule, broker-free: within one bridge process its seq orders, whatever its wall clock
 * does (an NTP step back must not drop its later events); across processes occurred_at does.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Bridge, rig } from './handler-kit';

const MINUTES_5 = 5 * 60 * 1_000_000;

describe('handler: ordering', () => {
  it('a later event of the same bridge process applies though its clock stepped back minutes', async () => {
    const r = rig();
    const uuid = r.instance('cmp-a');
    const bridge = new Bridge('cmp-a');
    assert.equal(await r.handler.handleLifecycle(bridge.event(uuid, 'paused', 3)), 'synced');
    bridge.clockUs -= MINUTES_5; // NTP steps the host's clock back
    assert.equal(await r.handler.handleLifecycle(bridge.event(uuid, 'resumed', 1)), 'synced');
    assert.equal(r.store.row(uuid).power_state, 1);
    // …and its snapshot, taken after the step, applies too.
    assert.equal(await r.handler.handleLifecycle(bridge.event(uuid, 'sync', 3)), 'synced');
    assert.equal(r.store.row(uuid).power_state, 3);
  });

  it('an earlier seq of the same process is out of order whatever its occurred_at says', async () => {
    const r = rig();
    const uuid = r.instance('cmp-a');
    const bridge = new Bridge('cmp-a');
    const early = bridge.event(uuid, 'paused', 3);
    const late = bridge.event(uuid, 'resumed', 1);
    assert.equal(await r.handler.handleLifecycle(late), 'synced');
    assert.equal(
      await r.handler.handleLifecycle({ ...early, occurredUs: late.occurredUs + MINUTES_5 }),
      'out_of_order',
    );
    assert.equal(r.store.row(uuid).power_state, 1);
  });

  it('across processes occurred_at orders: a restarted bridge with an older clock is out of order', async () => {
    const r = rig();
    const uuid = r.instance('cmp-a');
    const first = new Bridge('cmp-a');
    assert.equal(await r.handler.handleLifecycle(first.event(uuid, 'paused', 3)), 'synced');
    const restarted = new Bridge('cmp-a', first.clockUs - MINUTES_5);
    assert.equal(await r.handler.handleLifecycle(restarted.event(uuid, 'resumed', 1)), 'out_of_order');
    const later = new Bridge('cmp-a', first.clockUs + 1000);
    assert.equal(await r.handler.handleLifecycle(later.event(uuid, 'resumed', 1)), 'synced');
  });

  it('sync_end of the same process skips a row its later seq already changed', async () => {
    const r = rig();
    const uuid = r.instance('cmp-a');
    const bridge = new Bridge('cmp-a');
    const end = bridge.syncEnd([]);
    bridge.clockUs -= MINUTES_5;
    // An event published after the snapshot marker (higher seq) with an earlier wall clock.
    const resumed = bridge.event(uuid, 'resumed', 1);
    await r.handler.handleLifecycle(resumed);
    assert.equal(await r.handler.handleLifecycle(end), 'sync_end');
    assert.equal(r.store.row(uuid).power_state, 1, 'not marked NOSTATE by the older snapshot');
  });
});

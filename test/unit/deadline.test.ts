import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { settlesWithin } from '../../src/util/deadline';

describe('settlesWithin', () => {
  it('is true when the work settles in time, fulfilled or rejected', async () => {
    assert.equal(await settlesWithin(sleep(5), 1000), true);
    assert.equal(await settlesWithin(Promise.reject(new Error('failed')), 1000), true);
  });

  it('is false when the time runs out first, and does not wait for the work', async () => {
    const started = Date.now();
    assert.equal(await settlesWithin(new Promise(() => undefined), 20), false);
    assert.ok(Date.now() - started < 1000);
  });

  it('a deadline already past still lets work that has settled count', async () => {
    assert.equal(await settlesWithin(Promise.resolve(), -5), true);
    assert.equal(await settlesWithin(new Promise(() => undefined), -5), false);
  });
});

/**
 * The end of a stop command, broker-free: what each result outcome does to the row (Nova's
 * stop_instance and reverts_task_state), not_found as its own outcome, and the commanded-host check.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { validateCommandResult } from '../../src/consumer/validate';
import type { StopCommand } from '../../src/messages/command';
import { Bridge, resultFor, rig, type Rig } from './handler-kit';

/** An active instance on cmp-a whose guest shut down by itself: 4b sends a stop. */
async function stopping(): Promise<{ r: Rig; uuid: string; command: StopCommand }> {
  const r = rig();
  const uuid = r.instance('cmp-a');
  const bridge = new Bridge('cmp-a');
  assert.equal(await r.handler.handleLifecycle(bridge.event(uuid, 'stopped', 4)), 'synced');
  const command = r.commands[0];
  assert.ok(command, 'a stop was sent');
  assert.equal(command.host, 'cmp-a');
  assert.equal(r.store.row(uuid).pending_command_host, 'cmp-a');
  return { r, uuid, command };
}

describe('handler: stop results', () => {
  for (const outcome of ['failed', 'refused', 'expired', 'skipped'] as const)
    for (const power of [null, 0, 1]) {
      it(`${outcome} with power_state ${String(power)} clears the task and records why, nothing else`, async () => {
        const { r, uuid, command } = await stopping();
        const before = r.store.row(uuid);
        assert.equal(await r.handler.handleResult(resultFor(command, outcome, power)), 'command_result');
        const row = r.store.row(uuid);
        assert.equal(row.task_state, null);
        assert.equal(row.vm_state, 'active');
        assert.equal(row.power_state, before.power_state, 'power_state untouched (4)');
        assert.equal(row.pending_command_id, null);
        assert.equal(row.pending_command_host, null);
        assert.equal(row.last_action, `stop_${outcome}`);
        assert.match(row.last_error ?? '', new RegExp(`^${outcome}: `));
        assert.equal(await r.actions('stop_failed'), 1);
      });
    }

  it('not_found never marks the instance stopped: task cleared, reason recorded, its own metric', async () => {
    const { r, uuid, command } = await stopping();
    assert.equal(await r.handler.handleResult(resultFor(command, 'not_found', 0)), 'command_result');
    const row = r.store.row(uuid);
    assert.equal(row.vm_state, 'active');
    assert.equal(row.power_state, 4);
    assert.equal(row.task_state, null);
    assert.equal(row.last_action, 'stop_not_found');
    assert.match(row.last_error ?? '', /^not_found: /);
    assert.equal(await r.actions('stop_not_found'), 1);
    assert.equal(await r.actions('stop_failed'), 0);
    assert.equal(await r.actions('stop_completed'), 0);
  });

  it('stopped with a null power_state marks stopped and keeps the power_state it had', async () => {
    const { r, uuid, command } = await stopping();
    await r.handler.handleResult(resultFor(command, 'stopped', null));
    const row = r.store.row(uuid);
    assert.equal(row.vm_state, 'stopped');
    assert.equal(row.power_state, 4);
  });

  it('stopped takes the live power_state the bridge read', async () => {
    const { r, uuid, command } = await stopping();
    await r.handler.handleResult(resultFor(command, 'already_stopped', 6));
    assert.equal(r.store.row(uuid).power_state, 6);
    assert.equal(r.store.row(uuid).last_action, 'stop_completed');
  });

  it('a result from another host than the commanded one is refused and changes nothing', async () => {
    const { r, uuid, command } = await stopping();
    const before = r.store.row(uuid);
    const [result] = await r.handler.handleBatch([
      { kind: 'result', result: resultFor(command, 'stopped', 4, 'cmp-b') },
    ]);
    assert.ok(result && !result.ok, 'failed: the consumer dead-letters it');
    assert.match(result.error.message, /result host cmp-b is not the host command .* was sent to \(cmp-a\)/);
    assert.deepEqual(r.store.row(uuid), before);
  });

  it('the commanded host is judged from the pending command, not the row host', async () => {
    const { r, uuid, command } = await stopping();
    // An operator moves the row while the stop is out: the answer still comes from cmp-a.
    r.store.rows.set(uuid, { ...r.store.row(uuid), host: 'cmp-b' });
    const [fromNew] = await r.handler.handleBatch([
      { kind: 'result', result: resultFor(command, 'stopped', 4, 'cmp-b') },
    ]);
    assert.ok(fromNew && !fromNew.ok);
    assert.equal(await r.handler.handleResult(resultFor(command, 'stopped', 4, 'cmp-a')), 'command_result');
    assert.equal(r.store.row(uuid).vm_state, 'stopped');
  });

  it('a timeout clears the command and its host', async () => {
    const { r, uuid } = await stopping();
    r.clock += 61_000_000;
    assert.equal(await r.handler.expireCommands(), 1);
    const row = r.store.row(uuid);
    assert.equal(row.task_state, null);
    assert.equal(row.pending_command_host, null);
    assert.equal(row.last_action, 'stop_timeout');
  });
});

describe('validate: results', () => {
  const body = (fields: Record<string, unknown>): Buffer =>
    Buffer.from(
      JSON.stringify({
        schema: 'virtbus.command-result/1',
        command_id: 'c0ffee00-0000-4000-8000-000000000001',
        action: 'stop',
        host: 'cmp-a',
        instance_uuid: 'c0ffee00-0000-4000-8000-000000000002',
        outcome: 'not_found',
        method: 'none',
        power_state: null,
        error: 'no domain',
        finished_at: '2026-01-01T00:00:00.000000Z',
        ...fields,
      }),
    );
  const now = Date.UTC(2026, 0, 2) * 1000;

  it('accepts not_found with a null power_state', () => {
    const result = validateCommandResult(body({}), now, 60_000);
    assert.ok(result.ok);
    assert.equal(result.value.outcome, 'not_found');
    assert.equal(result.value.powerState, null);
  });

  it('refuses a command_id that is not a UUID', () => {
    const result = validateCommandResult(body({ command_id: 'x'.repeat(40) }), now, 60_000);
    assert.ok(!result.ok);
    assert.match(result.reason, /^field command_id: not a UUID/);
  });
});

/**
 * src/consumer/nova.ts on its own: the pure functions Nova's decisions are made of, checked against
 * nova/compute/manager.py and nova/compute/api.py — the transition map, every row of the
 * vm_state × power_state table with Nova's log line, compute_api.stop's refusals, and the re-check
 * that only 4b carries. (The same decisions through the handler: handler-nova-table.test.ts.)
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { expectedPowerState, stopPrecondition, stopRefusal, syncBranch } from '../../src/consumer/nova';
import { PowerState } from '../../src/libvirt/constants';
import { TRANSITIONS } from '../../src/libvirt/translate';
import { rowFromInput } from '../../src/store/schema';
import type { InstanceRow } from '../../src/store/types';
import { VM_STATES } from '../../src/store/types';

const { NOSTATE, RUNNING, PAUSED, SHUTDOWN, CRASHED, SUSPENDED } = PowerState;
const POWER_STATES = [NOSTATE, RUNNING, PAUSED, SHUTDOWN, CRASHED, SUSPENDED];

describe('nova.expectedPowerState (handle_lifecycle_event)', () => {
  const expected: Record<string, number | null> = {
    started: RUNNING,
    stopped: SHUTDOWN,
    paused: PAUSED,
    resumed: RUNNING,
    postcopy_started: PAUSED,
    migration_completed: PAUSED,
  };
  for (const transition of TRANSITIONS)
    it(`${transition} → ${String(expected[transition] ?? null)}`, () => {
      assert.equal(expectedPowerState(transition), expected[transition] ?? null);
    });
});

describe('nova.syncBranch (_sync_instance_power_state)', () => {
  /** [vm_state, power states, branch, action, Nova's log line] */
  const table: Array<[string, readonly number[], string, string, string]> = [
    ['building', POWER_STATES, '4a', 'none', ''],
    ['rescued', POWER_STATES, '4a', 'none', ''],
    ['resized', POWER_STATES, '4a', 'none', ''],
    ['suspended', POWER_STATES, '4a', 'none', ''],
    ['error', POWER_STATES, '4a', 'none', ''],
    ['active', [SHUTDOWN, CRASHED], '4b', 'stop', 'Instance shutdown by itself. Calling the stop API.'],
    ['active', [SUSPENDED], '4c', 'stop', 'Instance is suspended unexpectedly. Calling the stop API.'],
    ['active', [PAUSED], '4d', 'warn_paused', 'Instance is paused unexpectedly. Ignore.'],
    ['active', [NOSTATE], '4e', 'warn_not_found', 'Instance is unexpectedly not found. Ignore.'],
    ['active', [RUNNING], '4f', 'none', ''],
    [
      'stopped',
      [RUNNING, PAUSED, SUSPENDED],
      '4g',
      'force_stop',
      'Instance is not stopped. Calling the stop API.',
    ],
    ['stopped', [NOSTATE, SHUTDOWN, CRASHED], '4g', 'none', ''],
    [
      'paused',
      [SHUTDOWN, CRASHED],
      '4h',
      'force_stop',
      'Paused instance shutdown by itself. Calling the stop API.',
    ],
    ['paused', [NOSTATE, RUNNING, PAUSED, SUSPENDED], '4i', 'none', ''],
    [
      'soft-delete',
      [RUNNING, PAUSED, CRASHED, SUSPENDED],
      '4j',
      'warn_not_deleted',
      'Instance is not (soft-)deleted.',
    ],
    ['soft-delete', [NOSTATE, SHUTDOWN], '4j', 'none', ''],
    [
      'deleted',
      [RUNNING, PAUSED, CRASHED, SUSPENDED],
      '4j',
      'warn_not_deleted',
      'Instance is not (soft-)deleted.',
    ],
    ['deleted', [NOSTATE, SHUTDOWN], '4j', 'none', ''],
    ['shelved', POWER_STATES, '4k', 'none', ''],
    ['shelved_offloaded', POWER_STATES, '4k', 'none', ''],
  ];
  for (const [vmState, powers, branch, action, message] of table)
    it(`${vmState} × [${powers.join(', ')}] → ${branch} ${action}`, () => {
      for (const power of powers) assert.deepEqual(syncBranch(vmState, power), { branch, action, message });
    });

  it('the table covers every vm_state Nova has, for every power state', () => {
    for (const vmState of VM_STATES)
      for (const power of POWER_STATES)
        assert.ok(
          table.some(([state, powers]) => state === vmState && powers.includes(power)),
          `${vmState} × ${power}`,
        );
  });

  it('a vm_state Nova does not list falls through every branch: nothing', () => {
    for (const power of POWER_STATES)
      assert.deepEqual(syncBranch('migrating', power), { branch: 'other', action: 'none', message: '' });
  });
});

describe('nova.stopRefusal (compute_api.stop: check_instance_host, check_instance_state)', () => {
  const row = (fields: Partial<InstanceRow>): InstanceRow => ({
    ...rowFromInput(
      {
        uuid: '3b0c9f5e-1f4e-4a57-9e55-1a2b3c4d5e6f',
        host: 'cmp-a',
        vm_state: 'active',
        task_state: null,
        power_state: SHUTDOWN,
        launched_at: '2026-01-01T00:00:00.000000Z',
      },
      '2026-01-01T00:00:00.000000Z',
    ),
    ...fields,
  });

  it('allows an active or error instance with a host, no task, launched', () => {
    assert.equal(stopRefusal(row({})), null);
    assert.equal(stopRefusal(row({ vm_state: 'error' })), null);
  });
  it('InstanceNotReady without a host', () => {
    assert.match(stopRefusal(row({ host: null })) ?? '', /^InstanceNotReady: instance\.host is not set/);
  });
  for (const vmState of VM_STATES.filter((state) => state !== 'active' && state !== 'error'))
    it(`InstanceInvalidState for vm_state ${vmState}`, () => {
      assert.equal(
        stopRefusal(row({ vm_state: vmState })),
        `InstanceInvalidState: vm_state ${vmState} is not active or error`,
      );
    });
  it('InstanceInvalidState while a task is set (task_state=[None])', () => {
    assert.equal(
      stopRefusal(row({ task_state: 'rebooting' })),
      'InstanceInvalidState: task_state rebooting is set',
    );
  });
  it('InstanceInvalidState for an instance never launched', () => {
    assert.match(
      stopRefusal(row({ launched_at: null })) ?? '',
      /^InstanceInvalidState: the instance was never launched/,
    );
  });
});

describe('nova.stopPrecondition (_stop_unexpected_shutdown_instance re-checks; the others do not)', () => {
  it('4b stops only while the guest is still SHUTDOWN or CRASHED', () => {
    assert.deepEqual(stopPrecondition('4b'), [SHUTDOWN, CRASHED]);
  });
  for (const branch of ['4c', '4g', '4h'] as const)
    it(`${branch} has no re-check`, () => {
      assert.equal(stopPrecondition(branch), undefined);
    });
});

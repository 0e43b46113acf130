/**
 * Nova's decisions, as pure functions, after nova/compute/manager.py and nova/compute/api.py: the
 * transition → expected power state map of handle_lifecycle_event, the vm_state × power_state
 * branches of _sync_instance_power_state (numbered 4a–4k here, in Nova's order; docs/consumer.md
 * has the table) and the checks compute_api.stop's decorators make before it acts.
 */
import { PowerState } from '../libvirt/constants';
import type { Transition } from '../libvirt/translate';
import type { InstanceRow } from '../store/types';

/** handle_lifecycle_event step 2; null for transitions Nova never syncs on. */
export function expectedPowerState(transition: Transition): number | null {
  switch (transition) {
    case 'stopped':
      return PowerState.SHUTDOWN;
    case 'started':
    case 'resumed':
      return PowerState.RUNNING;
    case 'paused':
    case 'postcopy_started':
    case 'migration_completed':
      return PowerState.PAUSED;
    case 'defined':
    case 'undefined':
    case 'shutdown':
    case 'pmsuspended':
    case 'crashed':
    case 'rebooted':
    case 'sync':
    case 'sync_end':
      return null;
  }
}

export type NovaAction =
  'none' | 'stop' | 'force_stop' | 'warn_paused' | 'warn_not_found' | 'warn_not_deleted';

export interface SyncBranch {
  /** The row of the table (4a–4k, in the order _sync_instance_power_state tests them). */
  readonly branch: '4a' | '4b' | '4c' | '4d' | '4e' | '4f' | '4g' | '4h' | '4i' | '4j' | '4k' | 'other';
  readonly action: NovaAction;
  /** Nova's log line for it (empty when Nova logs nothing). */
  readonly message: string;
}

const OFF: readonly number[] = [PowerState.SHUTDOWN, PowerState.CRASHED];

/** _sync_instance_power_state step 4: what Nova does for this vm_state and (driver) power state. */
export function syncBranch(vmState: string, vmPowerState: number): SyncBranch {
  switch (vmState) {
    case 'building':
    case 'rescued':
    case 'resized':
    case 'suspended':
    case 'error':
      return { branch: '4a', action: 'none', message: '' };
    case 'active':
      if (OFF.includes(vmPowerState))
        return {
          branch: '4b',
          action: 'stop',
          message: 'Instance shutdown by itself. Calling the stop API.',
        };
      if (vmPowerState === PowerState.SUSPENDED)
        return {
          branch: '4c',
          action: 'stop',
          message: 'Instance is suspended unexpectedly. Calling the stop API.',
        };
      if (vmPowerState === PowerState.PAUSED)
        return { branch: '4d', action: 'warn_paused', message: 'Instance is paused unexpectedly. Ignore.' };
      if (vmPowerState === PowerState.NOSTATE)
        return {
          branch: '4e',
          action: 'warn_not_found',
          message: 'Instance is unexpectedly not found. Ignore.',
        };
      return { branch: '4f', action: 'none', message: '' };
    case 'stopped':
      if (vmPowerState !== PowerState.NOSTATE && !OFF.includes(vmPowerState))
        return {
          branch: '4g',
          action: 'force_stop',
          message: 'Instance is not stopped. Calling the stop API.',
        };
      return { branch: '4g', action: 'none', message: '' };
    case 'paused':
      if (OFF.includes(vmPowerState))
        return {
          branch: '4h',
          action: 'force_stop',
          message: 'Paused instance shutdown by itself. Calling the stop API.',
        };
      return { branch: '4i', action: 'none', message: '' };
    case 'soft-delete':
    case 'deleted':
      if (vmPowerState !== PowerState.NOSTATE && vmPowerState !== PowerState.SHUTDOWN)
        return { branch: '4j', action: 'warn_not_deleted', message: 'Instance is not (soft-)deleted.' };
      return { branch: '4j', action: 'none', message: '' };
    case 'shelved':
    case 'shelved_offloaded':
      return { branch: '4k', action: 'none', message: '' };
    default:
      return { branch: 'other', action: 'none', message: '' };
  }
}

/**
 * compute_api.stop's decorators (nova/compute/api.py: check_instance_host, check_instance_state
 * with vm_state=[ACTIVE, ERROR], task_state=(None,) and must_have_launched): instance.host set,
 * vm_state active or error, no task, and launched_at set. Returns why Nova would refuse
 * (InstanceInvalidState / InstanceNotReady), or null. force_stop has no decorators (it only saves
 * with expected_task_state=[None], which the sync's own task check already ensured).
 */
export function stopRefusal(row: InstanceRow): string | null {
  if (!row.host) return 'InstanceNotReady: instance.host is not set';
  if (row.vm_state !== 'active' && row.vm_state !== 'error')
    return `InstanceInvalidState: vm_state ${row.vm_state} is not active or error`;
  if (row.task_state !== null) return `InstanceInvalidState: task_state ${row.task_state} is set`;
  if (!row.launched_at) return 'InstanceInvalidState: the instance was never launched (launched_at unset)';
  return null;
}

/**
 * The live states a stop may still proceed in, sent with the command (only_if_power_states): 4b
 * re-checks that the guest is still SHUTDOWN/CRASHED (_stop_unexpected_shutdown_instance); the other
 * branches call the API without a re-check.
 */
export function stopPrecondition(branch: SyncBranch['branch']): readonly number[] | undefined {
  return branch === '4b' ? OFF : undefined;
}

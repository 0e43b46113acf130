/**
 * libvirt (event id, type, detail) → virtbus transition, as Nova's Host._event_lifecycle_callback maps
 * them (nova/virt/libvirt/host.py), plus the lifecycle events Nova drops, which virtbus still publishes.
 * Pure: the one libvirt query Nova makes here (job stats for SUSPENDED_MIGRATED) is asked for through
 * the `needs-job-check` result and made by the bridge's state sampler (migratedTransition), which
 * decides with the functions below.
 */
import {
  DETAIL_NAMES,
  EventId,
  JobType,
  LIFECYCLE_EVENT_NAMES,
  LifecycleEvent,
  SuspendedDetail,
  nameOrNumber,
} from './constants';

export const TRANSITIONS = [
  'started',
  'stopped',
  'paused',
  'resumed',
  'postcopy_started',
  'migration_completed',
  'defined',
  'undefined',
  'shutdown',
  'pmsuspended',
  'crashed',
  'rebooted',
  'sync',
  'sync_end',
] as const;
export type Transition = (typeof TRANSITIONS)[number];

/** Nova's LifecycleEvent names; null for what Nova ignores. */
export const NOVA_TRANSITION: Readonly<Record<Transition, string | null>> = {
  started: 'Started',
  stopped: 'Stopped',
  paused: 'Paused',
  resumed: 'Resumed',
  postcopy_started: 'Postcopy started',
  migration_completed: 'Migration completed',
  defined: null,
  undefined: null,
  shutdown: null,
  pmsuspended: null,
  crashed: null,
  rebooted: null,
  sync: null,
  sync_end: null,
};

export interface LibvirtCodes {
  /** Symbolic event name (STOPPED, REBOOT, …) or the number as a string when unknown. */
  readonly event: string;
  /** Symbolic detail name or the number as a string; null for REBOOT. */
  readonly detail: string | null;
  readonly event_code: number;
  readonly detail_code: number | null;
}

export type Translation =
  | { readonly kind: 'transition'; readonly transition: Transition; readonly libvirt: LibvirtCodes }
  /** SUSPENDED_MIGRATED: the job type decides between migration_completed and paused. */
  | { readonly kind: 'needs-job-check'; readonly libvirt: LibvirtCodes }
  /** An event id or type virtbus has no transition for; carried as numbers for logs and metrics. */
  | { readonly kind: 'unknown'; readonly libvirt: LibvirtCodes };

const BY_TYPE: Readonly<Record<number, Transition>> = {
  [LifecycleEvent.DEFINED]: 'defined',
  [LifecycleEvent.UNDEFINED]: 'undefined',
  [LifecycleEvent.STARTED]: 'started',
  [LifecycleEvent.SUSPENDED]: 'paused',
  [LifecycleEvent.RESUMED]: 'resumed',
  [LifecycleEvent.STOPPED]: 'stopped',
  [LifecycleEvent.SHUTDOWN]: 'shutdown',
  [LifecycleEvent.PMSUSPENDED]: 'pmsuspended',
  [LifecycleEvent.CRASHED]: 'crashed',
};

export function libvirtCodes(eventId: number, type: number, detail: number): LibvirtCodes {
  if (eventId === EventId.REBOOT) return { event: 'REBOOT', detail: null, event_code: -1, detail_code: null };
  return {
    event: nameOrNumber(LIFECYCLE_EVENT_NAMES, type),
    detail: nameOrNumber(DETAIL_NAMES[type], detail),
    event_code: type,
    detail_code: detail,
  };
}

export function translate(eventId: number, type: number, detail: number): Translation {
  const libvirt = libvirtCodes(eventId, type, detail);
  if (eventId === EventId.REBOOT) return { kind: 'transition', transition: 'rebooted', libvirt };
  if (eventId !== EventId.LIFECYCLE) return { kind: 'unknown', libvirt };
  if (type === LifecycleEvent.SUSPENDED) {
    if (detail === SuspendedDetail.POSTCOPY)
      return { kind: 'transition', transition: 'postcopy_started', libvirt };
    if (detail === SuspendedDetail.MIGRATED) return { kind: 'needs-job-check', libvirt };
  }
  const transition = BY_TYPE[type];
  return transition ? { kind: 'transition', transition, libvirt } : { kind: 'unknown', libvirt };
}

/** How virDomainGetJobStats failed, as Nova's guest.get_job_info classifies it. */
export type JobQueryError = 'no-domain' | 'operation-invalid' | 'no-ram-info' | 'other';

/**
 * Nova's get_job_info for SUSPENDED_MIGRATED (Guest.get_job_info in nova/virt/libvirt/guest.py, as
 * Host._event_lifecycle_callback calls it), step 1: the job type, with
 * libvirt's failures mapped: a transient guest that finished migrating has vanished (NO_DOMAIN or
 * OPERATION_INVALID → COMPLETED); "migration was active, but no RAM info was set" → NONE. Any other
 * failure is re-raised by get_job_info, so Nova's callback queues **nothing** for the event: null
 * here, and the dispatcher publishes nothing either (docs/message-format.md).
 */
export function jobTypeFromQuery(
  result: { readonly jobType: number } | { readonly error: JobQueryError },
): number | null {
  if ('jobType' in result) return result.jobType;
  switch (result.error) {
    case 'no-domain':
    case 'operation-invalid':
      return JobType.COMPLETED;
    case 'no-ram-info':
      return JobType.NONE;
    case 'other':
      return null;
  }
}

/**
 * Step 2: a NONE job is ambiguous. Still active on this host means the migration failed; gone (or
 * NO_DOMAIN) means it completed; an error asking means failed.
 */
export function resolveNoneJob(active: boolean | 'no-domain' | 'error'): number {
  if (active === 'error' || active === true) return JobType.FAILED;
  return JobType.COMPLETED;
}

/** Step 3: only a completed job is migration_completed; anything else, including failure, is paused (bug #1788014). */
export function transitionForJob(jobType: number): Transition {
  return jobType === JobType.COMPLETED ? 'migration_completed' : 'paused';
}

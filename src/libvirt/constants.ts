/**
 * Numeric libvirt and Nova codes virtbus uses. libvirt appends values over time, so every lookup
 * here tolerates unknown numbers: they are carried through as numbers, never a crash.
 * Sources: libvirt-domain.h enums; nova/virt/event.py; nova/compute/power_state.py.
 */

/** virDomainEventType, indexed by value. */
export const LIFECYCLE_EVENT_NAMES = [
  'DEFINED',
  'UNDEFINED',
  'STARTED',
  'SUSPENDED',
  'RESUMED',
  'STOPPED',
  'SHUTDOWN',
  'PMSUSPENDED',
  'CRASHED',
] as const;

export const LifecycleEvent = {
  DEFINED: 0,
  UNDEFINED: 1,
  STARTED: 2,
  SUSPENDED: 3,
  RESUMED: 4,
  STOPPED: 5,
  SHUTDOWN: 6,
  PMSUSPENDED: 7,
  CRASHED: 8,
} as const;

/** Detail names per event type, indexed by detail value. */
export const DETAIL_NAMES: Readonly<Record<number, readonly string[]>> = {
  [LifecycleEvent.DEFINED]: ['ADDED', 'UPDATED', 'RENAMED', 'FROM_SNAPSHOT'],
  [LifecycleEvent.UNDEFINED]: ['REMOVED', 'RENAMED'],
  [LifecycleEvent.STARTED]: ['BOOTED', 'MIGRATED', 'RESTORED', 'FROM_SNAPSHOT', 'WAKEUP', 'RECREATED'],
  [LifecycleEvent.SUSPENDED]: [
    'PAUSED',
    'MIGRATED',
    'IOERROR',
    'WATCHDOG',
    'RESTORED',
    'FROM_SNAPSHOT',
    'API_ERROR',
    'POSTCOPY',
    'POSTCOPY_FAILED',
    'GUEST_SHUTDOWN',
  ],
  [LifecycleEvent.RESUMED]: ['UNPAUSED', 'MIGRATED', 'FROM_SNAPSHOT', 'POSTCOPY', 'POSTCOPY_FAILED'],
  [LifecycleEvent.STOPPED]: [
    'SHUTDOWN',
    'DESTROYED',
    'CRASHED',
    'MIGRATED',
    'SAVED',
    'FAILED',
    'FROM_SNAPSHOT',
    'RECREATED',
  ],
  [LifecycleEvent.SHUTDOWN]: ['FINISHED', 'GUEST', 'HOST'],
  [LifecycleEvent.PMSUSPENDED]: ['MEMORY', 'DISK'],
  [LifecycleEvent.CRASHED]: ['PANICKED', 'CRASHLOADED'],
};

export const SuspendedDetail = { MIGRATED: 1, POSTCOPY: 7 } as const;

/** VIR_DOMAIN_EVENT_ID_* */
export const EventId = { LIFECYCLE: 0, REBOOT: 1 } as const;

/** virDomainState */
export const DomainStateCode = {
  NOSTATE: 0,
  RUNNING: 1,
  BLOCKED: 2,
  PAUSED: 3,
  SHUTDOWN: 4,
  SHUTOFF: 5,
  CRASHED: 6,
  PMSUSPENDED: 7,
} as const;

/** virDomainJobType */
export const JobType = { NONE: 0, BOUNDED: 1, UNBOUNDED: 2, COMPLETED: 3, FAILED: 4, CANCELLED: 5 } as const;

/** virErrorNumber values the bridge classifies. */
export const LibvirtErrorCode = {
  INTERNAL_ERROR: 1,
  SYSTEM_ERROR: 38,
  NO_DOMAIN: 42,
  OPERATION_INVALID: 55,
} as const;

/** VIR_CONNECT_CLOSE_REASON_* names by value. */
export const CLOSE_REASON_NAMES = ['error', 'eof', 'keepalive', 'client'] as const;

/** Nova power_state codes (nova/compute/power_state.py) and their notification strings. */
export const PowerState = {
  NOSTATE: 0,
  RUNNING: 1,
  PAUSED: 3,
  SHUTDOWN: 4,
  CRASHED: 6,
  SUSPENDED: 7,
} as const;
export type PowerStateCode = (typeof PowerState)[keyof typeof PowerState];

export const POWER_STATE_NAMES: Readonly<Record<PowerStateCode, string>> = {
  0: 'pending',
  1: 'running',
  3: 'paused',
  4: 'shutdown',
  6: 'crashed',
  7: 'suspended',
};

/** A name for a code from an index table, or the code itself as a string when libvirt is newer than us. */
export function nameOrNumber(names: readonly string[] | undefined, code: number): string {
  return names?.[code] ?? String(code);
}

/**
 * Samples live domain state for the dispatcher, the way Nova's staleness guard needs it: the
 * power_state published with an event is read *after* the event arrived (after any stop delay), so a
 * consumer can tell a stale event from the current truth. One query serves every event of a batch:
 * a few domains are asked for by UUID in one thread-pool job, many through one full listing.
 */
import type { NativeConnection } from '../native/contract';
import { powerStateOf } from '../libvirt/power-state';
import type { PowerStateCode } from '../libvirt/constants';
import { LibvirtErrorCode } from '../libvirt/constants';
import { isLibvirtError } from '../native/binding';
import {
  jobTypeFromQuery,
  resolveNoneJob,
  transitionForJob,
  type JobQueryError,
  type Transition,
} from '../libvirt/translate';
import { JobType } from '../libvirt/constants';

/** Above this many distinct domains one listing is cheaper than per-domain lookups. */
const LIST_ALL_THRESHOLD = 48;

/** uuid → live power state, or null when it could not be read (libvirt unreachable). */
export type PowerStates = ReadonlyMap<string, PowerStateCode | null>;

export async function samplePowerStates(
  connection: NativeConnection | undefined,
  uuids: readonly string[],
): Promise<PowerStates> {
  const result = new Map<string, PowerStateCode | null>();
  if (uuids.length === 0) return result;
  if (!connection) {
    for (const uuid of uuids) result.set(uuid, null);
    return result;
  }
  try {
    if (uuids.length > LIST_ALL_THRESHOLD) {
      // Keep only the domains asked for: the listing may hold many more than the batch touched.
      const wanted = new Set(uuids);
      for (const domain of await connection.listAllDomains())
        if (wanted.has(domain.uuid)) result.set(domain.uuid, powerStateOf(domain.state));
      for (const uuid of uuids) if (!result.has(uuid)) result.set(uuid, powerStateOf(null));
    } else {
      const states = await connection.domainStates(uuids);
      uuids.forEach((uuid, index) => result.set(uuid, powerStateOf(states[index]?.state ?? null)));
    }
  } catch {
    for (const uuid of uuids) result.set(uuid, null);
  }
  return result;
}

/**
 * Nova's SUSPENDED_MIGRATED decision: migration_completed only when the job completed, paused
 * otherwise — or null when Nova's callback would queue nothing: its job query (get_job_info) re-raises
 * an unexpected libvirt error out of the callback. Without a connection the query cannot be made
 * either, so that is null too; the reconnect snapshot that follows every lost connection carries
 * the state instead.
 */
export async function migratedTransition(
  connection: NativeConnection | undefined,
  uuid: string,
): Promise<Transition | null> {
  if (!connection) return null;
  let jobType: number | null;
  try {
    jobType = jobTypeFromQuery({ jobType: await connection.jobType(uuid) });
  } catch (error) {
    jobType = jobTypeFromQuery({ error: jobQueryError(error) });
  }
  if (jobType === null) return null;
  if (jobType === JobType.NONE) {
    let active: boolean | 'no-domain' | 'error';
    try {
      active = await connection.isActive(uuid);
    } catch (error) {
      active =
        isLibvirtError(error) && error.libvirtCode === LibvirtErrorCode.NO_DOMAIN ? 'no-domain' : 'error';
    }
    jobType = resolveNoneJob(active);
  }
  return transitionForJob(jobType);
}

/** migratedTransition for several domains at once (in their order), the queries concurrent. */
export function migratedTransitions(
  connection: NativeConnection | undefined,
  uuids: readonly string[],
): Promise<Array<Transition | null>> {
  return Promise.all(uuids.map((uuid) => migratedTransition(connection, uuid)));
}

/** How virDomainGetJobStats failed, in the classes Nova's get_job_info tells apart. */
function jobQueryError(error: unknown): JobQueryError {
  if (!isLibvirtError(error)) return 'other';
  if (error.libvirtCode === LibvirtErrorCode.NO_DOMAIN) return 'no-domain';
  if (error.libvirtCode === LibvirtErrorCode.OPERATION_INVALID) return 'operation-invalid';
  if (
    error.libvirtCode === LibvirtErrorCode.INTERNAL_ERROR &&
    error.message.includes('migration was active, but no RAM info was set')
  )
    return 'no-ram-info';
  return 'other';
}

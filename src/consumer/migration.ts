/**
 * Live migration as the two hosts tell it, read from lifecycle messages (pure functions; the handler
 * decides with them). Nova moves instance.host in its own post-live-migration step; virtbus has no
 * such step, so the row follows the guest when both hosts agree: the destination says the guest
 * runs there after a migration (RESUMED with detail MIGRATED or POSTCOPY and live power_state
 * running, or its snapshot lists it RUNNING) and the row's host says it left (migration_completed,
 * STOPPED with detail MIGRATED, or its snapshot no longer lists it). STARTED MIGRATED is only
 * evidence: it comes when the incoming domain is created, paused until the switchover, and moving
 * the row on it wrote a state the destination's next words contradicted (running, then a snapshot's
 * paused, then running again: three instance.update for one move). One host's word alone only holds
 * back stops for a bounded window, as Nova does not act on an instance whose task_state is
 * 'migrating'.
 *
 * The real sequences (QEMU 7.2 / libvirt 9.0), pre-copy: source SUSPENDED MIGRATED (the bridge's
 * job check publishes `paused` while the job runs), then STOPPED MIGRATED; destination STARTED
 * MIGRATED (when the incoming domain is created, before any memory is copied), then RESUMED
 * MIGRATED. Post-copy: source SUSPENDED POSTCOPY (`postcopy_started`), then STOPPED MIGRATED;
 * destination RESUMED POSTCOPY, then RESUMED MIGRATED. A failed migration ends with the source's
 * RESUMED (MIGRATED or POSTCOPY_FAILED) and the destination's STOPPED FAILED.
 */
import { LifecycleEvent, PowerState } from '../libvirt/constants';
import type { MigrationEvidence } from '../store/types';
import type { LifecycleEventIn } from './validate';

/** Detail codes (libvirt-domain.h). */
const STARTED_MIGRATED = 1;
const SUSPENDED_MIGRATED = 1;
const SUSPENDED_POSTCOPY = 7;
const RESUMED_MIGRATED = 1;
const RESUMED_POSTCOPY = 3;
const STOPPED_MIGRATED = 3;

/**
 * What a message says about a migration, from the side that sent it:
 * - arrived: the guest runs here after a migration (a destination's word that can move the row);
 * - arriving: the guest is being migrated here but does not run yet, or its live state is not
 *   running (a destination's word that is evidence only: STARTED MIGRATED, or a RESUMED whose
 *   live power_state was sampled not running);
 * - leaving: the guest is being migrated away (a source's word, not yet done);
 * - left: the migration away from here completed (a source's word);
 * - null: nothing about a migration.
 */
export type MigrationWord = 'arrived' | 'arriving' | 'leaving' | 'left' | null;

function detail(event: LifecycleEventIn, eventCode: number): number | null {
  const codes = event.libvirt;
  return codes !== null && codes.eventCode === eventCode ? codes.detailCode : null;
}

export function migrationWord(event: LifecycleEventIn): MigrationWord {
  switch (event.transition) {
    case 'started':
      return detail(event, LifecycleEvent.STARTED) === STARTED_MIGRATED ? 'arriving' : null;
    case 'resumed': {
      const code = detail(event, LifecycleEvent.RESUMED);
      if (code !== RESUMED_MIGRATED && code !== RESUMED_POSTCOPY) return null;
      return event.powerState === PowerState.RUNNING ? 'arrived' : 'arriving';
    }
    case 'paused': {
      const code = detail(event, LifecycleEvent.SUSPENDED);
      return code === SUSPENDED_MIGRATED || code === SUSPENDED_POSTCOPY ? 'leaving' : null;
    }
    case 'postcopy_started':
      return 'leaving';
    case 'migration_completed':
      return 'left';
    case 'stopped':
      return detail(event, LifecycleEvent.STOPPED) === STOPPED_MIGRATED ? 'left' : null;
    case 'sync':
      // A snapshot listing the guest running is a destination's word only from another host.
      return event.powerState === PowerState.RUNNING ? 'arrived' : null;
    case 'defined':
    case 'undefined':
    case 'shutdown':
    case 'pmsuspended':
    case 'crashed':
    case 'rebooted':
    case 'sync_end':
      return null;
  }
}

/**
 * The row's evidence if it still counts: recorded while the row named the same host, and not older
 * than the window. Anything else is no evidence.
 */
export function liveEvidence(
  evidence: MigrationEvidence | null,
  host: string | null,
  nowUs: number,
  windowMs: number,
): MigrationEvidence | null {
  if (evidence === null || host === null || evidence.source !== host) return null;
  return nowUs - evidence.updated_us > windowMs * 1000 ? null : evidence;
}

/**
 * Both hosts agree: the source said the guest left and a destination's newest word says it runs
 * there (only then is the move's power_state, running, what the destination will go on saying).
 */
export function agreed(
  evidence: MigrationEvidence,
): evidence is MigrationEvidence & { readonly dest: string } {
  return (
    evidence.source_state === 'left' &&
    evidence.dest !== null &&
    evidence.dest !== evidence.source &&
    evidence.dest_power === PowerState.RUNNING
  );
}

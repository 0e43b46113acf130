/**
 * The handler's live-migration decisions (the rules in migration.ts applied to a row): record one
 * host's word, move the row when both agree, void evidence a host takes back. Apart from handler.ts
 * so that file keeps reading as Nova's own sync; this is virtbus's stand-in for the step Nova takes
 * in post_live_migration_at_destination (moving instance.host), which the bus has no equivalent of.
 */
import type { Notifier } from '../notify/notifier';
import type { InstanceRow, MigrationEvidence } from '../store/types';
import type { Logger } from '../util/log';
import { isoMicros } from '../util/time';
import type { ConsumerMetrics } from './metrics';
import { agreed, liveEvidence, migrationWord } from './migration';
import { eventPosition, isAfter, isNotNewer } from './position';
import type { Decision } from './rounds';
import type { LifecycleEventIn } from './validate';

export interface FollowContext {
  readonly logger: Logger;
  readonly metrics: ConsumerMetrics;
  readonly notifier: Notifier;
  /** Clock in epoch microseconds. */
  readonly now: () => number;
  /** consumer.migrationWindowMs */
  readonly windowMs: number;
}

export class MigrationFollower {
  readonly #context: FollowContext;

  constructor(context: FollowContext) {
    this.#context = context;
  }

  /**
   * Live migration (migration.ts): what this message says about one, on the row as it stands. A
   * decision when the message is migration evidence that ends here (recorded, or the row moved);
   * otherwise the row to continue Nova's sync on, with expired or void evidence dropped (a row
   * that keeps live evidence gets no stop or force_stop: the handler withholds them).
   */
  step(event: LifecycleEventIn, row: InstanceRow): Decision | { readonly row: InstanceRow } {
    const now = this.#context.now();
    const evidence = liveEvidence(row.migration, row.host, now, this.#context.windowMs);
    const base = evidence === row.migration ? row : { ...row, migration: evidence };
    if (row.host === null || row.vm_state === 'deleted') return { row: base };
    const word = migrationWord(event);
    if (event.host !== row.host) {
      // A destination's word: recorded; the row moves only on one saying the guest runs (agreed).
      if (word === 'arrived' || word === 'arriving') {
        const position = eventPosition(event);
        // The same destination's older word adds nothing (Nova's host check then skips it).
        if (evidence?.dest === event.host && !isAfter(position, evidence.dest_position)) return { row: base };
        const next: MigrationEvidence = {
          source: row.host,
          source_state: evidence?.source_state ?? null,
          dest: event.host,
          // Only a word saying the guest runs there gives the move its power_state (agreed).
          dest_power: word === 'arrived' ? event.powerState : null,
          dest_position: position,
          updated_us: now,
        };
        return agreed(next)
          ? this.#move(base, next, event.transition)
          : this.#record(
              base,
              next,
              event,
              word === 'arrived'
                ? 'a host reports the guest arrived by live migration; waiting for its host to report it left'
                : 'a host reports the guest arriving by live migration, not running yet; waiting for it to run there',
            );
      }
      // The recorded destination stopped it (STOPPED FAILED of a failed migration): its word is void.
      if (evidence?.dest === event.host && event.transition === 'stopped') {
        const next =
          evidence.source_state === null
            ? null
            : { ...evidence, dest: null, dest_power: null, dest_position: null };
        return { outcome: 'skipped_host', next: { ...base, migration: next } };
      }
      return { row: base };
    }
    if (isNotNewer(event, row)) return { row: base };
    if (word === 'leaving' || word === 'left') {
      const next: MigrationEvidence = {
        source: row.host,
        source_state: word === 'left' || evidence?.source_state === 'left' ? 'left' : 'leaving',
        dest: evidence?.dest ?? null,
        dest_power: evidence?.dest_power ?? null,
        dest_position: evidence?.dest_position ?? null,
        updated_us: now,
      };
      const positioned: InstanceRow = {
        ...base,
        event_at_us: event.occurredUs,
        event_boot_id: event.bootId,
        event_seq: event.seq,
      };
      return agreed(next)
        ? this.#move(positioned, next, event.transition)
        : this.#record(
            positioned,
            next,
            event,
            `the instance's host reports a live migration away (${word}); waiting for the destination`,
          );
    }
    // Its host runs the guest again (a failed migration resumes it, or it was started anew).
    if (evidence && (event.transition === 'started' || event.transition === 'resumed'))
      return { row: { ...base, migration: null } };
    // Its host said the guest is migrating away: as Nova skips an instance whose task_state is
    // 'migrating', what that host reports meanwhile (a snapshot listing the persistent domain shut
    // off) is not written — the destination's word, not the source's leftovers, comes next.
    if (evidence?.source_state != null) {
      const { logger } = this.#context;
      return {
        outcome: 'migrating',
        ...(base === row ? {} : { next: base }),
        effects: () => {
          logger.info(
            { uuid: row.uuid, host: row.host, transition: event.transition, power_state: event.powerState },
            'During sync_power_state the instance is migrating away from its host. Skip.',
          );
          return undefined;
        },
      };
    }
    return { row: base };
  }

  /** One host's word about a migration, recorded (no power_state write, no notification). */
  #record(row: InstanceRow, evidence: MigrationEvidence, event: LifecycleEventIn, message: string): Decision {
    const { logger } = this.#context;
    return {
      outcome: 'migrating',
      next: { ...row, migration: evidence },
      effects: () => {
        logger.info(
          {
            uuid: row.uuid,
            host: row.host,
            from: event.host,
            transition: event.transition,
            dest: evidence.dest,
            source_state: evidence.source_state,
          },
          message,
        );
        return undefined;
      },
    };
  }

  /**
   * Both hosts agreed: the row follows the guest (Nova's post_live_migration_at_destination moves
   * instance.host): host, the destination's power_state and event position, one instance.update. A
   * stop still out to the source is superseded; its late result finds the command no longer pending.
   */
  #move(row: InstanceRow, evidence: MigrationEvidence & { readonly dest: string }, via: string): Decision {
    const { logger, metrics, notifier } = this.#context;
    const nowIso = isoMicros(this.#context.now());
    const position = evidence.dest_position;
    const stopping = row.task_state === 'powering-off';
    const next: InstanceRow = {
      ...row,
      host: evidence.dest,
      power_state: evidence.dest_power ?? row.power_state,
      event_at_us: position?.at_us ?? null,
      event_boot_id: position?.boot_id ?? null,
      event_seq: position?.seq ?? null,
      migration: null,
      ...(stopping
        ? {
            task_state: null,
            pending_command_id: null,
            pending_command_host: null,
            pending_action: null,
            command_deadline_ms: null,
            last_error: `${row.pending_action ?? 'stop'} superseded: the guest live-migrated to ${evidence.dest}`,
          }
        : {}),
      last_action: 'migration_followed',
      last_action_at: nowIso,
      updated_at: nowIso,
    };
    return {
      outcome: 'migrated',
      next,
      effects: () => {
        metrics.syncActions.inc({ action: 'migration_followed' });
        logger.info(
          { uuid: row.uuid, src: row.host, dst: evidence.dest, power_state: next.power_state, via },
          'live migration agreed by both hosts; the instance follows the guest',
        );
        return notifier.instanceUpdates(row, [next]);
      },
    };
  }

  /**
   * A snapshot (sync_end) of the row's host without the guest: the source's word that it left. The
   * row moved when a destination's word is in; otherwise the row with that word recorded.
   */
  sourceLeft(row: InstanceRow): Decision | { readonly row: InstanceRow } {
    if (row.host === null) return { row };
    const now = this.#context.now();
    const evidence = liveEvidence(row.migration, row.host, now, this.#context.windowMs);
    const next: MigrationEvidence = {
      source: row.host,
      source_state: 'left',
      dest: evidence?.dest ?? null,
      dest_power: evidence?.dest_power ?? null,
      dest_position: evidence?.dest_position ?? null,
      updated_us: now,
    };
    return agreed(next) ? this.#move(row, next, 'sync_end') : { row: { ...row, migration: next } };
  }
}

/**
 * How a stop command ends (Nova's stop_instance on the compute host, and its reverts_task_state):
 * the bridge's result, or the consumer's timeout when none came. Both only touch a row that is still
 * in that very command (task_state powering-off, the same pending command id): anything that moved
 * the row on since — an operator, a newer command — took it out of the stop.
 */
import { isoMicros } from '../util/time';
import type { Notifier } from '../notify/notifier';
import type { InstanceRow } from '../store/types';
import type { Logger } from '../util/log';
import type { ConsumerMetrics } from './metrics';
import type { Task } from './rounds';
import type { CommandResultIn } from './validate';

/** What the stop-result decisions need from the handler. */
export interface StopContext {
  readonly logger: Logger;
  readonly metrics: ConsumerMetrics;
  readonly notifier: Notifier;
  readonly stopTimeoutMs: number;
  /** Clock in epoch microseconds. */
  readonly now: () => number;
}

const SUCCESS_OUTCOMES = new Set(['stopped', 'already_stopped']);

/**
 * A stop command's outcome from the bridge (Nova's stop_instance on the compute host): stopped or
 * already_stopped → vm_state stopped, task cleared, power_state from the bridge's live reading,
 * and the bridge's finished_at becomes the row's event position (when newer); otherwise (failed,
 * refused, expired, skipped, not_found) only the task is cleared and the reason recorded (Nova's
 * reverts_task_state): vm_state and power_state stay, whatever power_state the result carries.
 * not_found — the commanded host has no such domain — never marks the instance stopped: the guest
 * may run elsewhere. A result from another host than the one commanded is refused (dead-lettered).
 */
export function resultTask(context: StopContext, result: CommandResultIn): Task {
  const { logger, metrics } = context;
  return {
    uuid: result.instanceUuid,
    decide: (row) => {
      // Only a row still in this stop takes its result: an operator (or anything else) that moved
      // task_state on took the row out of it, and the result must not mark it stopped.
      if (!row || row.pending_command_id !== result.commandId || row.task_state !== 'powering-off')
        return {
          outcome: 'late_result',
          effects: () => {
            logger.info(
              {
                uuid: result.instanceUuid,
                command: result.commandId,
                outcome: result.outcome,
                task_state: row?.task_state,
              },
              'result for a stop command that is no longer pending (timed out, superseded or task_state changed); ignored',
            );
            return undefined;
          },
        };
      // Only the host the command was sent to answers it (the row's host may have moved since).
      const commanded = row.pending_command_host ?? row.host;
      if (result.host !== commanded)
        return {
          outcome: 'late_result',
          reject: new Error(
            `result host ${result.host} is not the host command ${result.commandId} was sent to (${commanded ?? 'none'})`,
          ),
        };
      const nowIso = isoMicros(context.now());
      const success = SUCCESS_OUTCOMES.has(result.outcome);
      // A successful stop is a point in the domain's history: lifecycle events sampled before it
      // finished (on another queue, so possibly processed after this result) are out of order.
      const advance =
        success &&
        result.finishedUs !== null &&
        (row.event_at_us === null || result.finishedUs > row.event_at_us);
      const next: InstanceRow = {
        ...row,
        ...(advance ? { event_at_us: result.finishedUs, event_boot_id: null, event_seq: null } : {}),
        vm_state: success ? 'stopped' : row.vm_state,
        task_state: null,
        // Only a stop that succeeded reports the guest's state; any other outcome says nothing
        // about it (it may not have read libvirt at all): Nova's reverts_task_state clears the task.
        power_state: success && result.powerState !== null ? result.powerState : row.power_state,
        pending_command_id: null,
        pending_command_host: null,
        pending_action: null,
        command_deadline_ms: null,
        last_action: `${result.action}_${success ? 'completed' : result.outcome}`,
        last_action_at: nowIso,
        last_error: success ? null : `${result.outcome}: ${result.error ?? 'no detail'}`,
        updated_at: nowIso,
      };
      return {
        outcome: 'command_result',
        next,
        effects: () => {
          metrics.syncActions.inc({
            action: success
              ? 'stop_completed'
              : result.outcome === 'not_found'
                ? 'stop_not_found'
                : 'stop_failed',
          });
          const logContext = {
            uuid: row.uuid,
            command: result.commandId,
            action: result.action,
            outcome: result.outcome,
            method: result.method,
            power_state: next.power_state,
          };
          if (success) logger.info(logContext, 'stop command completed; instance stopped');
          else if (result.outcome === 'not_found')
            logger.warn(
              { ...logContext, host: result.host, error: result.error },
              'the commanded host has no such domain (it may run elsewhere); not marked stopped, task cleared',
            );
          else
            logger.warn(
              { ...logContext, error: result.error },
              'stop command did not stop the instance; task cleared',
            );
          return context.notifier.instanceUpdates(row, [next]);
        },
      };
    },
  };
}

/**
 * What the stop-timeout sweep did with a command past its deadline: `timed_out` — cleared, the
 * timeout recorded; `no_longer_pending` — the row left that command before the sweep reached it (its
 * result came, an operator or a newer command moved it on), so there was nothing to clear.
 */
export type ExpiryOutcome = 'timed_out' | 'no_longer_pending';

/**
 * A stop command that passed its deadline without a result (the row listed it when the sweep
 * started): the task is cleared and the timeout recorded (Nova's reverts_task_state).
 */
export function expiryTask(context: StopContext, candidate: InstanceRow): Task<ExpiryOutcome> {
  const { logger, metrics, stopTimeoutMs } = context;
  return {
    uuid: candidate.uuid,
    decide: (row) => {
      if (!row || row.pending_command_id !== candidate.pending_command_id)
        return { outcome: 'no_longer_pending' };
      const nowIso = isoMicros(context.now());
      const next: InstanceRow = {
        ...row,
        task_state: row.task_state === 'powering-off' ? null : row.task_state,
        pending_command_id: null,
        pending_command_host: null,
        pending_action: null,
        command_deadline_ms: null,
        last_action: `${row.pending_action ?? 'stop'}_timeout`,
        last_action_at: nowIso,
        last_error: `timeout: no result for ${row.pending_action ?? 'stop'} command ${row.pending_command_id} within ${stopTimeoutMs} ms`,
        updated_at: nowIso,
      };
      return {
        outcome: 'timed_out',
        next,
        effects: () => {
          metrics.syncActions.inc({ action: 'stop_timeout' });
          logger.warn(
            { uuid: row.uuid, command: row.pending_command_id, timeoutMs: stopTimeoutMs },
            'stop command timed out; task cleared',
          );
          return context.notifier.instanceUpdates(row, [next]);
        },
      };
    },
  };
}

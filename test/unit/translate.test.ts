import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  translate,
  jobTypeFromQuery,
  resolveNoneJob,
  transitionForJob,
  NOVA_TRANSITION,
  TRANSITIONS,
} from '../../src/libvirt/translate';
import { JobType } from '../../src/libvirt/constants';
import { powerStateOf } from '../../src/libvirt/power-state';

const LIFECYCLE = 0;
const REBOOT = 1;

// Every (event, detail) pair libvirt defines today, with the transition virtbus publishes
// (nova-lifecycle.md §1b/§2b). SUSPENDED_MIGRATED needs the job check; covered separately.
const TABLE: Array<[number, number, string, string, string]> = [
  [0, 0, 'DEFINED', 'ADDED', 'defined'],
  [0, 1, 'DEFINED', 'UPDATED', 'defined'],
  [0, 2, 'DEFINED', 'RENAMED', 'defined'],
  [0, 3, 'DEFINED', 'FROM_SNAPSHOT', 'defined'],
  [1, 0, 'UNDEFINED', 'REMOVED', 'undefined'],
  [1, 1, 'UNDEFINED', 'RENAMED', 'undefined'],
  [2, 0, 'STARTED', 'BOOTED', 'started'],
  [2, 1, 'STARTED', 'MIGRATED', 'started'],
  [2, 2, 'STARTED', 'RESTORED', 'started'],
  [2, 3, 'STARTED', 'FROM_SNAPSHOT', 'started'],
  [2, 4, 'STARTED', 'WAKEUP', 'started'],
  [2, 5, 'STARTED', 'RECREATED', 'started'],
  [3, 0, 'SUSPENDED', 'PAUSED', 'paused'],
  [3, 2, 'SUSPENDED', 'IOERROR', 'paused'],
  [3, 3, 'SUSPENDED', 'WATCHDOG', 'paused'],
  [3, 4, 'SUSPENDED', 'RESTORED', 'paused'],
  [3, 5, 'SUSPENDED', 'FROM_SNAPSHOT', 'paused'],
  [3, 6, 'SUSPENDED', 'API_ERROR', 'paused'],
  [3, 7, 'SUSPENDED', 'POSTCOPY', 'postcopy_started'],
  [3, 8, 'SUSPENDED', 'POSTCOPY_FAILED', 'paused'],
  [3, 9, 'SUSPENDED', 'GUEST_SHUTDOWN', 'paused'],
  [4, 0, 'RESUMED', 'UNPAUSED', 'resumed'],
  [4, 1, 'RESUMED', 'MIGRATED', 'resumed'],
  [4, 2, 'RESUMED', 'FROM_SNAPSHOT', 'resumed'],
  [4, 3, 'RESUMED', 'POSTCOPY', 'resumed'],
  [4, 4, 'RESUMED', 'POSTCOPY_FAILED', 'resumed'],
  [5, 0, 'STOPPED', 'SHUTDOWN', 'stopped'],
  [5, 1, 'STOPPED', 'DESTROYED', 'stopped'],
  [5, 2, 'STOPPED', 'CRASHED', 'stopped'],
  [5, 3, 'STOPPED', 'MIGRATED', 'stopped'],
  [5, 4, 'STOPPED', 'SAVED', 'stopped'],
  [5, 5, 'STOPPED', 'FAILED', 'stopped'],
  [5, 6, 'STOPPED', 'FROM_SNAPSHOT', 'stopped'],
  [5, 7, 'STOPPED', 'RECREATED', 'stopped'],
  [6, 0, 'SHUTDOWN', 'FINISHED', 'shutdown'],
  [6, 1, 'SHUTDOWN', 'GUEST', 'shutdown'],
  [6, 2, 'SHUTDOWN', 'HOST', 'shutdown'],
  [7, 0, 'PMSUSPENDED', 'MEMORY', 'pmsuspended'],
  [7, 1, 'PMSUSPENDED', 'DISK', 'pmsuspended'],
  [8, 0, 'CRASHED', 'PANICKED', 'crashed'],
  [8, 1, 'CRASHED', 'CRASHLOADED', 'crashed'],
];

describe('translate (libvirt event → transition)', () => {
  for (const [type, detail, event, detailName, transition] of TABLE) {
    it(`${event}/${detailName} (${type}/${detail}) → ${transition}`, () => {
      const result = translate(LIFECYCLE, type, detail);
      assert.equal(result.kind, 'transition');
      assert.ok(result.kind === 'transition');
      assert.equal(result.transition, transition);
      assert.deepEqual(result.libvirt, { event, detail: detailName, event_code: type, detail_code: detail });
    });
  }

  it('SUSPENDED/MIGRATED asks for the job check', () => {
    const result = translate(LIFECYCLE, 3, 1);
    assert.equal(result.kind, 'needs-job-check');
    assert.deepEqual(result.libvirt, {
      event: 'SUSPENDED',
      detail: 'MIGRATED',
      event_code: 3,
      detail_code: 1,
    });
  });

  it('REBOOT → rebooted, with null detail', () => {
    const result = translate(REBOOT, -1, -1);
    assert.ok(result.kind === 'transition');
    assert.equal(result.transition, 'rebooted');
    assert.deepEqual(result.libvirt, { event: 'REBOOT', detail: null, event_code: -1, detail_code: null });
  });

  it('an unknown detail of a known event keeps the transition and carries the number', () => {
    const result = translate(LIFECYCLE, 5, 42);
    assert.ok(result.kind === 'transition');
    assert.equal(result.transition, 'stopped');
    assert.equal(result.libvirt.detail, '42');
    assert.equal(result.libvirt.detail_code, 42);
  });

  it('an unknown event type or event id is reported as unknown with its numbers, never thrown', () => {
    const byType = translate(LIFECYCLE, 99, 3);
    assert.equal(byType.kind, 'unknown');
    assert.equal(byType.libvirt.event, '99');
    assert.equal(byType.libvirt.detail, '3');
    assert.equal(translate(17, 0, 0).kind, 'unknown');
    assert.equal(translate(LIFECYCLE, -5, -7).kind, 'unknown');
  });

  it('Nova names only its six transitions', () => {
    const nova = TRANSITIONS.filter((t) => NOVA_TRANSITION[t] !== null);
    assert.deepEqual(nova.sort(), [
      'migration_completed',
      'paused',
      'postcopy_started',
      'resumed',
      'started',
      'stopped',
    ]);
    assert.equal(NOVA_TRANSITION.postcopy_started, 'Postcopy started');
    assert.equal(NOVA_TRANSITION.migration_completed, 'Migration completed');
  });
});

describe('SUSPENDED_MIGRATED job check (Nova find_job_type)', () => {
  it('a completed job is migration_completed; anything else paused', () => {
    assert.equal(jobTypeFromQuery({ jobType: JobType.COMPLETED }), JobType.COMPLETED);
    assert.equal(transitionForJob(JobType.COMPLETED), 'migration_completed');
    for (const type of [JobType.BOUNDED, JobType.UNBOUNDED, JobType.FAILED, JobType.CANCELLED]) {
      assert.equal(jobTypeFromQuery({ jobType: type }), type);
      assert.equal(transitionForJob(type), 'paused');
    }
  });

  it('a vanished transient guest (NO_DOMAIN, OPERATION_INVALID) completed its migration', () => {
    assert.equal(jobTypeFromQuery({ error: 'no-domain' }), JobType.COMPLETED);
    assert.equal(jobTypeFromQuery({ error: 'operation-invalid' }), JobType.COMPLETED);
  });

  it('"no RAM info" is NONE; any other error is re-raised by get_job_info: no job type (Nova queues nothing)', () => {
    assert.equal(jobTypeFromQuery({ error: 'no-ram-info' }), JobType.NONE);
    assert.equal(jobTypeFromQuery({ error: 'other' }), null);
  });

  it('a NONE job: still active → failed (paused); gone → completed', () => {
    assert.equal(transitionForJob(resolveNoneJob(true)), 'paused');
    assert.equal(transitionForJob(resolveNoneJob(false)), 'migration_completed');
    assert.equal(transitionForJob(resolveNoneJob('no-domain')), 'migration_completed');
    assert.equal(transitionForJob(resolveNoneJob('error')), 'paused');
  });
});

describe('power state (LIBVIRT_POWER_STATE)', () => {
  it('maps every virDomainState as Nova does', () => {
    assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 7].map(powerStateOf), [0, 1, 1, 3, 4, 4, 6, 7]);
  });
  it('a missing domain is NOSTATE, and so is a state newer than us', () => {
    assert.equal(powerStateOf(null), 0);
    assert.equal(powerStateOf(42), 0);
  });
});

/**
 * Nova's decision table, one case per row of nova-lifecycle.md §3c (4a–4k) and per guard of §3b
 * (staleness, not found, host mismatch, task in progress, deleted/soft-deleted), against a real
 * RabbitMQ vhost and both stores (a SQLite file, a PostgreSQL database). Each case asserts the
 * message outcome, the final row, the stop command published (or not) and the notifications.
 * Stop commands are answered by a fake bridge here; the real bridge closes the loop in
 * loop-e2e.test.ts.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it, before } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { MessageOutcome } from '../../src/consumer/metrics';
import type { PowerStateCode } from '../../src/libvirt/constants';
import type { Transition } from '../../src/libvirt/translate';
import type { InstanceInput } from '../../src/store/types';
import { testBroker, testPostgresUrl } from '../support/services';
import {
  Bus,
  EventFactory,
  instance,
  row,
  startConsumer,
  tempSqliteUrl,
  waitUntil,
  type Answer,
  type RunningConsumer,
} from '../support/consumer';

const HOST = 'cmp-01.example.org';
const OTHER = 'cmp-02.example.org';

/** [old_state, state, old_task_state, new_task_state, power_state] of one instance.update. */
type Note = [string, string, string | null, string | null, string];

interface Case {
  readonly name: string;
  /** The row before; omitted: the instance is unknown. */
  readonly row?: Partial<InstanceInput>;
  readonly transition: Transition;
  /** The live power_state the bridge sampled. */
  readonly live: PowerStateCode | null;
  readonly host?: string;
  readonly outcome: MessageOutcome;
  readonly command?: {
    readonly action: 'stop' | 'force_stop';
    readonly onlyIf?: number[];
    readonly answer: Answer;
  };
  readonly final?: {
    readonly vm_state: string;
    readonly task_state: string | null;
    readonly power_state: number;
    readonly last_action?: string | null;
    readonly last_error?: RegExp;
  };
  readonly notes: readonly Note[];
}

const answered = (outcome: 'stopped' | 'already_stopped', power: number): Answer => ({
  outcome,
  power_state: power,
});

const CASES: readonly Case[] = [
  // §3b step 4: the staleness guard (live state ≠ the transition's state) drops the event.
  {
    name: '3b guard: STOPPED but running again',
    row: { vm_state: 'active', power_state: 1 },
    transition: 'stopped',
    live: 1,
    outcome: 'stale',
    final: { vm_state: 'active', task_state: null, power_state: 1 },
    notes: [],
  },
  {
    name: '3b guard: STARTED but domain gone (NOSTATE)',
    row: { vm_state: 'stopped', power_state: 4 },
    transition: 'started',
    live: 0,
    outcome: 'stale',
    final: { vm_state: 'stopped', task_state: null, power_state: 4 },
    notes: [],
  },
  {
    name: '3b guard: live state unreadable (null)',
    row: { vm_state: 'active', power_state: 1 },
    transition: 'paused',
    live: null,
    outcome: 'stale',
    final: { vm_state: 'active', task_state: null, power_state: 1 },
    notes: [],
  },
  // §3a/3b step 3: InstanceNotFound is acknowledged and counted.
  { name: 'not found: unknown instance', transition: 'stopped', live: 4, outcome: 'not_found', notes: [] },
  // §3c 1: another host owns the row (migration, evacuation): no write.
  {
    name: '3c 1 host mismatch',
    row: { host: OTHER, vm_state: 'active', power_state: 1 },
    transition: 'stopped',
    live: 4,
    outcome: 'skipped_host',
    final: { vm_state: 'active', task_state: null, power_state: 1 },
    notes: [],
  },
  // §3c 2: a task in progress: no write.
  {
    name: '3c 2 task in progress',
    row: { vm_state: 'active', task_state: 'rebooting', power_state: 1 },
    transition: 'stopped',
    live: 4,
    outcome: 'skipped_task',
    final: { vm_state: 'active', task_state: 'rebooting', power_state: 1 },
    notes: [],
  },
  // §3c 3 + 4a: power_state written, nothing else.
  {
    name: '4a building + RUNNING',
    row: { vm_state: 'building', power_state: 0, launched_at: null },
    transition: 'started',
    live: 1,
    outcome: 'synced',
    final: { vm_state: 'building', task_state: null, power_state: 1 },
    notes: [['building', 'building', null, null, 'running']],
  },
  {
    name: '4a suspended + SHUTDOWN',
    row: { vm_state: 'suspended', power_state: 7 },
    transition: 'stopped',
    live: 4,
    outcome: 'synced',
    final: { vm_state: 'suspended', task_state: null, power_state: 4 },
    notes: [['suspended', 'suspended', null, null, 'shutdown']],
  },
  {
    name: '4a error + SHUTDOWN (no stop)',
    row: { vm_state: 'error', power_state: 1 },
    transition: 'stopped',
    live: 4,
    outcome: 'synced',
    final: { vm_state: 'error', task_state: null, power_state: 4 },
    notes: [['error', 'error', null, null, 'shutdown']],
  },
  {
    name: '4a rescued + PAUSED',
    row: { vm_state: 'rescued', power_state: 1 },
    transition: 'paused',
    live: 3,
    outcome: 'synced',
    final: { vm_state: 'rescued', task_state: null, power_state: 3 },
    notes: [['rescued', 'rescued', null, null, 'paused']],
  },
  // 4b: active + SHUTDOWN/CRASHED → stop (with the "still off?" re-check sent to the bridge).
  {
    name: '4b active + SHUTDOWN → stop → stopped',
    row: { vm_state: 'active', power_state: 1 },
    transition: 'stopped',
    live: 4,
    outcome: 'synced',
    command: { action: 'stop', onlyIf: [4, 6], answer: answered('already_stopped', 4) },
    final: { vm_state: 'stopped', task_state: null, power_state: 4, last_action: 'stop_completed' },
    notes: [
      ['active', 'active', null, null, 'shutdown'],
      ['active', 'active', null, 'powering-off', 'shutdown'],
      ['active', 'stopped', 'powering-off', null, 'shutdown'],
    ],
  },
  {
    name: '4b active + CRASHED (sync) → stop',
    row: { vm_state: 'active', power_state: 1 },
    transition: 'sync',
    live: 6,
    outcome: 'synced',
    command: { action: 'stop', onlyIf: [4, 6], answer: answered('already_stopped', 6) },
    final: { vm_state: 'stopped', task_state: null, power_state: 6 },
    notes: [
      ['active', 'active', null, null, 'crashed'],
      ['active', 'active', null, 'powering-off', 'crashed'],
      ['active', 'stopped', 'powering-off', null, 'crashed'],
    ],
  },
  {
    name: '4b never launched: the stop API refuses (InstanceInvalidState)',
    row: { vm_state: 'active', power_state: 1, launched_at: null },
    transition: 'stopped',
    live: 4,
    outcome: 'synced',
    final: { vm_state: 'active', task_state: null, power_state: 4 },
    notes: [['active', 'active', null, null, 'shutdown']],
  },
  {
    name: '4b re-check: the guest came back, bridge skips',
    row: { vm_state: 'active', power_state: 1 },
    transition: 'stopped',
    live: 4,
    outcome: 'synced',
    command: {
      action: 'stop',
      onlyIf: [4, 6],
      answer: { outcome: 'skipped', power_state: 1, error: 'live state running' },
    },
    // Only the task is cleared (Nova's reverts_task_state): a result other than stopped says
    // nothing the row may take; the running guest's next event or snapshot records it.
    final: {
      vm_state: 'active',
      task_state: null,
      power_state: 4,
      last_action: 'stop_skipped',
      last_error: /^skipped: live state running/,
    },
    notes: [
      ['active', 'active', null, null, 'shutdown'],
      ['active', 'active', null, 'powering-off', 'shutdown'],
      ['active', 'active', 'powering-off', null, 'shutdown'],
    ],
  },
  // 4c: active + SUSPENDED (periodic sync; the PMSUSPENDED event itself is ignored) → stop.
  {
    name: '4c active + SUSPENDED (sync) → stop',
    row: { vm_state: 'active', power_state: 1 },
    transition: 'sync',
    live: 7,
    outcome: 'synced',
    command: { action: 'stop', answer: answered('stopped', 4) },
    final: { vm_state: 'stopped', task_state: null, power_state: 4 },
    notes: [
      ['active', 'active', null, null, 'suspended'],
      ['active', 'active', null, 'powering-off', 'suspended'],
      ['active', 'stopped', 'powering-off', null, 'shutdown'],
    ],
  },
  // 4d: active + PAUSED: warn only.
  {
    name: '4d active + PAUSED: ignore',
    row: { vm_state: 'active', power_state: 1 },
    transition: 'paused',
    live: 3,
    outcome: 'synced',
    final: { vm_state: 'active', task_state: null, power_state: 3 },
    notes: [['active', 'active', null, null, 'paused']],
  },
  // A live migration's source (Nova has task_state 'migrating' then and skips the sync): the
  // row's host's word about the migration is recorded and nothing else written until the
  // destination's word (consumer.followMigrations, docs/consumer.md "Live migration").
  {
    name: 'migration word via migration_completed',
    row: { vm_state: 'active', power_state: 1 },
    transition: 'migration_completed',
    live: 3,
    outcome: 'migrating',
    final: { vm_state: 'active', task_state: null, power_state: 1 },
    notes: [],
  },
  // A live migration's source (Nova has task_state 'migrating' then and skips the sync): the
  // row's host's word about the migration is recorded and nothing else written until the
  // destination's word (consumer.followMigrations, docs/consumer.md "Live migration").
  {
    name: 'migration word via postcopy_started',
    row: { vm_state: 'active', power_state: 1 },
    transition: 'postcopy_started',
    live: 3,
    outcome: 'migrating',
    final: { vm_state: 'active', task_state: null, power_state: 1 },
    notes: [],
  },
  // 4e: active + NOSTATE: warn only.
  {
    name: '4e active + NOSTATE (sync): ignore',
    row: { vm_state: 'active', power_state: 1 },
    transition: 'sync',
    live: 0,
    outcome: 'synced',
    final: { vm_state: 'active', task_state: null, power_state: 0 },
    notes: [['active', 'active', null, null, 'pending']],
  },
  // 4f: active + RUNNING: nothing (a no-change sync writes no state and notifies nothing).
  {
    name: '4f active + RUNNING after pause',
    row: { vm_state: 'active', power_state: 3 },
    transition: 'resumed',
    live: 1,
    outcome: 'synced',
    final: { vm_state: 'active', task_state: null, power_state: 1 },
    notes: [['active', 'active', null, null, 'running']],
  },
  {
    name: '4f active + RUNNING, unchanged',
    row: { vm_state: 'active', power_state: 1 },
    transition: 'started',
    live: 1,
    outcome: 'synced',
    final: { vm_state: 'active', task_state: null, power_state: 1 },
    notes: [],
  },
  // 4g: stopped + RUNNING/PAUSED/SUSPENDED → force_stop; stopped + off → nothing.
  {
    name: '4g stopped + RUNNING → force_stop',
    row: { vm_state: 'stopped', power_state: 4 },
    transition: 'started',
    live: 1,
    outcome: 'synced',
    command: { action: 'force_stop', answer: answered('stopped', 4) },
    final: { vm_state: 'stopped', task_state: null, power_state: 4, last_action: 'force_stop_completed' },
    notes: [
      ['stopped', 'stopped', null, null, 'running'],
      ['stopped', 'stopped', null, 'powering-off', 'running'],
      ['stopped', 'stopped', 'powering-off', null, 'shutdown'],
    ],
  },
  {
    name: '4g stopped + PAUSED → force_stop',
    row: { vm_state: 'stopped', power_state: 4 },
    transition: 'paused',
    live: 3,
    outcome: 'synced',
    command: { action: 'force_stop', answer: answered('stopped', 4) },
    final: { vm_state: 'stopped', task_state: null, power_state: 4 },
    notes: [
      ['stopped', 'stopped', null, null, 'paused'],
      ['stopped', 'stopped', null, 'powering-off', 'paused'],
      ['stopped', 'stopped', 'powering-off', null, 'shutdown'],
    ],
  },
  {
    name: '4g stopped + SHUTDOWN: nothing',
    row: { vm_state: 'stopped', power_state: 1 },
    transition: 'stopped',
    live: 4,
    outcome: 'synced',
    final: { vm_state: 'stopped', task_state: null, power_state: 4 },
    notes: [['stopped', 'stopped', null, null, 'shutdown']],
  },
  {
    name: '4g stopped + NOSTATE (sync): nothing',
    row: { vm_state: 'stopped', power_state: 4 },
    transition: 'sync',
    live: 0,
    outcome: 'synced',
    final: { vm_state: 'stopped', task_state: null, power_state: 0 },
    notes: [['stopped', 'stopped', null, null, 'pending']],
  },
  // 4h: paused + SHUTDOWN/CRASHED → force_stop; 4i paused + other → nothing.
  {
    name: '4h paused + SHUTDOWN → force_stop',
    row: { vm_state: 'paused', power_state: 3 },
    transition: 'stopped',
    live: 4,
    outcome: 'synced',
    command: { action: 'force_stop', answer: answered('already_stopped', 4) },
    final: { vm_state: 'stopped', task_state: null, power_state: 4 },
    notes: [
      ['paused', 'paused', null, null, 'shutdown'],
      ['paused', 'paused', null, 'powering-off', 'shutdown'],
      ['paused', 'stopped', 'powering-off', null, 'shutdown'],
    ],
  },
  {
    name: '4i paused + RUNNING: nothing',
    row: { vm_state: 'paused', power_state: 3 },
    transition: 'resumed',
    live: 1,
    outcome: 'synced',
    final: { vm_state: 'paused', task_state: null, power_state: 1 },
    notes: [['paused', 'paused', null, null, 'running']],
  },
  // 4j: deleted rows are found by the event path (read_deleted='yes'): warn only.
  {
    name: '4j deleted + RUNNING: warn',
    row: { vm_state: 'deleted', power_state: 4 },
    transition: 'started',
    live: 1,
    outcome: 'synced',
    final: { vm_state: 'deleted', task_state: null, power_state: 1 },
    notes: [['deleted', 'deleted', null, null, 'running']],
  },
  {
    name: '4j soft-delete + SHUTDOWN: nothing',
    row: { vm_state: 'soft-delete', power_state: 1 },
    transition: 'stopped',
    live: 4,
    outcome: 'synced',
    final: { vm_state: 'soft-delete', task_state: null, power_state: 4 },
    notes: [['soft-delete', 'soft-delete', null, null, 'shutdown']],
  },
  {
    name: '4j soft-delete + PAUSED: warn',
    row: { vm_state: 'soft-delete', power_state: 1 },
    transition: 'paused',
    live: 3,
    outcome: 'synced',
    final: { vm_state: 'soft-delete', task_state: null, power_state: 3 },
    notes: [['soft-delete', 'soft-delete', null, null, 'paused']],
  },
  // The periodic path lists the host's non-deleted rows only.
  {
    name: 'deleted row in a sync: not visited',
    row: { vm_state: 'deleted', power_state: 4 },
    transition: 'sync',
    live: 1,
    outcome: 'not_found',
    final: { vm_state: 'deleted', task_state: null, power_state: 4 },
    notes: [],
  },
  // 4k: shelved: no branch.
  {
    name: '4k shelved_offloaded + RUNNING: nothing',
    row: { vm_state: 'shelved_offloaded', power_state: 4 },
    transition: 'started',
    live: 1,
    outcome: 'synced',
    final: { vm_state: 'shelved_offloaded', task_state: null, power_state: 1 },
    notes: [['shelved_offloaded', 'shelved_offloaded', null, null, 'running']],
  },
  // Transitions Nova drops: acknowledged and counted, nothing else.
  {
    name: 'ignored: crashed',
    row: { vm_state: 'active', power_state: 1 },
    transition: 'crashed',
    live: 6,
    outcome: 'ignored',
    final: { vm_state: 'active', task_state: null, power_state: 1 },
    notes: [],
  },
  {
    name: 'ignored: pmsuspended',
    row: { vm_state: 'active', power_state: 1 },
    transition: 'pmsuspended',
    live: 7,
    outcome: 'ignored',
    final: { vm_state: 'active', task_state: null, power_state: 1 },
    notes: [],
  },
  {
    name: 'ignored: undefined',
    row: { vm_state: 'active', power_state: 1 },
    transition: 'undefined',
    live: 0,
    outcome: 'ignored',
    final: { vm_state: 'active', task_state: null, power_state: 1 },
    notes: [],
  },
];

for (const backend of ['sqlite', 'postgres'] as const) {
  describe(`§3c decision table on ${backend}`, async () => {
    // Resources are set up in the suite body so their cleanup (after) belongs to the suite.
    const broker = await testBroker();
    const dbUrl = backend === 'sqlite' ? tempSqliteUrl() : await testPostgresUrl();
    const consumer: RunningConsumer = await startConsumer({
      amqpUrl: broker.url,
      dbUrl,
      env: { VIRTBUS_STOP_TIMEOUT_MS: '20000' },
    });
    const bus = await Bus.open(broker.url, consumer.config);
    const events = new EventFactory();
    const uuids = new Map<string, string>();
    const outcomes = new Map<string, string>();

    before(async () => {
      const answers = new Map<string, Answer>();
      for (const testCase of CASES) {
        const uuid = randomUUID();
        uuids.set(testCase.name, uuid);
        if (testCase.command) answers.set(uuid, testCase.command.answer);
      }
      bus.answerCommands((command) => answers.get(command.instance_uuid) ?? 'ignore');
      await consumer.store.upsert(
        CASES.filter((c) => c.row).map((c) => instance({ host: HOST, ...c.row, uuid: uuids.get(c.name) })),
      );
      const messages = CASES.map((c) =>
        events.event(c.host ?? HOST, uuids.get(c.name) as string, c.transition, c.live),
      );
      await bus.publishLifecycle(consumer.config.amqp.exchange, messages);
      const infos = await Promise.all(messages.map((m) => consumer.waitProcessed(m.event_id)));
      infos.forEach((info, index) => outcomes.set(CASES[index]?.name ?? '', info.outcome));
      // Let the fake bridge's results land, then give stray publishes a moment to show up.
      await waitUntil(
        'every stop command to complete',
        async () => {
          for (const c of CASES.filter((c) => c.command)) {
            if ((await row(consumer.store, uuids.get(c.name) as string)).task_state !== null) return false;
          }
          return true;
        },
        15000,
      );
      const expectedNotes = CASES.reduce((sum, c) => sum + c.notes.length, 0);
      await waitUntil('the notifications', () => bus.notifications.length >= expectedNotes, 10000);
      await sleep(300);
    });

    for (const testCase of CASES) {
      it(testCase.name, async () => {
        const uuid = uuids.get(testCase.name) as string;
        assert.equal(outcomes.get(testCase.name), testCase.outcome, 'message outcome');
        const commands = bus.commandsFor(uuid);
        if (testCase.command) {
          assert.equal(commands.length, 1, 'one stop command');
          const command = commands[0];
          assert.equal(command?.action, testCase.command.action);
          assert.equal(command?.host, HOST);
          assert.deepEqual(command?.only_if_power_states, testCase.command.onlyIf);
        } else {
          assert.equal(commands.length, 0, 'no stop command');
        }
        if (testCase.final) {
          const current = await row(consumer.store, uuid);
          assert.equal(current.vm_state, testCase.final.vm_state, 'vm_state');
          assert.equal(current.task_state, testCase.final.task_state, 'task_state');
          assert.equal(current.power_state, testCase.final.power_state, 'power_state');
          assert.equal(current.pending_command_id, null, 'no pending command');
          if (testCase.final.last_action !== undefined)
            assert.equal(current.last_action, testCase.final.last_action);
          if (testCase.final.last_error) assert.match(current.last_error ?? '', testCase.final.last_error);
        } else {
          assert.equal(await consumer.store.get(uuid), undefined);
        }
        const notes = bus.notificationsFor(uuid).map((n): Note => {
          const data = n.payload['nova_object.data'];
          const update = (data.state_update as { 'nova_object.data': Record<string, string | null> })[
            'nova_object.data'
          ];
          return [
            update.old_state as string,
            update.state as string,
            update.old_task_state ?? null,
            update.new_task_state ?? null,
            data.power_state as string,
          ];
        });
        assert.deepEqual(notes, testCase.notes, 'notifications (state_update and power_state)');
      });
    }
  });
}

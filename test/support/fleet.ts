/**
 * A fleet on one machine (issue 11, item 3): eight hypervisor hosts — a test-driver libvirtd and a
 * real `virtbus bridge` each, distinct host names, each bridge logged in as its own broker user —
 * publishing into a three-node RabbitMQ cluster, and three `virtbus consumer` processes sharing one
 * PostgreSQL database and one quorum queue. The workload mixes suspend/resume on every host with
 * guests destroyed behind the system's back (Nova: stop) and guests started while their rows say
 * stopped (Nova: force_stop), so commands flow back to the hosts while events flow in.
 *
 * Asserted: every row ends equal to its hypervisor's truth; each stop command goes to the right host
 * exactly once and is answered by that host; per instance, events cross the bus in the order driven
 * and the row ends on its last event although three consumers share the queue.
 *
 * Registered by cluster.test.ts on the cluster of the fault scenarios: forming a cluster costs tens
 * of seconds on a 2-core machine, and the suite's budget is a few minutes.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client } from 'pg';
import { metricValue, scrape, type RabbitCluster } from '../../src/sandbox';
import { testPostgresUrl } from './services';
import { ClusterRig } from './cluster-rig';

const HOSTS = Array.from({ length: 8 }, (_, i) => `cmp-${String(i + 1).padStart(2, '0')}.fleet.example`);

export function describeFleet(clusterOf: () => RabbitCluster): void {
  describe('a fleet: 8 hosts, a 3-node cluster, 3 consumers on one PostgreSQL database', () => {
    let rig: ClusterRig;

    before(async () => {
      const cluster = clusterOf();
      await cluster.waitFormed(90000);
      rig = new ClusterRig(cluster, {
        hosts: HOSTS,
        domains: 8,
        spare: 1,
        consumers: 3,
        dbUrl: await testPostgresUrl(),
        rate: 800,
      });
      await rig.start();
    });
    after(async () => {
      await rig?.dispose();
    });

    it('every row ends true, each stop reaches its host once, per-instance order holds', async () => {
      const started = Date.now();
      rig.startLoad();
      await sleep(3000);
      // Per host: the first loaded guest destroyed behind the system's back (row active → Nova's stop),
      // the spare guest started while its row says stopped (→ force_stop). Spread over the load.
      const destroyed = rig.hosts.map((h) => h.uuids[0]!);
      const rogue = rig.hosts.map((h) => h.spare[0]!);
      for (const [i, host] of rig.hosts.entries()) {
        await host.driver.destroy(destroyed[i]!);
        await host.driver.start(rogue[i]!);
        await sleep(500);
      }
      await sleep(6000);
      await rig.stopLoad();
      const loadSeconds = (Date.now() - started) / 1000;
      const convergeMs = await rig.converge(120000);

      const figures = await rig.figures('fleet: 8 hosts, 3 consumers, PostgreSQL', convergeMs);
      assert.equal(figures.lost, 0, 'every event driven was delivered');
      assert.equal(figures.wrongRows, 0, 'every row equals its hypervisor');
      assert.ok(figures.driven > 1000, `load was driven (${figures.driven} events in ${loadSeconds} s)`);

      // Stop commands: exactly one per target, to and answered by that target's host; none elsewhere.
      const hostOf = new Map(rig.hosts.flatMap((h) => [...h.uuids, ...h.spare].map((u) => [u, h.name])));
      await waitFor(
        () => new Set(rig.results.map((r) => r.command_id)).size >= destroyed.length + rogue.length,
      );
      const commandIds = new Map<string, Set<string>>();
      for (const command of rig.commands) {
        assert.equal(command.host, hostOf.get(command.instance_uuid), 'the command names the guest’s host');
        const ids = commandIds.get(command.instance_uuid) ?? new Set<string>();
        commandIds.set(command.instance_uuid, ids.add(command.command_id));
      }
      assert.deepEqual(
        [...commandIds.keys()].sort(),
        [...destroyed, ...rogue].sort(),
        'commands went to the destroyed and the rogue guests only',
      );
      for (const [uuid, ids] of commandIds) assert.equal(ids.size, 1, `one command for ${uuid}`);
      const actions = new Map(rig.commands.map((c) => [c.instance_uuid, c.action]));
      for (const uuid of destroyed) assert.equal(actions.get(uuid), 'stop', `Nova's stop for ${uuid}`);
      for (const uuid of rogue) assert.equal(actions.get(uuid), 'force_stop', `force_stop for ${uuid}`);
      const answered = new Map<string, Set<string>>();
      for (const result of rig.results) {
        assert.equal(result.host, hostOf.get(result.instance_uuid), 'answered by the guest’s own host');
        answered.set(result.command_id, (answered.get(result.command_id) ?? new Set()).add(result.outcome));
      }
      for (const uuid of rogue) {
        const [id] = commandIds.get(uuid)!;
        assert.deepEqual([...(answered.get(id!) ?? [])], ['stopped'], `the rogue ${uuid} was stopped once`);
      }
      // Each bridge executed exactly one force_stop: its own host's rogue guest, once.
      for (const host of rig.hosts) {
        const text = await scrape(await host.bridge.metricsUrl());
        const executed =
          metricValue(text, 'virtbus_commands_total', { action: 'force_stop', outcome: 'stopped' }) ?? 0;
        assert.equal(executed, 1, `${host.name} executed one force_stop`);
      }

      // Order: on the bus per instance, and in the rows (each ends on its last event, not an older one).
      assert.deepEqual(rig.orderViolations(), [], 'per instance, events crossed the bus in the order driven');
      // The event position each row was last written from (not in `instances list`): read it directly.
      const db = new Client({ connectionString: rig.dbUrl });
      await db.connect();
      const positions = await db
        .query<{ uuid: string; event_seq: string | null; event_boot_id: string | null }>(
          'SELECT uuid, event_seq, event_boot_id FROM instances',
        )
        .finally(() => db.end());
      const rows = new Map(positions.rows.map((row) => [row.uuid, row]));
      const last = rig.lastSeq();
      const behind = rig.hosts
        .flatMap((h) => h.uuids.slice(1))
        .filter(
          (uuid) =>
            Number(rows.get(uuid)?.event_seq) !== last.get(uuid)?.seq ||
            rows.get(uuid)?.event_boot_id !== last.get(uuid)?.bootId,
        )
        .map(
          (uuid) =>
            `${uuid}: row seq ${String(rows.get(uuid)?.event_seq)}, last on the bus ${last.get(uuid)?.seq}`,
        );
      assert.deepEqual(behind, [], 'every toggled row ends on its last event');

      const perConsumer: number[] = [];
      let outOfOrder = 0;
      for (const consumer of rig.consumers) {
        const text = await scrape(await consumer.metricsUrl());
        perConsumer.push(metricValue(text, 'virtbus_consumer_messages_total', { outcome: 'synced' }) ?? 0);
        outOfOrder += metricValue(text, 'virtbus_consumer_messages_total', { outcome: 'out_of_order' }) ?? 0;
      }
      console.log(
        `fleet figures: ${JSON.stringify({ ...figures, loadSeconds, commands: rig.commands.length, perConsumer, outOfOrder })}`,
      );
      assert.ok(
        perConsumer.filter((n) => n > 0).length >= 2,
        `the consumers shared the queue (${perConsumer.join(', ')})`,
      );
    });
  });
}

async function waitFor(predicate: () => boolean, timeoutMs = 30000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate() && Date.now() < deadline) await sleep(200);
}

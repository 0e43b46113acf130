/**
 * Broker-node faults under load on a three-node RabbitMQ cluster (issue 11, item 2): the bridge and
 * the consumer are given the three node URLs and log in as their own broker users; the project's
 * quorum queues have a member on every node. Each scenario drives suspend/resume through the test
 * driver, injects the fault, and counts events driven, delivered, duplicates and lost, the rows that
 * end wrong and the time to converge; lost and wrong rows must be 0. docs/reliability.md records
 * the printed figures. The fleet test (fleet.ts) runs after them on the same cluster.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { hostSegment } from '../../src/messages/lifecycle';
import { metricValue, scrape, startRabbitCluster, type RabbitCluster } from '../../src/sandbox';
import { onTeardown } from '../support/services';
import { ClusterRig, type ClusterFigures } from '../support/cluster-rig';
import { describeFleet } from '../support/fleet';

const HOST = 'cluster-host.example.org';
const BRIDGE_USER = hostSegment(HOST);

let cluster: RabbitCluster;
before(async () => {
  cluster = await startRabbitCluster({ name: 'virtbus-faults' });
  onTeardown(() => cluster.dispose());
});

describe('a three-node RabbitMQ cluster losing nodes under load', () => {
  let rig: ClusterRig;
  const figures: ClusterFigures[] = [];

  // One cluster and one rig for the four scenarios (forming a cluster costs tens of seconds); each
  // scenario ends converged with the cluster whole again, and its figures count from the previous.
  before(async () => {
    rig = new ClusterRig(cluster, { hosts: [HOST], domains: 24, rate: 600 });
    await rig.start();
    const replicas = await cluster.replicas(rig.vhost);
    assert.equal(replicas.get('virtbus.consumer'), 3, 'the consumer queue has a member on each node');
  });
  after(async () => {
    console.log(`cluster fault figures: ${JSON.stringify(figures)}`);
    await rig?.dispose();
  });

  /** A rig on the cluster under load; `fault` runs while the load goes on, then everything settles. */
  const scenario = async (
    name: string,
    fault: (rig: ClusterRig) => Promise<string | undefined>,
  ): Promise<ClusterFigures> => {
    rig.startLoad();
    await sleep(1500);
    const note = await fault(rig);
    await cluster.waitFormed(90000);
    await sleep(1000); // load on the healed cluster
    await rig.stopLoad();
    const convergeMs = await rig.converge(90000);
    const result = await rig.figures(name, convergeMs, note);
    figures.push(result);
    assert.equal(result.lost, 0, 'every event driven was delivered');
    assert.equal(result.wrongRows, 0, 'every row equals its domain');
    assert.deepEqual(rig.orderViolations(), [], 'per domain, events arrived in the order driven');
    const text = await scrape(await rig.hosts[0]!.bridge.metricsUrl());
    assert.equal(metricValue(text, 'virtbus_outbox_depth'), 0, 'the outbox drained');
    return result;
  };

  it('SIGKILL of the node the bridge publishes to: the bridge moves to another node, nothing lost', async () => {
    let victim = -1;
    await scenario('SIGKILL the node the bridge is connected to', async () => {
      [victim = -1] = await cluster.nodesOf(BRIDGE_USER);
      assert.ok(victim >= 0, 'the bridge is connected to a node of the cluster');
      await cluster.nodes[victim]!.kill();
      await sleep(4000);
      const moved = await cluster.nodesOf(BRIDGE_USER);
      assert.ok(
        moved.length > 0 && !moved.includes(victim),
        `the bridge reconnected elsewhere (${moved.join(', ')})`,
      );
      await cluster.nodes[victim]!.start(); // rejoins by itself
      return `node ${victim + 1} killed, restarted after 4 s`;
    });
  });

  it('SIGKILL of the node leading the consumer queue: a new leader is elected, nothing lost', async () => {
    await scenario('SIGKILL the consumer queue leader', async (rig) => {
      const leader = await cluster.leaderOf('virtbus.consumer', rig.vhost);
      assert.ok(leader !== undefined, 'the consumer queue has a leader');
      await cluster.nodes[leader]!.kill();
      let next: number | undefined;
      const deadline = Date.now() + 30000;
      while ((next === undefined || next === leader) && Date.now() < deadline) {
        await sleep(500);
        next = await cluster.leaderOf('virtbus.consumer', rig.vhost).catch(() => undefined);
      }
      assert.ok(next !== undefined && next !== leader, `another node leads the queue (${next})`);
      await sleep(2000);
      await cluster.nodes[leader]!.start();
      return `leader node ${leader + 1} killed; node ${next + 1} elected`;
    });
  });

  it('a node stopped for 30 s and started again: the cluster carries on, the node catches up', async () => {
    await scenario('stop a node for 30 s, then start it', async (rig) => {
      const [consumerNode = 0] = await cluster.nodesOf('virtbus-consumer');
      await cluster.nodes[consumerNode]!.stop();
      const during = rig.driven;
      await sleep(30000);
      assert.ok(rig.driven - during > 1000, 'the load went on during the 30 s');
      await cluster.nodes[consumerNode]!.start();
      return `node ${consumerNode + 1} (the consumer's) stopped 30 s`;
    });
  });

  it('two of three nodes stopped (quorum lost): publishing waits in the outbox, nothing dropped', async () => {
    await scenario('stop two of three nodes (quorum lost) for 10 s', async (rig) => {
      const [bridgeNode = 0] = await cluster.nodesOf(BRIDGE_USER);
      // Keep a node the bridge is not on: it must reconnect AND find no quorum there.
      const survivor = (bridgeNode + 1) % 3;
      const stopped = [0, 1, 2].filter((i) => i !== survivor);
      for (const i of stopped) await cluster.nodes[i]!.stop();
      await sleep(10000);
      const text = await scrape(await rig.hosts[0]!.bridge.metricsUrl());
      const waiting = metricValue(text, 'virtbus_outbox_depth') ?? 0;
      assert.ok(waiting > 100, `unconfirmed events wait in the outbox while the quorum is lost (${waiting})`);
      await Promise.all(stopped.map((i) => cluster.nodes[i]!.start()));
      return `nodes ${stopped.map((i) => i + 1).join(' and ')} stopped; ${waiting} events waiting in the outbox after 10 s`;
    });
  });
});

describeFleet(() => cluster);

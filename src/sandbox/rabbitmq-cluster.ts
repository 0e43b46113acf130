/**
 * A three-node RabbitMQ cluster on loopback for the fault suite, the fleet test, `virtbus demo
 * --cluster` and the benchmarks: three private nodes (startRabbitMQ: own AMQP and distribution ports,
 * own config, data and logs), all running as user `rabbitmq` and so sharing its one Erlang cookie,
 * joined with `rabbitmqctl join_cluster` as an operator does it.
 *
 * Why the cluster is formed before anything is declared: a quorum queue declared without
 * `x-quorum-initial-group-size` gets a member on every node of the cluster at declaration time, so
 * the project's quorum queues (the consumer's queue, the result, command and unroutable queues) are
 * replicated on all three without a special argument that the consumer's redeclaration would then
 * have to repeat. `replicas()` lets a caller check that.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { startRabbitMQ, type RabbitSandbox, type RabbitSandboxOptions } from './rabbitmq';

export interface RabbitCluster {
  readonly nodes: readonly RabbitSandbox[];
  /**
   * The comma-separated URLs of every node (what bridges, consumers and `tail` are given; they try
   * them round-robin), as `user`/`password` (default guest) in `vhost` (default: the default vhost).
   */
  urls(options?: { user?: string; password?: string; vhost?: string }): string;
  /** rabbitmqctl against the first node that is running. */
  ctl(...args: string[]): Promise<string>;
  /** Index of the node leading a quorum queue (undefined when it has no leader now). */
  leaderOf(queue: string, vhost: string): Promise<number | undefined>;
  /** How many nodes host a member of each quorum queue of the vhost. */
  replicas(vhost: string): Promise<Map<string, number>>;
  /** Indexes of the nodes `user`'s connections are attached to (by the server port). */
  nodesOf(user: string): Promise<number[]>;
  /** Waits until every node is running and sees all the others. */
  waitFormed(timeoutMs?: number): Promise<void>;
  dispose(): Promise<void>;
}

export interface RabbitClusterOptions extends Omit<RabbitSandboxOptions, 'tls'> {
  /** Nodes in the cluster; default 3. */
  readonly size?: number;
}

export async function startRabbitCluster(options: RabbitClusterOptions = {}): Promise<RabbitCluster> {
  const size = options.size ?? 3;
  const name = options.name ?? 'virtbus-cluster';
  const started = await Promise.allSettled(
    Array.from({ length: size }, (_, i) => startRabbitMQ({ ...options, name: `${name}${i + 1}` })),
  );
  const nodes = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  const disposeAll = (): Promise<unknown> => Promise.allSettled(nodes.map((n) => n.dispose()));
  if (failed) {
    await disposeAll();
    throw failed.reason;
  }
  const [first, ...others] = nodes as [RabbitSandbox, ...RabbitSandbox[]];
  try {
    // One at a time: two nodes joining the same node at once can race over the schema.
    for (const node of others) {
      await node.ctl('stop_app');
      await node.ctl('join_cluster', first.nodeName);
      await node.ctl('start_app');
    }
  } catch (error) {
    await disposeAll();
    throw error;
  }

  const running = (): RabbitSandbox => {
    const node = nodes.find((n) => n.running());
    if (!node) throw new Error('no node of the cluster is running');
    return node;
  };
  const ctl = (...args: string[]): Promise<string> => running().ctl(...args);
  const nodeIndex = (nodeName: string): number | undefined => {
    const index = nodes.findIndex((n) => n.nodeName === nodeName);
    return index >= 0 ? index : undefined;
  };
  const json = async <T>(...args: string[]): Promise<T> =>
    JSON.parse((await ctl(...args, '--formatter', 'json')) || '[]') as T;

  const cluster: RabbitCluster = {
    nodes,
    urls: ({ user = 'guest', password = 'guest', vhost } = {}) =>
      nodes
        .map(
          (n) =>
            `amqp://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${n.port}` +
            (vhost === undefined ? '' : `/${encodeURIComponent(vhost)}`),
        )
        .join(','),
    ctl,
    leaderOf: async (queue, vhost) => {
      const rows = await json<Array<{ name: string; leader: string }>>(
        'list_queues',
        '-p',
        vhost,
        'name',
        'leader',
      );
      const leader = rows.find((r) => r.name === queue)?.leader;
      return leader ? nodeIndex(leader) : undefined;
    },
    replicas: async (vhost) => {
      const rows = await json<Array<{ name: string; type: string; members: string[] | string }>>(
        'list_queues',
        '-p',
        vhost,
        'name',
        'type',
        'members',
      );
      return new Map(
        rows
          .filter((r) => r.type === 'quorum')
          .map((r) => [r.name, Array.isArray(r.members) ? r.members.length : 0]),
      );
    },
    nodesOf: async (user) => {
      const rows = await json<Array<{ user: string; port: number }>>('list_connections', 'user', 'port');
      return [
        ...new Set(
          rows.filter((r) => r.user === user).map((r) => nodes.findIndex((n) => n.port === Number(r.port))),
        ),
      ].filter((i) => i >= 0);
    },
    waitFormed: async (timeoutMs = 60000) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const status = await json<{ running_nodes?: string[] }>('cluster_status').catch(() => ({
          running_nodes: [] as string[],
        }));
        if (nodes.every((n) => status.running_nodes?.includes(n.nodeName))) return;
        if (Date.now() > deadline)
          throw new Error(
            `the cluster did not form in ${timeoutMs} ms (running: ${(status.running_nodes ?? []).join(', ')})`,
          );
        await sleep(250);
      }
    },
    dispose: async () => {
      await disposeAll();
    },
  };
  await cluster.waitFormed();
  return cluster;
}

/**
 * deploy/kubernetes, checked structurally (Debian packages no kubectl or kubeconform): every
 * document parses and has what the API server requires, selectors match the pod labels, probes hit
 * /readyz and /healthz on the metrics port, environment names exist in the configuration schema,
 * secrets come as files, and each container's environment is a valid configuration for
 * `virtbus config` once the references are resolved.
 */
import { hostSegment } from '../../src/messages/lifecycle';
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { run } from '../../src/sandbox/exec';
import { configEnvNames, deployFile, deployFiles, REPO, yamlDocuments } from '../support/deploy';

/** The parts of the Kubernetes objects these tests read (parsed YAML, cast: a missing field fails). */
type Labels = Record<string, string>;
interface Metadata {
  readonly name: string;
  readonly namespace?: string;
  readonly labels?: Labels;
}
interface EnvVar {
  readonly name: string;
  readonly value?: string;
  readonly valueFrom?: {
    readonly fieldRef?: { readonly fieldPath: string };
    readonly secretKeyRef?: unknown;
  };
}
interface Probe {
  readonly httpGet: { readonly path: string; readonly port: string | number };
  readonly periodSeconds: number;
}
interface VolumeMount {
  readonly name: string;
  readonly mountPath: string;
  readonly readOnly?: boolean;
}
interface Container {
  readonly image: string;
  readonly command: string[];
  readonly envFrom: Array<{ readonly configMapRef: { readonly name: string } }>;
  readonly env: EnvVar[];
  readonly ports: Array<{ readonly name: string; readonly containerPort: number; readonly protocol: string }>;
  readonly readinessProbe: Probe;
  readonly livenessProbe: Probe;
  readonly resources?: Partial<
    Record<'requests' | 'limits', { readonly cpu?: string; readonly memory?: string }>
  >;
  readonly securityContext: {
    readonly allowPrivilegeEscalation: boolean;
    readonly readOnlyRootFilesystem: boolean;
    readonly privileged: boolean;
    readonly capabilities: { readonly drop: string[]; readonly add?: string[] };
  };
  readonly volumeMounts: VolumeMount[];
}
interface SecretItem {
  readonly key: string;
  readonly path: string;
}
interface Volume {
  readonly name: string;
  readonly hostPath?: { readonly path: string; readonly type: string };
  readonly secret?: { readonly secretName: string; readonly items: SecretItem[] };
}
interface PodSpec {
  readonly containers: Container[];
  readonly volumes: Volume[];
  readonly nodeSelector?: Labels;
  readonly hostNetwork?: boolean;
  readonly hostPID?: boolean;
  readonly automountServiceAccountToken?: boolean;
  readonly terminationGracePeriodSeconds: number;
  readonly securityContext: {
    readonly runAsNonRoot: boolean;
    readonly runAsUser: number;
    readonly supplementalGroups?: number[];
    readonly seccompProfile?: { readonly type: string };
  };
}
interface Workload {
  readonly metadata: Metadata;
  readonly spec: {
    readonly replicas?: number;
    readonly selector: { readonly matchLabels: Labels };
    readonly template: { readonly metadata: { readonly labels: Labels }; readonly spec: PodSpec };
  };
}
interface Service {
  readonly metadata: Metadata & { readonly labels: Labels };
  readonly spec: { readonly clusterIP?: string; readonly selector: Labels; readonly ports: unknown[] };
}
interface ServiceMonitor {
  readonly spec: {
    readonly jobLabel?: string;
    readonly selector: { readonly matchLabels: Labels };
    readonly namespaceSelector: unknown;
    readonly endpoints: Array<{ readonly port: string; readonly path: string }>;
  };
}
interface NetworkPolicy {
  readonly spec: {
    readonly podSelector: { readonly matchLabels: Labels };
    readonly policyTypes: string[];
    readonly ingress: Array<{ readonly ports: unknown[] }>;
  };
}
interface Pdb {
  readonly spec: { readonly minAvailable: number; readonly selector: { readonly matchLabels: Labels } };
}
interface ConfigMap {
  readonly data: Record<string, string>;
}
interface Secret {
  readonly metadata: Metadata;
  readonly stringData: Record<string, string>;
}
interface Kustomization {
  readonly namespace: string;
  readonly resources: string[];
  readonly images: Array<{ readonly name: string }>;
}
interface Doc {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: Metadata;
}
interface Manifest {
  readonly file: string;
  readonly doc: Doc;
}

const API_VERSIONS: Record<string, string> = {
  Namespace: 'v1',
  ConfigMap: 'v1',
  Secret: 'v1',
  Service: 'v1',
  DaemonSet: 'apps/v1',
  Deployment: 'apps/v1',
  PodDisruptionBudget: 'policy/v1',
  NetworkPolicy: 'networking.k8s.io/v1',
  ServiceMonitor: 'monitoring.coreos.com/v1',
  PrometheusRule: 'monitoring.coreos.com/v1',
  Kustomization: 'kustomize.config.k8s.io/v1beta1',
};

let parsed: Manifest[] | undefined;
function manifests(): Manifest[] {
  parsed ??= deployFiles('kubernetes', ['.yaml', '.yml']).flatMap((file) =>
    yamlDocuments(file)
      .filter((doc) => doc !== null)
      .map((doc) => ({ file: basename(file), doc: doc as Doc })),
  );
  return parsed;
}

function find<T>(kind: string, name: string): T {
  const found = manifests().filter((m) => m.doc.kind === kind && m.doc.metadata?.name === name);
  assert.equal(found.length, 1, `exactly one ${kind} ${name}`);
  return found[0]!.doc as unknown as T;
}

function secrets(): Secret[] {
  return manifests()
    .filter((m) => m.doc.kind === 'Secret')
    .map((m) => m.doc as unknown as Secret);
}

function kustomization(): Kustomization {
  return yamlDocuments(deployFile('kubernetes', 'kustomization.yaml'))[0] as Kustomization;
}

/** selector.matchLabels ⊆ labels */
function selects(selector: Labels, labels: Labels | undefined): boolean {
  return Object.entries(selector).every(([key, value]) => labels?.[key] === value);
}

const WORKLOADS = [
  { kind: 'DaemonSet', name: 'virtbus-bridge', role: 'bridge', port: 9478 },
  { kind: 'Deployment', name: 'virtbus-consumer', role: 'consumer', port: 9479 },
] as const;

function workload(kind: string, name: string): Workload {
  return find<Workload>(kind, name);
}

function container(w: Workload): Container {
  const containers = w.spec.template.spec.containers;
  assert.equal(containers.length, 1, `${w.metadata.name} has one container`);
  return containers[0]!;
}

/** The bridge's broker credential: a file provisioned on each node, never a cluster-wide Secret. */
const NODE_CREDENTIALS = '/etc/virtbus/credentials';

/** Where a bridge's *_FILE path comes from: its node's own credential directory, mounted read-only. */
function nodeCredentialSource(w: Workload, path: string): { mount: VolumeMount; file: string } {
  const c = container(w);
  const mount = c.volumeMounts.find((m) => path.startsWith(`${m.mountPath}/`));
  assert.ok(mount, `${w.metadata.name}: ${path} lies in a mounted volume`);
  const volume = w.spec.template.spec.volumes.find((v) => v.name === mount.name);
  assert.ok(
    !volume?.secret,
    `${w.metadata.name}: ${path} must not come from a Secret (the same on every node)`,
  );
  assert.deepEqual(
    volume?.hostPath,
    { path: NODE_CREDENTIALS, type: 'Directory' },
    `${w.metadata.name}: ${path} comes from the node's own credential directory`,
  );
  return { mount, file: path.slice(mount.mountPath.length + 1) };
}

/** Where a *_FILE path comes from: the mount, its Secret volume and the item. */
function secretSource(
  w: Workload,
  path: string,
): { mount: VolumeMount; secretName: string; item: SecretItem } {
  const c = container(w);
  const mount = c.volumeMounts.find((m) => path.startsWith(`${m.mountPath}/`));
  assert.ok(mount, `${w.metadata.name}: ${path} lies in a mounted volume`);
  const volume = w.spec.template.spec.volumes.find((v) => v.name === mount.name);
  assert.ok(volume?.secret, `${w.metadata.name}: ${path} comes from a Secret`);
  const item = volume.secret.items.find((i) => `${mount.mountPath}/${i.path}` === path);
  assert.ok(item, `${w.metadata.name}: ${path} is an item of Secret ${volume.secret.secretName}`);
  return { mount, secretName: volume.secret.secretName, item };
}

describe('deploy/kubernetes manifests', () => {
  it('every document parses and has apiVersion, kind, metadata.name and the virtbus namespace', () => {
    const all = manifests();
    assert.ok(all.length >= 10, `found ${all.length} documents`);
    for (const { file, doc } of all) {
      assert.equal(typeof doc.kind, 'string', `${file}: kind`);
      assert.equal(doc.apiVersion, API_VERSIONS[doc.kind], `${file}: apiVersion of ${doc.kind}`);
      if (doc.kind === 'Kustomization') continue;
      assert.match(doc.metadata.name, /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, `${file}: metadata.name`);
      if (doc.kind !== 'Namespace') assert.equal(doc.metadata.namespace, 'virtbus', `${file}: namespace`);
      assert.equal(doc.metadata.labels?.['app.kubernetes.io/part-of'], 'virtbus', `${file}: part-of label`);
    }
  });

  it('kustomization.yaml lists every manifest except the example Secret', () => {
    const k = kustomization();
    const files = readdirSync(deployFile('kubernetes'))
      .filter((name) => name.endsWith('.yaml') && name !== 'kustomization.yaml' && !name.includes('example'))
      .sort();
    assert.deepEqual([...k.resources].sort(), files);
    assert.equal(k.namespace, 'virtbus');
  });

  it('workload selectors match their pod labels, and both run the same image', () => {
    const images = new Set<string>();
    for (const { kind, name, role } of WORKLOADS) {
      const w = workload(kind, name);
      const labels = w.spec.template.metadata.labels;
      assert.ok(selects(w.spec.selector.matchLabels, labels), `${name}: selector matches the pod labels`);
      assert.equal(labels['app.kubernetes.io/component'], role);
      const c = container(w);
      assert.match(c.image, /^[\w.-]+(:\d+)?\/[\w./-]+:[\w.-]+$/, `${name}: image with an explicit tag`);
      images.add(c.image);
      assert.deepEqual(c.command, ['/opt/virtbus/bin/virtbus', role]);
    }
    assert.equal(images.size, 1, `one image for bridge and consumer: ${[...images].join(', ')}`);
    const [image] = [...images];
    assert.ok(
      kustomization().images.some((entry) => image?.startsWith(`${entry.name}:`)),
      'kustomization images: names the image',
    );
  });

  for (const { kind, name, port } of WORKLOADS) {
    it(`${name}: metrics on 0.0.0.0:${port} named "metrics", readiness on /readyz and liveness on /healthz there`, () => {
      const c = container(workload(kind, name));
      assert.deepEqual(
        c.ports.map((p) => [p.name, p.containerPort, p.protocol]),
        [['metrics', port, 'TCP']],
      );
      assert.equal(c.env.find((e) => e.name === 'VIRTBUS_METRICS_PORT')?.value, String(port));
      const config = find<ConfigMap>('ConfigMap', 'virtbus-config');
      assert.equal(config.data.VIRTBUS_METRICS_HOST, '0.0.0.0', 'probes come from outside the pod');
      assert.deepEqual(c.readinessProbe.httpGet, { path: '/readyz', port: 'metrics' });
      assert.deepEqual(c.livenessProbe.httpGet, { path: '/healthz', port: 'metrics' });
      assert.ok(c.livenessProbe.periodSeconds >= c.readinessProbe.periodSeconds);
    });

    it(`${name}: resource requests and limits, non-root, no privilege escalation, read-only root, all capabilities dropped`, () => {
      const w = workload(kind, name);
      const pod = w.spec.template.spec;
      const c = container(w);
      for (const which of ['requests', 'limits'] as const) {
        assert.ok(c.resources?.[which]?.cpu, `${name}: resources.${which}.cpu`);
        assert.ok(c.resources?.[which]?.memory, `${name}: resources.${which}.memory`);
      }
      assert.equal(pod.securityContext.runAsNonRoot, true);
      assert.ok(pod.securityContext.runAsUser > 0);
      assert.equal(pod.securityContext.seccompProfile?.type, 'RuntimeDefault');
      assert.equal(c.securityContext.allowPrivilegeEscalation, false);
      assert.equal(c.securityContext.readOnlyRootFilesystem, true);
      assert.equal(c.securityContext.privileged, false);
      assert.deepEqual(c.securityContext.capabilities.drop, ['ALL']);
      assert.ok(!c.securityContext.capabilities.add, 'no capability added');
      assert.notEqual(pod.hostNetwork, true, 'stays on the pod network');
      assert.notEqual(pod.hostPID, true);
      assert.equal(pod.automountServiceAccountToken, false, 'virtbus never talks to the API server');
      assert.ok(pod.terminationGracePeriodSeconds >= 15, 'room for the graceful shutdown');
      assert.ok(
        c.volumeMounts.some((m) => m.mountPath === '/tmp'),
        'a writable /tmp under the read-only root',
      );
    });
  }

  it('the bridge mounts the host libvirt socket directory read-write and joins the libvirt group', () => {
    const bridge = workload('DaemonSet', 'virtbus-bridge');
    const pod = bridge.spec.template.spec;
    const hostPaths = pod.volumes.filter((v) => v.hostPath);
    assert.deepEqual(
      hostPaths.map((v) => v.hostPath?.path).sort(),
      [NODE_CREDENTIALS, '/run/libvirt', '/var/lib/virtbus-bridge'],
      "host paths: the node's own credential, the libvirt socket directory and the outbox journal, nothing else",
    );
    const socket = hostPaths.find((v) => v.hostPath?.path === '/run/libvirt')!;
    assert.equal(socket.hostPath?.type, 'Directory');
    const mount = container(bridge).volumeMounts.find((m) => m.name === socket.name);
    assert.ok(mount);
    assert.equal(mount.mountPath, '/run/libvirt', 'qemu:///system finds /run/libvirt/libvirt-sock');
    assert.notEqual(mount.readOnly, true, 'connecting to a unix socket needs write access');
    assert.equal(
      pod.securityContext.supplementalGroups?.length,
      1,
      'the libvirt gid as a supplemental group',
    );
    const env = new Map(container(bridge).env.map((e) => [e.name, e]));
    assert.equal(env.get('VIRTBUS_HOST')?.valueFrom?.fieldRef?.fieldPath, 'spec.nodeName');
    assert.equal(env.get('VIRTBUS_LIBVIRT_URI')?.value, 'qemu:///system');
    assert.deepEqual(pod.nodeSelector, { 'virtbus.io/hypervisor': 'true' });
  });

  it('the bridge keeps its outbox journal on the node, so it outlives the pod', () => {
    const bridge = workload('DaemonSet', 'virtbus-bridge');
    const c = container(bridge);
    const dir = c.env.find((e) => e.name === 'VIRTBUS_OUTBOX_DIR')?.value;
    assert.ok(dir, 'VIRTBUS_OUTBOX_DIR is set (the default ./data/outbox is on the read-only root)');
    const mount = c.volumeMounts.find((m) => dir.startsWith(`${m.mountPath}/`));
    assert.ok(mount, `${dir} lies in a mounted volume`);
    assert.notEqual(mount.readOnly, true);
    const volume = bridge.spec.template.spec.volumes.find((v) => v.name === mount.name);
    assert.deepEqual(volume?.hostPath, { path: '/var/lib/virtbus-bridge', type: 'Directory' });
  });

  it('environment names exist in src/config/schema.ts; secrets come as *_FILE from mounted Secret keys that exist', () => {
    const names = configEnvNames();
    const config = find<ConfigMap>('ConfigMap', 'virtbus-config');
    for (const name of Object.keys(config.data)) {
      assert.ok(names.has(name), `ConfigMap key ${name} is a configuration variable`);
      assert.ok(!names.get(name)?.sensitive, `ConfigMap holds no secret (${name})`);
    }
    for (const { kind, name } of WORKLOADS) {
      const w = workload(kind, name);
      const c = container(w);
      for (const from of c.envFrom) assert.equal(from.configMapRef.name, 'virtbus-config');
      for (const entry of c.env) {
        if (!entry.name.startsWith('VIRTBUS_')) continue;
        const known = names.get(entry.name);
        assert.ok(known, `${name}: ${entry.name} is not a configuration variable in src/config/schema.ts`);
        assert.ok(!entry.valueFrom?.secretKeyRef, `${name}: ${entry.name}: secrets as files, not env`);
        if (!known.sensitive) continue;
        assert.ok(entry.name.endsWith('_FILE'), `${name}: secret ${entry.name} comes from a file`);
        if (kind === 'DaemonSet') {
          // One identity per node: the broker user in it is the node's routing segment.
          assert.equal(nodeCredentialSource(w, String(entry.value)).mount.readOnly, true);
          continue;
        }
        const { mount, secretName, item } = secretSource(w, String(entry.value));
        assert.equal(mount.readOnly, true);
        const secret = secrets().find((x) => x.metadata.name === secretName);
        assert.ok(secret, `Secret ${secretName} is in secret.example.yaml`);
        assert.ok(item.key in secret.stringData, `Secret ${secretName} has key ${item.key}`);
      }
    }
  });

  it('Services select the workloads and expose the metrics port; the ServiceMonitor selects both Services', () => {
    const monitor = find<ServiceMonitor>('ServiceMonitor', 'virtbus');
    for (const { kind, name, port } of WORKLOADS) {
      const podLabels = workload(kind, name).spec.template.metadata.labels;
      const service = find<Service>('Service', name);
      assert.ok(selects(service.spec.selector, podLabels), `Service ${name} selects its pods`);
      assert.equal(service.spec.clusterIP, 'None', 'headless: every pod is its own target');
      assert.deepEqual(service.spec.ports, [
        { name: 'metrics', port, targetPort: 'metrics', protocol: 'TCP' },
      ]);
      assert.ok(
        selects(monitor.spec.selector.matchLabels, service.metadata.labels),
        `ServiceMonitor selects ${name}`,
      );
      // Alerts and the dashboard select job="virtbus-bridge|virtbus-consumer": the job is the Service name.
      assert.match(name, /^virtbus-(bridge|consumer)$/);
    }
    assert.ok(!monitor.spec.jobLabel, 'job = Service name');
    assert.deepEqual(monitor.spec.namespaceSelector, { matchNames: ['virtbus'] });
    assert.deepEqual(
      monitor.spec.endpoints.map((e) => [e.port, e.path]),
      [['metrics', '/metrics']],
    );
  });

  it('the NetworkPolicy admits only the monitoring namespace to the metrics port of virtbus pods', () => {
    const policy = find<NetworkPolicy>('NetworkPolicy', 'virtbus-metrics');
    for (const { kind, name } of WORKLOADS) {
      const labels = workload(kind, name).spec.template.metadata.labels;
      assert.ok(selects(policy.spec.podSelector.matchLabels, labels), `policy covers ${name}`);
    }
    assert.deepEqual(policy.spec.policyTypes, ['Ingress']);
    assert.equal(policy.spec.ingress.length, 1);
    assert.deepEqual(policy.spec.ingress[0]?.ports, [{ port: 'metrics', protocol: 'TCP' }]);
  });

  it('the PrometheusRule carries exactly the groups of deploy/prometheus/alerts.yml', () => {
    const rule = find<{ spec: { groups: unknown } }>('PrometheusRule', 'virtbus');
    const alerts = yamlDocuments(deployFile('prometheus', 'alerts.yml'))[0] as { groups: unknown };
    assert.deepEqual(rule.spec.groups, alerts.groups, 'regenerate prometheusrule.yaml from alerts.yml');
  });

  it('the consumer Deployment has a PodDisruptionBudget that selects it', () => {
    const pdb = find<Pdb>('PodDisruptionBudget', 'virtbus-consumer');
    const consumer = workload('Deployment', 'virtbus-consumer');
    assert.ok(selects(pdb.spec.selector.matchLabels, consumer.spec.template.metadata.labels));
    assert.ok(pdb.spec.minAvailable < (consumer.spec.replicas ?? 1));
  });

  for (const { kind, name, role } of WORKLOADS) {
    it(`${name}: the container's environment (ConfigMap + env, references resolved) is a valid configuration for virtbus config --role ${role}`, async () => {
      const w = workload(kind, name);
      const scratch = mkdtempSync(join(tmpdir(), 'virtbus-k8s-'));
      try {
        const env: NodeJS.ProcessEnv = Object.fromEntries(
          Object.entries(process.env).filter(([key]) => !key.startsWith('VIRTBUS_')),
        );
        Object.assign(env, find<ConfigMap>('ConfigMap', 'virtbus-config').data);
        for (const entry of container(w).env) {
          if (entry.valueFrom?.fieldRef) {
            env[entry.name] = 'cmp-01.example.org';
          } else if (entry.name.endsWith('_FILE') && kind === 'DaemonSet') {
            // The node's own credential, as the generator writes it for this node (cmp-01.example.org).
            const { file } = nodeCredentialSource(w, String(entry.value));
            assert.equal(file, 'amqp-url');
            const passwords = join(scratch, 'passwords');
            const generated = await run(
              process.execPath,
              [
                join(REPO, 'bin', 'virtbus'),
                'broker',
                'definitions',
                '--hosts',
                'cmp-01.example.org,cmp-02.example.org',
                '--passwords',
                passwords,
                '--broker-url',
                'amqps://rabbitmq.example.org:5671',
              ],
              { env: { PATH: process.env.PATH ?? '' } },
            );
            assert.equal(generated.code, 0, generated.stderr);
            env[entry.name] = join(passwords, `${hostSegment('cmp-01.example.org')}.${file}`);
          } else if (entry.name.endsWith('_FILE')) {
            // The example Secret's value, where the mounted file would be.
            const { secretName, item } = secretSource(w, String(entry.value));
            const secret = secrets().find((x) => x.metadata.name === secretName);
            const file = join(scratch, entry.name);
            writeFileSync(file, String(secret?.stringData[item.key]));
            env[entry.name] = file;
          } else {
            env[entry.name] = String(entry.value);
          }
        }
        const result = await run(process.execPath, [join(REPO, 'bin', 'virtbus'), 'config', '--role', role], {
          env,
        });
        assert.equal(result.code, 0, `virtbus config --role ${role}: ${result.stderr}`);
        const config = JSON.parse(result.stdout) as {
          host: string;
          amqp: { url: string };
          metrics: { host: string; port: number };
        };
        assert.equal(config.metrics.host, '0.0.0.0');
        assert.match(
          config.amqp.url,
          role === 'bridge' ? /^amqps:\/\/cmp-01_example_org:\*+@/ : /^amqps:\/\/virtbus-consumer:\*+@/,
          "the bridge logs in as its node's own user, the consumer as virtbus-consumer",
        );
        if (role === 'bridge') assert.equal(config.host, 'cmp-01.example.org');
      } finally {
        rmSync(scratch, { recursive: true, force: true });
      }
    });
  }
});

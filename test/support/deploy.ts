/**
 * Shared by the ops tests (deploy/ checked by the real tools): where the repository and its deploy
 * files are, tools that must exist, the configuration names and metric names the code really has,
 * and metric names referenced by PromQL expressions.
 */
import { accessSync, constants, readFileSync, readdirSync, statSync } from 'node:fs';
import { delimiter, join, resolve } from 'node:path';
import { Registry } from 'prom-client';
import { parseAllDocuments } from 'yaml';
import { schemaLeaves } from '../../src/config/load';
import { createBridgeMetrics, type BridgeMetricSources } from '../../src/bridge/metrics';
import type { QueueStats } from '../../src/native/contract';
import { createConsumerMetrics } from '../../src/consumer/metrics';
import type { ServiceProcess } from './bridge-process';

/** The repository root (this file runs from dist/test/ops). */
export const REPO = resolve(__dirname, '..', '..', '..');
export const DEPLOY = join(REPO, 'deploy');

export function deployFile(...parts: string[]): string {
  return join(DEPLOY, ...parts);
}

export function readDeploy(...parts: string[]): string {
  return readFileSync(deployFile(...parts), 'utf8');
}

/** Every YAML document of a file, parsed strictly (a YAML error fails the test with its position). */
export function yamlDocuments(path: string): unknown[] {
  return parseAllDocuments(readFileSync(path, 'utf8')).map((doc) => {
    if (doc.errors.length > 0) throw new Error(`${path}: ${doc.errors.map((e) => e.message).join('; ')}`);
    return doc.toJS() as unknown;
  });
}

/**
 * The absolute path of a tool, or an error that says which Debian package brings it. The ops tests
 * never skip: a missing tool is a failing test with this message.
 */
export function requireTool(tool: string, debianPackage: string): string {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = join(dir, tool);
    try {
      if (!statSync(candidate).isFile()) continue;
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  throw new Error(
    `${tool} is not installed: it comes with the Debian package ${debianPackage} ` +
      `(npm run setup installs it; or apt-get install ${debianPackage})`,
  );
}

export interface ConfigEnv {
  readonly key: string;
  readonly sensitive: boolean;
}

/** VIRTBUS_* environment names the configuration schema reads, with their key. */
export function configEnvNames(): Map<string, ConfigEnv> {
  const names = new Map<string, ConfigEnv>();
  for (const [key, leaf] of schemaLeaves()) {
    if (!leaf.env) continue;
    names.set(leaf.env, { key, sensitive: leaf.sensitive === true });
    if (leaf.sensitive) names.set(`${leaf.env}_FILE`, { key, sensitive: true });
  }
  names.set('VIRTBUS_CONFIG', { key: '(config files)', sensitive: false });
  return names;
}

export interface RegisteredMetric {
  readonly name: string;
  readonly type: string;
  readonly labels: readonly string[];
  readonly role: 'bridge' | 'consumer';
}

/**
 * Every metric the bridge and the consumer register, taken from the code's own registries (the same
 * functions the processes call), with the series names a histogram adds.
 */
export function registeredMetrics(): Map<string, RegisteredMetric> {
  // Registration does not read the sources; any source the bridge adds later is a stub too.
  const sources = new Proxy({} as BridgeMetricSources, {
    get: (_target, name) =>
      name === 'queueStats'
        ? (): QueueStats => ({ depth: 0, capacity: 1, highWater: 0, dropped: 0, enqueued: 0 })
        : (): number => 0,
  });
  const bridge = createBridgeMetrics(sources, new Registry());
  const consumer = createConsumerMetrics(new Registry());
  const metrics = new Map<string, RegisteredMetric>();
  const add = (registry: Registry, role: RegisteredMetric['role']): void => {
    for (const metric of registry.getMetricsAsArray()) {
      const { name, type, labelNames } = metric as unknown as {
        name: string;
        type: string;
        labelNames?: string[];
      };
      const labels = labelNames ?? [];
      const names = type === 'histogram' ? [`${name}_bucket`, `${name}_sum`, `${name}_count`, name] : [name];
      for (const series of names) {
        const existing = metrics.get(series);
        metrics.set(series, {
          name: series,
          type,
          labels: series.endsWith('_bucket') ? [...labels, 'le'] : labels,
          role: existing ? existing.role : role,
        });
      }
    }
  };
  add(bridge.registry, 'bridge');
  add(consumer.registry, 'consumer');
  return metrics;
}

const PROMQL_KEYWORDS = new Set([
  'and',
  'or',
  'unless',
  'bool',
  'offset',
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'inf',
  'nan',
  'atan2',
]);

/** Grafana's variables, replaced by values Prometheus accepts. */
export function expandGrafanaVariables(expr: string): string {
  return expr
    .replaceAll('$__rate_interval', '1m')
    .replaceAll('$__interval', '1m')
    .replaceAll('$__range', '1h')
    .replace(/\$\{?(\w+)\}?/g, '.*');
}

/** Metric names a PromQL expression selects (functions, keywords, labels and strings left out). */
export function promqlMetricNames(expr: string): string[] {
  const stripped = expandGrafanaVariables(expr)
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ');
  const names = new Set<string>();
  for (const match of stripped.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const token = match[0];
    const rest = stripped.slice((match.index ?? 0) + token.length);
    if (/^\s*\(/.test(rest)) continue; // a function or aggregation
    if (PROMQL_KEYWORDS.has(token.toLowerCase())) continue;
    const before = stripped.slice(0, match.index ?? 0);
    if (/[0-9.]$/.test(before)) continue; // the unit of a number or duration (5m, 1e3)
    names.add(token);
  }
  return [...names];
}

/** Label names used in by()/without() clauses of an expression. */
export function promqlGroupingLabels(expr: string): string[] {
  const labels = new Set<string>();
  for (const match of expr.matchAll(/\b(?:by|without)\s*\(([^)]*)\)/g)) {
    for (const label of (match[1] ?? '').split(',')) if (label.trim()) labels.add(label.trim());
  }
  return [...labels];
}

/** Labels Prometheus or the deployments attach to every series (target labels). */
export const TARGET_LABELS = new Set(['job', 'instance', 'pod', 'namespace', 'node', 'service', 'endpoint']);

/** Files under a deploy/ subdirectory with one of the extensions. */
export function deployFiles(dir: string, extensions: readonly string[]): string[] {
  return readdirSync(deployFile(dir))
    .filter((name) => extensions.some((ext) => name.endsWith(ext)))
    .sort()
    .map((name) => deployFile(dir, name));
}

/**
 * The base URL of a running virtbus process's metrics server, from its log: the bridge logs
 * `metrics: <url>/metrics`, the consumer its `host` and `port`.
 */
export async function serviceMetricsUrl(service: ServiceProcess): Promise<string> {
  const line = await service.waitForLog(
    'the metrics address',
    (l) =>
      typeof l.metrics === 'string' ||
      (typeof l.port === 'number' && typeof l.msg === 'string' && l.msg.includes('metrics')),
    30000,
  );
  if (typeof line.metrics === 'string') return line.metrics.replace(/\/metrics$/, '');
  const host = typeof line.host === 'string' && line.host !== '0.0.0.0' ? line.host : '127.0.0.1';
  return `http://${host}:${String(line.port)}`;
}

export interface AlertRule {
  readonly alert: string;
  readonly expr: string;
  readonly for?: string;
  readonly labels?: Record<string, string>;
  readonly annotations?: Record<string, string>;
}

/** The alerting rules of deploy/prometheus/alerts.yml. */
export function alertRules(): AlertRule[] {
  const file = yamlDocuments(deployFile('prometheus', 'alerts.yml'))[0] as {
    groups: Array<{ name: string; rules: AlertRule[] }>;
  };
  return file.groups.flatMap((group) => group.rules);
}

export interface DashboardPanel {
  readonly id: number;
  readonly type: string;
  readonly title: string;
  readonly description?: string;
  readonly gridPos: { readonly h: number; readonly w: number; readonly x: number; readonly y: number };
  readonly datasource?: { readonly type: string; readonly uid: string };
  readonly targets?: Array<{
    readonly expr: string;
    readonly refId: string;
    readonly datasource?: { readonly type: string; readonly uid: string };
  }>;
}

export interface Dashboard {
  readonly uid: string;
  readonly title: string;
  readonly schemaVersion: number;
  readonly panels: DashboardPanel[];
  readonly templating: {
    readonly list: Array<{ readonly name: string; readonly type: string; readonly query: unknown }>;
  };
}

export function dashboard(): Dashboard {
  return JSON.parse(readFileSync(deployFile('grafana', 'virtbus.json'), 'utf8')) as Dashboard;
}

/** Every PromQL expression of the dashboard, with the panel it belongs to. */
export function dashboardExprs(): Array<{ panel: string; expr: string }> {
  return dashboard().panels.flatMap((panel) =>
    (panel.targets ?? []).map((target) => ({ panel: panel.title, expr: target.expr })),
  );
}

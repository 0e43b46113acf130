/**
 * deploy/prometheus: the scrape configuration and alerting rules checked by Prometheus' own promtool
 * (`check config`, `check rules`, `test rules` on alerts.test.yml), every alert documented in
 * docs/operations.md and unit-tested both ways, and every metric an alert reads registered by the code.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROLE_METRICS_PORTS } from '../../src/config/load';
import { run } from '../../src/sandbox/exec';
import {
  alertRules,
  deployFile,
  promqlGroupingLabels,
  promqlMetricNames,
  registeredMetrics,
  REPO,
  requireTool,
  TARGET_LABELS,
  yamlDocuments,
} from '../support/deploy';

interface RuleTests {
  rule_files: string[];
  tests: Array<{
    name: string;
    alert_rule_test?: Array<{ alertname: string; eval_time: string; exp_alerts?: unknown[] }>;
  }>;
}
interface PrometheusConfig {
  rule_files: string[];
  scrape_configs: Array<{
    job_name: string;
    metrics_path?: string;
    static_configs?: Array<{ targets: string[] }>;
  }>;
}

/** `### Name` headings of docs/operations.md. */
function runbookHeadings(): Set<string> {
  const text = readFileSync(join(REPO, 'docs', 'operations.md'), 'utf8');
  return new Set([...text.matchAll(/^### (\S+)\s*$/gm)].map((m) => m[1]!));
}

describe('deploy/prometheus', () => {
  let promtool: string;
  let scratch: string;
  before(() => {
    promtool = requireTool('promtool', 'prometheus');
    scratch = mkdtempSync(join(tmpdir(), 'virtbus-promtool-'));
  });
  after(() => rmSync(scratch, { recursive: true, force: true }));

  it('promtool check config accepts prometheus.yml (and the rule file it loads)', async () => {
    const result = await run(promtool, ['check', 'config', deployFile('prometheus', 'prometheus.yml')]);
    assert.equal(result.code, 0, `promtool check config:\n${result.stdout}${result.stderr}`);
    assert.match(result.stdout, /SUCCESS: 1 rule files found/);
  });

  it('promtool check rules accepts alerts.yml', async () => {
    const result = await run(promtool, ['check', 'rules', deployFile('prometheus', 'alerts.yml')]);
    assert.equal(result.code, 0, `promtool check rules:\n${result.stdout}${result.stderr}`);
    assert.match(result.stdout, new RegExp(`SUCCESS: ${alertRules().length} rules found`));
  });

  it('promtool test rules passes alerts.test.yml', async () => {
    const result = await run(promtool, ['test', 'rules', 'alerts.test.yml'], {
      cwd: deployFile('prometheus'),
    });
    assert.equal(result.code, 0, `promtool test rules:\n${result.stdout}${result.stderr}`);
    assert.match(result.stdout, /SUCCESS/);
  });

  it('promtool test rules fails when an alert changes under its tests (the tests bite)', async () => {
    copyFileSync(deployFile('prometheus', 'alerts.test.yml'), join(scratch, 'alerts.test.yml'));
    const rules = readFileSync(deployFile('prometheus', 'alerts.yml'), 'utf8');
    const weakened = rules.replace(
      'virtbus_outbox_oldest_age_seconds > 120',
      'virtbus_outbox_oldest_age_seconds > 600',
    );
    assert.notEqual(weakened, rules);
    writeFileSync(join(scratch, 'alerts.yml'), weakened);
    const result = await run(promtool, ['test', 'rules', 'alerts.test.yml'], { cwd: scratch });
    assert.notEqual(result.code, 0);
    assert.match(`${result.stdout}${result.stderr}`, /VirtbusOutboxStale/);
  });

  it('the alerts cover the signals operators need', () => {
    const names = new Set(alertRules().map((rule) => rule.alert));
    for (const name of [
      'VirtbusTargetDown',
      'VirtbusLibvirtDown',
      'VirtbusAmqpDown',
      'VirtbusNativeQueueNearCapacity',
      'VirtbusNativeQueueDrops',
      'VirtbusOutboxGrowing',
      'VirtbusOutboxStale',
      'VirtbusConsumerBacklogGrowing',
      'VirtbusEventToSyncLatencyHigh',
      'VirtbusDatabaseDown',
    ]) {
      assert.ok(names.has(name), `alerts.yml has ${name}`);
    }
  });

  it('every alert has a severity, a summary, a description and a runbook entry in docs/operations.md', () => {
    const headings = runbookHeadings();
    for (const rule of alertRules()) {
      assert.match(rule.labels?.severity ?? '', /^(critical|warning)$/, `${rule.alert}: severity`);
      assert.ok(rule.annotations?.summary, `${rule.alert}: summary`);
      assert.ok(rule.annotations?.description, `${rule.alert}: description`);
      assert.equal(rule.annotations?.runbook_url, `docs/operations.md#${rule.alert.toLowerCase()}`);
      assert.ok(headings.has(rule.alert), `docs/operations.md has a "### ${rule.alert}" runbook entry`);
    }
  });

  it('every alert has a unit test where it fires and one where it stays quiet', () => {
    const tests = yamlDocuments(deployFile('prometheus', 'alerts.test.yml'))[0] as RuleTests;
    assert.deepEqual(tests.rule_files, ['alerts.yml']);
    const cases = tests.tests.flatMap((t) => t.alert_rule_test ?? []);
    for (const rule of alertRules()) {
      const mine = cases.filter((c) => c.alertname === rule.alert);
      assert.ok(
        mine.some((c) => (c.exp_alerts ?? []).length > 0),
        `alerts.test.yml: a case where ${rule.alert} fires`,
      );
      assert.ok(
        mine.some((c) => (c.exp_alerts ?? []).length === 0),
        `alerts.test.yml: a case where ${rule.alert} stays quiet`,
      );
    }
  });

  it('alert expressions read only metrics the code registers, grouped by labels they carry', () => {
    const metrics = registeredMetrics();
    for (const rule of alertRules()) {
      const names = promqlMetricNames(rule.expr);
      assert.ok(names.length > 0, `${rule.alert}: reads a metric`);
      for (const name of names) {
        if (name === 'up') continue; // Prometheus' own per-target series
        assert.ok(
          metrics.has(name),
          `${rule.alert}: ${name} is not registered by src/bridge or src/consumer`,
        );
      }
      const labels = new Set(names.flatMap((name) => metrics.get(name)?.labels ?? []));
      for (const label of promqlGroupingLabels(rule.expr)) {
        assert.ok(labels.has(label) || TARGET_LABELS.has(label), `${rule.alert}: label ${label}`);
      }
    }
  });

  it('prometheus.yml scrapes jobs virtbus-bridge and virtbus-consumer on the default metrics ports and loads alerts.yml', () => {
    const config = yamlDocuments(deployFile('prometheus', 'prometheus.yml'))[0] as PrometheusConfig;
    assert.deepEqual(config.rule_files, ['alerts.yml']);
    const jobs = new Map(config.scrape_configs.map((job) => [job.job_name, job]));
    for (const role of ['bridge', 'consumer'] as const) {
      const job = jobs.get(`virtbus-${role}`);
      assert.ok(job, `job virtbus-${role}`);
      assert.equal(job.metrics_path, '/metrics');
      const targets = (job.static_configs ?? []).flatMap((c) => c.targets);
      assert.ok(targets.length > 0);
      for (const target of targets) assert.ok(target.endsWith(`:${ROLE_METRICS_PORTS[role]}`), target);
    }
  });
});

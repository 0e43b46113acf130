/**
 * A real Prometheus (Debian's `prometheus`) on a free port scrapes a running `virtbus bridge` and
 * `virtbus consumer` every second with deploy/prometheus/prometheus.yml (its jobs, relabelling and
 * alerts.yml; only the targets and intervals replaced). Through Prometheus' HTTP API the test reads
 * virtbus_native_queue_depth and watches virtbus_events_published_total move as lifecycle events are
 * driven; `promtool check metrics` lints live scrapes; the alert rules evaluate healthy on live data
 * and VirtbusLibvirtDown goes pending when libvirtd dies; every dashboard expression evaluates.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { freePort, waitUntil } from '../../src/sandbox';
import { forgetOnExit, killOnExit } from '../../src/sandbox/exec';
import type { LibvirtdSandbox } from '../../src/sandbox';
import type { NativeConnection } from '../../src/native/contract';
import { scrape, startVirtbus, type ServiceProcess } from '../support/bridge-process';
import { domainXml, openDriver } from '../support/domains';
import { onTeardown, testBroker, testLibvirtd } from '../support/services';
import {
  alertRules,
  dashboardExprs,
  deployFile,
  expandGrafanaVariables,
  promqlMetricNames,
  requireTool,
  serviceMetricsUrl,
  yamlDocuments,
} from '../support/deploy';

const HOST = 'cmp-09.example.org';

interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}
interface QueryResponse {
  status: string;
  error?: string;
  data: { resultType: string; result: Sample[] };
}
interface RulesResponse {
  data: {
    groups: Array<{
      name: string;
      rules: Array<{ name: string; health: string; lastError?: string; lastEvaluation: string }>;
    }>;
  };
}
interface AlertsResponse {
  data: { alerts: Array<{ labels: Record<string, string>; state: string }> };
}

describe('a real Prometheus scraping a running bridge and consumer', () => {
  let libvirtd: LibvirtdSandbox;
  let driver: NativeConnection;
  let driverOpen = true;
  let bridge: ServiceProcess;
  let consumer: ServiceProcess;
  let bridgeUrl: string;
  let consumerUrl: string;
  let prometheus: ChildProcess;
  let prometheusLog = '';
  let api: string;
  let promtool: string;

  const query = async (expr: string): Promise<QueryResponse> => {
    const response = await fetch(`${api}/api/v1/query?query=${encodeURIComponent(expr)}`);
    return (await response.json()) as QueryResponse;
  };
  /** The single value of an instant query, or undefined while it has none. */
  const value = async (expr: string): Promise<number | undefined> => {
    const result = await query(expr);
    assert.equal(result.status, 'success', `${expr}: ${result.error ?? ''}`);
    const first = result.data.result[0];
    return first ? Number(first.value[1]) : undefined;
  };

  before(async () => {
    const prometheusBin = requireTool('prometheus', 'prometheus');
    promtool = requireTool('promtool', 'prometheus');
    const [lv, broker] = await Promise.all([testLibvirtd(), testBroker()]);
    libvirtd = lv;
    driver = await openDriver(libvirtd.uri);
    onTeardown(() => (driverOpen ? driver.close() : Promise.resolve()));
    const scratch = mkdtempSync(join(tmpdir(), 'virtbus-prometheus-'));
    onTeardown(() => Promise.resolve(rmSync(scratch, { recursive: true, force: true })));

    bridge = startVirtbus('bridge', {
      VIRTBUS_HOST: HOST,
      VIRTBUS_LIBVIRT_URI: libvirtd.uri,
      VIRTBUS_AMQP_URL: broker.url,
      VIRTBUS_STOP_DELAY_MS: '0',
      VIRTBUS_OUTBOX_DIR: join(scratch, 'outbox'),
      VIRTBUS_LIBVIRT_RECONNECT_MAX_DELAY_MS: '1000',
      VIRTBUS_LOG_LEVEL: 'info',
    });
    consumer = startVirtbus('consumer', {
      VIRTBUS_AMQP_URL: broker.url,
      VIRTBUS_DB_URL: `sqlite:${join(scratch, 'instances.db')}`,
      VIRTBUS_CONSUMER_QUEUE_DEPTH_INTERVAL_MS: '500',
      VIRTBUS_LOG_LEVEL: 'info',
    });
    [bridgeUrl, consumerUrl] = await Promise.all([serviceMetricsUrl(bridge), serviceMetricsUrl(consumer)]);
    await consumer.waitForLog('consuming', (line) => line.msg === 'consuming');

    // deploy/prometheus/prometheus.yml with this run's targets and a 1 s rhythm.
    const config = yamlDocuments(deployFile('prometheus', 'prometheus.yml'))[0] as {
      global: Record<string, string>;
      rule_files: string[];
      scrape_configs: Array<{ job_name: string; static_configs: Array<{ targets: string[] }> }>;
    };
    config.global.scrape_interval = '1s';
    config.global.evaluation_interval = '1s';
    config.rule_files = config.rule_files.map((file) => deployFile('prometheus', file));
    const targets: Record<string, string> = {
      'virtbus-bridge': new URL(bridgeUrl).host,
      'virtbus-consumer': new URL(consumerUrl).host,
    };
    for (const job of config.scrape_configs) {
      const target = targets[job.job_name];
      assert.ok(target, `prometheus.yml job ${job.job_name} is a virtbus job`);
      job.static_configs = [{ targets: [target] }];
      Object.assign(job, { scrape_timeout: '1s' });
    }
    assert.deepEqual(Object.keys(targets).sort(), config.scrape_configs.map((j) => j.job_name).sort());
    writeFileSync(join(scratch, 'prometheus.yml'), stringify(config));

    const port = await freePort();
    api = `http://127.0.0.1:${port}`;
    prometheus = spawn(
      prometheusBin,
      [
        `--config.file=${join(scratch, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(scratch, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--log.level=warn',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    prometheus.stderr?.on('data', (chunk: Buffer) => (prometheusLog += chunk.toString('utf8')));
    const pid = prometheus.pid;
    if (pid !== undefined) killOnExit(pid);
    onTeardown(async () => {
      if (prometheus.exitCode === null && prometheus.signalCode === null) {
        prometheus.kill('SIGTERM');
        await once(prometheus, 'exit');
      }
      if (pid !== undefined) forgetOnExit(pid);
    });
    await waitUntil(
      'Prometheus /-/ready',
      async () => {
        if (prometheus.exitCode !== null) throw new Error(`prometheus exited: ${prometheusLog}`);
        return (await fetch(`${api}/-/ready`).catch(() => undefined))?.status === 200;
      },
      30000,
      100,
    );
  });

  after(async () => {
    const exits = await Promise.all([bridge?.stop(), consumer?.stop()]);
    for (const exit of exits)
      if (exit) assert.deepEqual(exit, { code: 0, signal: null }, 'clean exit on SIGTERM');
  });

  for (const role of ['bridge', 'consumer'] as const) {
    it(`promtool check metrics passes on a live scrape of the ${role}`, async () => {
      const text = await scrape(role === 'bridge' ? bridgeUrl : consumerUrl);
      assert.match(text, role === 'bridge' ? /^virtbus_native_queue_depth \d+/m : /^virtbus_db_up 1/m);
      const result = spawnSync(promtool, ['check', 'metrics'], { input: text, encoding: 'utf8' });
      assert.equal(
        result.status,
        0,
        `promtool check metrics on the ${role}'s /metrics: ${result.stdout}${result.stderr}`,
      );
    });
  }

  it('Prometheus scrapes both jobs, with the relabelled instance of the bridge', async () => {
    await waitUntil(
      'both targets up',
      async () => (await value('sum(up{job=~"virtbus-.*"})')) === 2,
      20000,
      200,
    );
    const up = await query('up{job="virtbus-bridge"}');
    assert.equal(
      up.data.result[0]?.metric.instance,
      '127.0.0.1',
      'instance without the port (relabel_configs)',
    );
  });

  it('reads virtbus_native_queue_depth and sees virtbus_events_published_total move as lifecycle events are driven', async () => {
    const depth = await query('virtbus_native_queue_depth');
    assert.equal(depth.data.result.length, 1, 'one bridge, one series');
    assert.equal(depth.data.result[0]?.metric.job, 'virtbus-bridge');
    const depthValue = Number(depth.data.result[0]?.value[1]);
    assert.ok(depthValue >= 0 && depthValue <= ((await value('virtbus_native_queue_capacity')) ?? 0));

    const published = 'sum(virtbus_events_published_total{job="virtbus-bridge"})';
    await waitUntil(
      'the start snapshot in Prometheus',
      async () => ((await value(published)) ?? 0) > 0,
      20000,
      200,
    );
    const before = (await value(published)) ?? 0;
    const consumed = 'sum(virtbus_consumer_messages_total{job="virtbus-consumer"})';
    const consumedBefore = (await value(consumed)) ?? 0;

    const count = 5;
    for (let i = 0; i < count; i += 1) {
      const ref = await driver.createXML(domainXml(`prom-${i}`));
      await driver.suspend(ref.uuid);
      await driver.resume(ref.uuid);
      await driver.destroy(ref.uuid);
    }
    // started, paused, resumed, stopped per domain (stop delay 0)
    await waitUntil(
      `virtbus_events_published_total to grow by ${4 * count} (from ${before})`,
      async () => ((await value(published)) ?? 0) >= before + 4 * count,
      20000,
      250,
    );
    for (const transition of ['started', 'paused', 'resumed', 'stopped'])
      assert.ok(
        ((await value(`sum(virtbus_events_published_total{transition="${transition}"})`)) ?? 0) >= count,
        transition,
      );
    // A rate needs a series to grow after Prometheus first saw it: a second wave, now that the
    // transition series exist.
    for (let i = 0; i < 3; i += 1) {
      const ref = await driver.createXML(domainXml(`prom-again-${i}`));
      await driver.destroy(ref.uuid);
    }
    await waitUntil(
      'a publish rate to graph',
      async () => ((await value('sum(rate(virtbus_events_published_total[1m]))')) ?? 0) > 0,
      10000,
      250,
    );
    await waitUntil(
      'the consumer to take them (virtbus_consumer_messages_total)',
      async () => ((await value(consumed)) ?? 0) >= consumedBefore + 4 * count,
      20000,
      250,
    );
    assert.notEqual(
      await value('virtbus_consumer_queue_depth'),
      undefined,
      'queue depth read from the broker',
    );
  });

  it('every metric the alerts and the dashboard read is exposed by the running processes', async () => {
    const exposed = new Set<string>();
    for (const base of [bridgeUrl, consumerUrl]) {
      for (const match of (await scrape(base)).matchAll(/^# TYPE (\S+) (\w+)$/gm)) {
        const [, name, type] = match;
        exposed.add(name!);
        if (type === 'histogram')
          for (const suffix of ['_bucket', '_sum', '_count']) exposed.add(`${name!}${suffix}`);
      }
    }
    const read = [...alertRules().map((r) => r.expr), ...dashboardExprs().map((d) => d.expr)].flatMap(
      (expr) => promqlMetricNames(expr),
    );
    const missing = [...new Set(read)].filter((name) => name !== 'up' && !exposed.has(name));
    assert.deepEqual(missing, [], 'metrics read by alerts.yml or the dashboard but not exposed');
  });

  it('the alert rules load and evaluate without errors on live data, and a healthy system has no alert', async () => {
    await waitUntil(
      'every rule evaluated',
      async () => {
        const rules = (await (await fetch(`${api}/api/v1/rules`)).json()) as RulesResponse;
        return rules.data.groups.every((g) => g.rules.every((r) => !r.lastEvaluation.startsWith('0001')));
      },
      20000,
      250,
    );
    const rules = (await (await fetch(`${api}/api/v1/rules`)).json()) as RulesResponse;
    assert.deepEqual(
      rules.data.groups.map((g) => g.name),
      ['virtbus-bridge', 'virtbus-consumer'],
    );
    const loaded = rules.data.groups.flatMap((g) => g.rules);
    assert.equal(loaded.length, alertRules().length);
    for (const rule of loaded) assert.equal(rule.health, 'ok', `${rule.name}: ${rule.lastError ?? ''}`);
    const alerts = (await (await fetch(`${api}/api/v1/alerts`)).json()) as AlertsResponse;
    assert.deepEqual(
      alerts.data.alerts.map((a) => `${a.labels.alertname} ${a.state}`),
      [],
    );
  });

  it('every dashboard expression evaluates in Prometheus', async () => {
    let withData = 0;
    for (const { panel, expr } of dashboardExprs()) {
      const result = await query(expandGrafanaVariables(expr));
      assert.equal(result.status, 'success', `${panel}: ${expr}: ${result.error ?? ''}`);
      if (result.data.result.length > 0) withData += 1;
    }
    assert.ok(withData >= dashboardExprs().length / 2, `${withData} of ${dashboardExprs().length} have data`);
  });

  it('VirtbusLibvirtDown goes pending when libvirtd dies, and clears when the bridge reconnects', async () => {
    driverOpen = false;
    await driver.close();
    await libvirtd.kill();
    const pending = async (): Promise<string | undefined> => {
      const alerts = (await (await fetch(`${api}/api/v1/alerts`)).json()) as AlertsResponse;
      return alerts.data.alerts.find((a) => a.labels.alertname === 'VirtbusLibvirtDown')?.state;
    };
    await waitUntil('VirtbusLibvirtDown pending', async () => (await pending()) === 'pending', 20000, 250);
    const alerts = (await (await fetch(`${api}/api/v1/alerts`)).json()) as AlertsResponse;
    const alert = alerts.data.alerts.find((a) => a.labels.alertname === 'VirtbusLibvirtDown');
    assert.equal(alert?.labels.job, 'virtbus-bridge');
    assert.equal(alert?.labels.severity, 'critical');
    assert.equal(await value('virtbus_libvirt_up'), 0);
    await libvirtd.start();
    await waitUntil(
      'the bridge back on libvirt',
      async () => (await value('virtbus_libvirt_up')) === 1,
      30000,
      250,
    );
    await waitUntil('VirtbusLibvirtDown cleared', async () => (await pending()) === undefined, 20000, 250);
    assert.ok(((await value('sum(virtbus_libvirt_reconnects_total)')) ?? 0) >= 1);
    assert.ok(((await value('sum(virtbus_resyncs_total{reason="reconnect"})')) ?? 0) >= 1);
  });
});

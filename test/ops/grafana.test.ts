/**
 * deploy/grafana/virtbus.json (Grafana is not packaged by Debian, so checked structurally): a valid
 * dashboard on a Prometheus datasource variable, panels laid out without overlaps, and every PromQL
 * expression reading only metrics the code registers, grouped by labels those metrics carry. It
 * shows every virtbus metric the bridge and consumer register and everything the alerts watch.
 * (The live test evaluates each expression in a real Prometheus.)
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  alertRules,
  dashboard,
  dashboardExprs,
  promqlGroupingLabels,
  promqlMetricNames,
  registeredMetrics,
  TARGET_LABELS,
} from '../support/deploy';

/** A histogram is shown through its _bucket series; other metrics by name. */
function family(name: string, type: string): string {
  return type === 'histogram' ? `${name.replace(/_(bucket|sum|count)$/, '')}_bucket` : name;
}

describe('deploy/grafana/virtbus.json', () => {
  it('is a dashboard with a uid, a title and a Prometheus datasource variable every query uses', () => {
    const d = dashboard();
    assert.equal(d.uid, 'virtbus');
    assert.ok(d.title);
    assert.ok(d.schemaVersion >= 36, 'a current dashboard schema');
    const datasource = d.templating.list.find((v) => v.type === 'datasource');
    assert.equal(datasource?.name, 'datasource');
    assert.equal(datasource?.query, 'prometheus');
    for (const panel of d.panels) {
      if (panel.type === 'row') continue;
      assert.deepEqual(panel.datasource, { type: 'prometheus', uid: '${datasource}' }, panel.title);
      assert.ok((panel.targets ?? []).length > 0, `${panel.title}: queries`);
      for (const target of panel.targets ?? [])
        assert.deepEqual(target.datasource, { type: 'prometheus', uid: '${datasource}' }, panel.title);
    }
  });

  it('panels have unique ids, unique refIds, a description, and do not overlap on the 24-column grid', () => {
    const panels = dashboard().panels;
    assert.equal(new Set(panels.map((p) => p.id)).size, panels.length, 'unique panel ids');
    for (const panel of panels) {
      const { x, y, w, h } = panel.gridPos;
      assert.ok(x >= 0 && w > 0 && x + w <= 24 && y >= 0 && h > 0, `${panel.title}: gridPos inside the grid`);
      if (panel.type === 'row') continue;
      assert.ok(panel.description, `${panel.title}: a description`);
      const refIds = (panel.targets ?? []).map((t) => t.refId);
      assert.equal(new Set(refIds).size, refIds.length, `${panel.title}: unique refIds`);
    }
    for (const [i, a] of panels.entries()) {
      for (const b of panels.slice(i + 1)) {
        const overlap =
          a.gridPos.x < b.gridPos.x + b.gridPos.w &&
          b.gridPos.x < a.gridPos.x + a.gridPos.w &&
          a.gridPos.y < b.gridPos.y + b.gridPos.h &&
          b.gridPos.y < a.gridPos.y + a.gridPos.h;
        assert.ok(!overlap, `panels "${a.title}" and "${b.title}" overlap`);
      }
    }
  });

  it('every expression (and template variable query) reads only metrics the code registers, grouped by their labels', () => {
    const metrics = registeredMetrics();
    const variableQueries = dashboard()
      .templating.list.filter((v) => v.type === 'query')
      .map((v) => {
        const query = v.query as { query: string };
        const match = /^label_values\((.+),\s*(\w+)\)$/.exec(query.query);
        assert.ok(match, `variable ${v.name}: label_values(selector, label)`);
        return { panel: `variable ${v.name}`, expr: match[1]! };
      });
    for (const { panel, expr } of [...dashboardExprs(), ...variableQueries]) {
      const names = promqlMetricNames(expr);
      assert.ok(names.length > 0, `${panel}: ${expr} reads a metric`);
      for (const name of names)
        assert.ok(metrics.has(name), `${panel}: ${name} is not registered by src/bridge or src/consumer`);
      const labels = new Set(names.flatMap((name) => metrics.get(name)?.labels ?? []));
      for (const label of promqlGroupingLabels(expr))
        assert.ok(labels.has(label) || TARGET_LABELS.has(label), `${panel}: ${expr} groups by ${label}`);
      // job selectors name the scrape jobs of prometheus.yml and the Services of the ServiceMonitor
      for (const job of expr.matchAll(/job="([^"]+)"/g)) assert.match(job[1]!, /^virtbus-(bridge|consumer)$/);
    }
  });

  it('shows every virtbus metric the bridge and consumer register', () => {
    const shown = new Set(dashboardExprs().flatMap(({ expr }) => promqlMetricNames(expr)));
    const missing = [...registeredMetrics().values()]
      .filter((m) => m.name.startsWith('virtbus_'))
      .map((m) => family(m.name, m.type))
      .filter((name, i, all) => all.indexOf(name) === i && !shown.has(name));
    assert.deepEqual(missing, [], `add to deploy/grafana/virtbus.json: ${missing.join(', ')}`);
  });

  it('shows every metric the alerts watch', () => {
    const shown = new Set(dashboardExprs().flatMap(({ expr }) => promqlMetricNames(expr)));
    for (const rule of alertRules()) {
      for (const name of promqlMetricNames(rule.expr)) {
        if (name === 'up') continue;
        assert.ok(shown.has(name), `${rule.alert} watches ${name}; the dashboard does not show it`);
      }
    }
  });
});

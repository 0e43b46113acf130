/**
 * docs/operations.md stays true to the code and to deploy/: its metrics tables list every metric the
 * processes register, every VIRTBUS_* name it mentions is configuration, every deploy/ file it names
 * exists, and its runbook has exactly one entry per alert.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { alertRules, configEnvNames, registeredMetrics, REPO } from '../support/deploy';

const text = (): string => readFileSync(join(REPO, 'docs', 'operations.md'), 'utf8');

describe('docs/operations.md', () => {
  it('the metrics tables list every virtbus metric the bridge and consumer register, with its type', () => {
    const doc = text();
    for (const metric of registeredMetrics().values()) {
      if (!metric.name.startsWith('virtbus_')) continue;
      if (metric.type === 'histogram' && /_(bucket|sum|count)$/.test(metric.name)) continue;
      const row = new RegExp(`^\\| \`${metric.name}\`\\s*\\| ${metric.type}\\s*\\|`, 'm');
      assert.match(doc, row, `a table row for ${metric.name} (${metric.type})`);
    }
  });

  it('every VIRTBUS_* variable it mentions is configuration in src/config/schema.ts', () => {
    const names = configEnvNames();
    for (const match of text().matchAll(/\bVIRTBUS_[A-Z0-9_]+\b/g)) {
      if (match[0].endsWith('_')) continue; // "VIRTBUS_*"
      assert.ok(names.has(match[0]), `${match[0]} is not a configuration variable`);
    }
  });

  it('every deploy/ file it names exists', () => {
    for (const match of text().matchAll(/`(deploy\/[\w./-]+)`/g)) {
      assert.ok(existsSync(join(REPO, match[1]!)), `${match[1]} exists`);
    }
  });

  it('the runbook has one entry per alert, and no entry without an alert', () => {
    const headings = [...text().matchAll(/^### (Virtbus\w+)\s*$/gm)].map((m) => m[1]);
    assert.deepEqual(
      [...headings].sort(),
      alertRules()
        .map((rule) => rule.alert)
        .sort(),
    );
  });
});

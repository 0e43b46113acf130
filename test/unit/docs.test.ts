/** README, docs/ and config/ stay true to the code: generated tables are fresh, examples validate. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { configurationMarkdown, configurationTable } from '../../src/config/doc';
import { loadConfig, packageRoot, schemaLeaves } from '../../src/config/load';

const root = packageRoot();
/** Prettier pads tables; compare content, not alignment. */
const normalise = (text: string): string =>
  text
    .split('\n')
    .map((line) =>
      line.replace(/ +/g, ' ').replace(/-{3,}/g, '---').replace(/\| /g, '|').replace(/ \|/g, '|').trim(),
    )
    .join('\n')
    .replace(/\*secret\*/g, '_secret_');

describe('documentation and config files', () => {
  it('docs/configuration.md is generated from the current schema (run `npm run docs`)', () => {
    const doc = readFileSync(join(root, 'docs', 'configuration.md'), 'utf8');
    assert.equal(normalise(doc).trim(), normalise(configurationMarkdown()).trim());
  });

  it("README's configuration table is current (run `npm run docs`)", () => {
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    assert.ok(normalise(readme).includes(normalise(configurationTable())));
  });

  it('every example in config/ validates', () => {
    const dir = join(root, 'config', 'examples');
    const files = readdirSync(dir).filter((f) => f.endsWith('.json'));
    assert.ok(files.length >= 3);
    for (const file of [join(root, 'config', 'default.json'), ...files.map((f) => join(dir, f))]) {
      assert.doesNotThrow(() => loadConfig({ env: { VIRTBUS_CONFIG: file }, skipDefaultFile: true }), file);
    }
  });

  it('the contract environment names exist with their keys', () => {
    const byEnv = new Map(schemaLeaves().map(([key, leaf]) => [leaf.env, key]));
    const contract: Array<[string, string]> = [
      ['VIRTBUS_HOST', 'host'],
      ['VIRTBUS_LIBVIRT_URI', 'libvirt.uri'],
      ['VIRTBUS_AMQP_URL', 'amqp.url'],
      ['VIRTBUS_EXCHANGE', 'amqp.exchange'],
      ['VIRTBUS_STOP_DELAY_MS', 'bridge.stopDelayMs'],
      ['VIRTBUS_CONSUMER_QUEUE', 'consumer.queue'],
      ['VIRTBUS_DB_URL', 'db.url'],
      ['VIRTBUS_METRICS_HOST', 'metrics.host'],
      ['VIRTBUS_METRICS_PORT', 'metrics.port'],
      ['VIRTBUS_LOG_LEVEL', 'log.level'],
    ];
    for (const [env, key] of contract) assert.equal(byEnv.get(env), key, env);
    assert.equal(
      new Set(schemaLeaves().map(([, leaf]) => leaf.env)).size,
      schemaLeaves().length,
      'env names are unique',
    );
  });
});

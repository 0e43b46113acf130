/**
 * What `virtbus consumer` prints at start-up, as a person and as a log collector see it: on a
 * terminal (a pseudo-terminal from util-linux `script`) readable lines, on a pipe JSON lines,
 * `--log-format` forcing either; the configuration as one summary line at info, the full redacted
 * dump only at debug. The consumer points at a closed broker port, so it stays in its retry loop and
 * is stopped once the lines are in.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, it } from 'node:test';
import { VIRTBUS_BIN } from '../support/bridge-process';
import { tempSqliteUrl } from '../support/consumer';

/** The escape that starts a colour code. */
const ESC = String.fromCharCode(27);

const ENV = {
  VIRTBUS_AMQP_URL: 'amqp://virtbus:s3cret@127.0.0.1:1',
  VIRTBUS_DB_URL: tempSqliteUrl(),
  VIRTBUS_METRICS_PORT: '0',
};

/** Runs the command until `done(output)` holds (or 20 s), then SIGTERMs it; returns its stdout. */
function capture(
  command: string,
  args: readonly string[],
  done: (output: string) => boolean,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      env: { ...process.env, ...ENV, VIRTBUS_LOG_LEVEL: 'info', VIRTBUS_LOG_FORMAT: 'auto' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    const timer = setTimeout(() => child.kill('SIGTERM'), 20_000);
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (done(output)) child.kill('SIGTERM');
    });
    child.on('error', reject);
    child.on('close', () => {
      clearTimeout(timer);
      resolve(output);
    });
  });
}

/** The consumer under a pseudo-terminal: `script` gives it a TTY on stdout. */
function onTerminal(args: readonly string[]): Promise<string> {
  const line = [process.execPath, VIRTBUS_BIN, 'consumer', ...args].map((word) => `'${word}'`).join(' ');
  return capture('script', ['-qfec', line, '/dev/null'], (output) => /\[amqp\]|"module":"amqp"/.test(output));
}

function onPipe(args: readonly string[]): Promise<string> {
  return capture(process.execPath, [VIRTBUS_BIN, 'consumer', ...args], (output) =>
    output.split('\n').some((line) => /"module":"amqp"/.test(line)),
  );
}

function jsonLines(output: string): Array<Record<string, unknown>> {
  return output
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

describe('service log output', () => {
  it('prints readable lines on a terminal, the configuration as one summary line', async () => {
    const output = await onTerminal([]);
    assert.ok(output.includes(`${ESC}[32mINFO `), 'coloured on a terminal');
    const plain = output.replace(new RegExp(`${ESC}\\[\\d+m`, 'g'), '');
    const lines = plain.split(/\r?\n/).filter((line) => line.trim() !== '');
    const config = lines.filter((line) => line.includes('configuration'));
    assert.equal(config.length, 1, plain);
    assert.match(
      config[0] as string,
      /^\d\d:\d\d:\d\d\.\d{3} INFO {2}virtbus-consumer configuration role=consumer/,
    );
    assert.match(config[0] as string, /role=consumer/);
    assert.match(config[0] as string, /senders=strict/);
    assert.doesNotMatch(output, /s3cret/);
    assert.doesNotMatch(output, /^\{/m, 'no JSON line on a terminal');
  });

  it('prints JSON lines on a pipe, with no full configuration dump at info', async () => {
    const records = jsonLines(await onPipe([]));
    const config = records.filter((record) => record.msg === 'configuration');
    assert.equal(config.length, 1);
    assert.equal(config[0]?.role, 'consumer');
    assert.equal(config[0]?.config, undefined, 'the full dump is for debug');
    assert.doesNotMatch(JSON.stringify(records), /s3cret/);
  });

  it('--log-format json on a terminal gives JSON; at debug the full redacted dump follows', async () => {
    const output = await onTerminal(['--log-format', 'json', '--log-level', 'debug']);
    const records = jsonLines(output.replace(/\r/g, ''));
    const full = records.find((record) => record.msg === 'configuration in full');
    const config = full?.config as { consumer?: { queue?: string }; amqp?: { url?: string } } | undefined;
    assert.equal(config?.consumer?.queue, 'virtbus.consumer');
    assert.doesNotMatch(JSON.stringify(records), /s3cret/);
  });

  it('--log-format pretty on a pipe gives readable lines', async () => {
    const output = await capture(
      process.execPath,
      [VIRTBUS_BIN, 'consumer', '--log-format', 'pretty'],
      (text) => text.includes('[amqp]'),
    );
    assert.match(output, /INFO {2}virtbus-consumer configuration role=consumer/);
    assert.ok(!output.includes(ESC), 'no colours when stdout is not a terminal');
  });

  it('rejects an unknown format with exit 2 naming the key', async () => {
    const result = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [VIRTBUS_BIN, 'consumer', '--log-format', 'xml'], {
        env: { ...process.env, ...ENV },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      child.on('close', (code) => resolve({ code, stderr }));
    });
    assert.equal(result.code, 2);
    assert.match(result.stderr, /log\.format/);
  });
});

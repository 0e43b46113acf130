/**
 * What the bridge accepts as a command (src/bridge/commands/parse.ts) and what it remembers as
 * executed (replay-guard.ts): bodies are bounded before decoding, ids are UUIDs, nothing throws
 * whatever the body; only the trusted consumer's broker-verified user_id and this bridge's own host
 * pass; a command valid too far ahead is beyond the horizon; executed ids survive a restart in a
 * 0600 file and are forgotten once expired (issue 10, items 2-4).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import {
  MAX_COMMAND_BYTES,
  beyondHorizon,
  parseStopCommand,
  verifyCommand,
} from '../../src/bridge/commands/parse';
import { ReplayGuard } from '../../src/bridge/commands/replay-guard';
import { brokerUserOf } from '../../src/bridge/commands/identity';
import { COMMAND_SCHEMA, type StopCommand } from '../../src/messages/command';
import { isoMicros, nowMicros } from '../../src/util/time';

const ID = 'a1b2c3d4-0000-4000-8000-000000000001';
const body = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  schema: COMMAND_SCHEMA,
  command_id: ID,
  action: 'force_stop',
  host: 'cmp-01',
  instance_uuid: '0f1e2d3c-4b5a-4968-8776-655443322110',
  reason: 'test',
  issued_at: isoMicros(nowMicros()),
  expires_at: isoMicros(nowMicros() + 60_000_000),
  ...extra,
});
const parse = (value: unknown): StopCommand | string =>
  parseStopCommand(Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)));

describe('command parsing', () => {
  it('accepts a well-formed command', () => {
    const parsed = parse(body());
    assert.notEqual(typeof parsed, 'string', JSON.stringify(parsed));
  });

  it('refuses a body over the bound before decoding it', () => {
    const big = Buffer.alloc(MAX_COMMAND_BYTES + 1, 0x20);
    assert.match(JSON.stringify(parseStopCommand(big)), /exceeds/);
  });

  it('a command_id that is not a UUID (e.g. over 255 bytes, unpublishable as a message id) is refused', () => {
    assert.equal(parse(body({ command_id: 'c-1' })), 'command_id is not a UUID');
    assert.equal(parse(body({ command_id: 'x'.repeat(300) })), 'command_id is not a UUID');
  });

  it('never throws, whatever the body', () => {
    // Deeply nested values, written as text (JSON.stringify itself would overflow the stack).
    const deep = `${'['.repeat(7000)}${']'.repeat(7000)}`;
    const withField = (field: string): string =>
      JSON.stringify(body()).replace(/^\{/, `{"${field}":${deep},`).replace(`"${field}":"`, '"x":"');
    const inputs: unknown[] = [
      'not json',
      'null',
      '[]',
      '"x"',
      deep,
      withField('schema'),
      withField('action'),
      body({ host: 5 }),
      body({ only_if_power_states: Array.from({ length: 1000 }, () => 4) }),
      body({ expires_at: 'soon' }),
    ];
    for (const input of inputs) {
      let result: unknown;
      assert.doesNotThrow(() => {
        result = parseStopCommand(
          Buffer.from(typeof input === 'string' ? input : (JSON.stringify(input) ?? '')),
        );
      });
      assert.equal(typeof result, 'string', `refused: ${String(result).slice(0, 80)}`);
    }
  });
});

describe('command sender and target', () => {
  const command = parse(body()) as StopCommand;
  const trust = { host: 'cmp-01', trustedUser: 'virtbus-consumer' };

  it('the trusted consumer, for this host: executed', () => {
    assert.equal(verifyCommand(command, { userId: 'virtbus-consumer' }, trust), undefined);
  });

  it('no user_id, another user, or another host: not executed, with the reason', () => {
    assert.equal(verifyCommand(command, { userId: undefined }, trust)?.label, 'untrusted_sender');
    assert.match(
      verifyCommand(command, { userId: 'virtbus-bridge-cmp-02' }, trust)?.reason ?? '',
      /virtbus-bridge-cmp-02/,
    );
    const other = parse(body({ host: 'cmp-02' })) as StopCommand;
    assert.equal(verifyCommand(other, { userId: 'virtbus-consumer' }, trust)?.label, 'wrong_host');
  });

  it('the expiry horizon', () => {
    const now = nowMicros();
    const near = parse(body({ expires_at: isoMicros(now + 60_000_000) })) as StopCommand;
    const far = parse(body({ expires_at: isoMicros(now + 3_600_000_000) })) as StopCommand;
    assert.equal(beyondHorizon(near, 600_000, now), undefined);
    assert.match(beyondHorizon(far, 600_000, now) ?? '', /beyond bridge\.commands\.maxExpiryMs/);
  });

  it("the bridge's broker user for result user_ids", () => {
    assert.equal(brokerUserOf('amqp://virtbus-bridge-cmp-01:pw@h:5672/v', false), 'virtbus-bridge-cmp-01');
    assert.equal(brokerUserOf('amqp://h:5672/v', false), 'guest');
    assert.equal(brokerUserOf('amqps://h:5671/v', true), undefined);
    assert.equal(brokerUserOf('amqp://a%40b:pw@h1,amqp://a%40b:pw@h2', false), 'a@b');
  });
});

describe('executed command ids', () => {
  const logger = pino({ level: 'silent' });

  it('survive a restart in a 0600 file, and expired ones are forgotten', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'virtbus-replay-'));
    const file = join(dir, 'sub', 'executed-commands.jsonl');
    const first = new ReplayGuard({ file, maxEntries: 100, logger });
    await first.remember(ID, nowMicros() + 60_000_000);
    await first.remember('expiring', nowMicros() + 50_000);
    assert.ok(first.has(ID));
    await new Promise((resolve) => setTimeout(resolve, 100));
    const second = new ReplayGuard({ file, maxEntries: 100, logger });
    assert.ok(second.has(ID), 'remembered across a restart');
    assert.ok(!second.has('expiring'), 'forgotten after its expiry');
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.ok(!readFileSync(file, 'utf8').includes('expiring'), 'compacted on open');
  });

  it('a file created 0644 by an older version becomes 0600; a torn line is skipped', () => {
    const dir = mkdtempSync(join(tmpdir(), 'virtbus-replay-'));
    const file = join(dir, 'executed-commands.jsonl');
    writeFileSync(file, `${JSON.stringify({ id: ID, exp: nowMicros() + 60_000_000 })}\n{"id":"tor`, {
      mode: 0o644,
    });
    const guard = new ReplayGuard({ file, maxEntries: 100, logger });
    assert.ok(guard.has(ID));
    assert.equal(guard.size, 1);
    assert.equal(statSync(file).mode & 0o777, 0o600);
  });

  it('is bounded: the earliest-expiring id is forgotten first', async () => {
    const guard = new ReplayGuard({ maxEntries: 3, logger });
    const now = nowMicros();
    for (const [id, ahead] of [
      ['a', 10],
      ['b', 30],
      ['c', 20],
      ['d', 40],
    ] as const)
      await guard.remember(id, now + ahead * 1_000_000);
    assert.equal(guard.size, 3);
    assert.deepEqual(
      ['a', 'b', 'c', 'd'].map((id) => guard.has(id)),
      [false, true, true, true],
    );
  });
});

/**
 * The bridge's journal holds every lifecycle event not yet confirmed by the broker (guest names,
 * UUIDs, hosts): its segment, acks and lock files are created readable by their owner only (0600)
 * in a directory created 0700, whatever other users share the machine.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { JournalOutbox } from '../../src/bridge/journal-outbox';
import type { OutboxInput } from '../../src/bridge/outbox';

const root = mkdtempSync(join(tmpdir(), 'virtbus-modes-'));
after(() => rmSync(root, { recursive: true, force: true }));

const input = (n: number): OutboxInput => ({
  exchange: 'virtbus.lifecycle',
  routingKey: `h.t${n}`,
  messageId: `m${n}`,
  type: 'virtbus.lifecycle.v1',
  occurredMicros: n,
  transition: 'started',
  body: Buffer.from(`{"n":${n}}`),
});

function modes(dir: string): Map<string, number> {
  return new Map(readdirSync(dir).map((name) => [name, statSync(join(dir, name)).mode & 0o777]));
}

describe('journal file modes', () => {
  it('segments, acks and lock files are 0600, the directory 0700', async () => {
    const dir = join(root, 'outbox');
    const outbox = await JournalOutbox.open({ dir, fsyncIntervalMs: 0 });
    await outbox.append(Array.from({ length: 50 }, (_, index) => input(index + 1)));
    for (const record of outbox.readAfter(0, 100)) outbox.confirm(record.id);
    const open = modes(dir);
    await outbox.close();
    const closed = modes(dir);
    const all = new Map([...open, ...closed]);
    const names = [...all.keys()];
    assert.ok(
      names.some((name) => name.startsWith('seg-')),
      `a segment file (${names.join(', ')})`,
    );
    assert.ok(names.includes('acks.log'), `the acks file (${names.join(', ')})`);
    assert.ok(
      names.some((name) => /lock/.test(name)),
      `the lock file (${names.join(', ')})`,
    );
    for (const [name, mode] of all) assert.equal(mode, 0o600, `${name} is ${mode.toString(8)}`);
    assert.equal(statSync(dir).mode & 0o777, 0o700);
  });
});

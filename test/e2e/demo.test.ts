/** `virtbus demo` plays the whole story, exits 0 and leaves nothing running. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { VIRTBUS_BIN } from '../support/bridge-process';

describe('virtbus demo', () => {
  it('plays the story end to end and cleans up', async () => {
    const child = spawn(process.execPath, [VIRTBUS_BIN, 'demo', '--stop-delay-ms', '1500', '--no-color'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (out += chunk.toString()));
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, 0, out);
    for (const step of [
      '1. boot',
      '2. pause and resume',
      '3. reboot',
      "4. db-1 is destroyed behind the system's back",
      '5. batch-1 is started',
    ]) {
      assert.ok(out.includes(step), `step "${step}" shown`);
    }
    assert.match(
      out,
      /bus ▸ \S+ demo-host instance-00000002 stopped\s+STOPPED\/DESTROYED power=shutdown delayed=1\d{3}ms/,
    );
    assert.match(out, /cmd ▸ demo-host\.stop force_stop 33333333/);
    assert.match(out, /cmd ◂ demo-host\.stop_result stopped via (shutdown|destroy), power_state 4/);
    assert.match(out, /instance-00000002\s+db-1\s+stopped\s+-\s+4 shutdown/);
    assert.match(out, /instance-00000003\s+batch-1\s+stopped\s+-\s+4 shutdown\s+force_stop_completed/);
    assert.match(out, /virsh domstate instance-00000003\s+→\s+shut off/);
    assert.match(out, /virtbus_native_queue_depth = 0/);
    assert.ok(!/bus ▸ .*instance-00000001 stopped/.test(out), 'the reboot published no stopped');
    assert.match(out, /removed everything the demo started/);
    const dir = /sandbox directory (\S+);/.exec(out)?.[1];
    assert.ok(dir && !existsSync(dir), 'the sandbox directory is gone');
  });
});

/**
 * Exit and teardown behaviour, in child processes: the environment cleanup hook must stop and
 * join the loop thread so exits are clean and keep their exit code.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';

const FIXTURE = join(__dirname, '..', 'fixtures', 'native', 'lifecycle-child.js');

interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

function runChild(mode: string, extraArgs: string[] = [], timeoutMs = 20_000): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const child = spawn(process.execPath, [...extraArgs, FIXTURE, mode], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`child '${mode}' hung for ${timeoutMs} ms; stderr: ${stderr}`));
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started });
    });
  });
}

void describe('native addon in child processes', () => {
  void it('exits by itself with code 0 while the loop runs and a connection is open', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await runChild('exit-natural');
      assert.deepEqual(
        { code: r.code, signal: r.signal, stderr: r.stderr },
        { code: 0, signal: null, stderr: '' },
      );
    }
  });

  void it('keeps the exit code of process.exit(3) with the loop running', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await runChild('exit-code');
      assert.deepEqual(
        { code: r.code, signal: r.signal, stderr: r.stderr },
        { code: 3, signal: null, stderr: '' },
      );
    }
  });

  void it('exits with code 1 on an uncaught exception with the loop running', async () => {
    const r = await runChild('exit-throw');
    assert.equal(r.signal, null);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /fixture: uncaught/);
  });

  void it('exits cleanly after stopEventLoop', async () => {
    const r = await runChild('exit-stopped');
    assert.deepEqual(
      { code: r.code, signal: r.signal, stderr: r.stderr },
      { code: 0, signal: null, stderr: '' },
    );
  });

  void it('survives global.gc() after dropping connections', async () => {
    const r = await runChild('gc', ['--expose-gc']);
    assert.deepEqual(
      { code: r.code, signal: r.signal, stderr: r.stderr },
      { code: 0, signal: null, stderr: '' },
    );
    // Only the live connection still receives events: the 20 collected ones were closed.
    assert.match(r.stdout, /gc-ok receivers=1\n/);
  });

  void it('turns an exception thrown by onWake into an uncaught exception', async () => {
    const r = await runChild('onwake-throws');
    assert.equal(r.signal, null);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /fixture: onWake threw/);
  });

  void it('exits with code 0 while an injector thread is waiting for room', async () => {
    const r = await runChild('exit-injecting');
    assert.deepEqual(
      { code: r.code, signal: r.signal, stderr: r.stderr },
      { code: 0, signal: null, stderr: '' },
    );
  });

  void it('tears down cleanly in a terminated worker thread', async () => {
    const r = await runChild('worker');
    assert.deepEqual(
      { code: r.code, signal: r.signal, stderr: r.stderr },
      { code: 0, signal: null, stderr: '' },
    );
    assert.match(r.stdout, /worker-ok/);
  });
});

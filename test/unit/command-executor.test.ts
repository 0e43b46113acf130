/**
 * The libvirt side of stop commands (src/bridge/commands/executor.ts) against a fake connection, for
 * the states the test driver cannot produce: a guest still shutting down (libvirt SHUTDOWN) or crashed
 * with its qemu alive (CRASHED) must end destroyed as Nova's power_off does (_clean_shutdown returns
 * at once for SHUTDOWN_STATES, then _destroy always runs); only a domain really SHUTOFF is
 * already_stopped; a domain this host does not have is not_found; a result that did not read libvirt
 * carries power_state null.
 */
import { libvirtError } from '../support/commands';
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { stopDomain, type StopDomainOptions } from '../../src/bridge/commands/executor';
import type { NativeConnection } from '../../src/native/contract';
import { COMMAND_SCHEMA, type CommandAction, type StopCommand } from '../../src/messages/command';
import { isoMicros, nowMicros } from '../../src/util/time';

const UUID = '0f1e2d3c-4b5a-4968-8776-655443322110';
const S = { RUNNING: 1, PAUSED: 3, SHUTDOWN: 4, SHUTOFF: 5, CRASHED: 6 } as const;

const noDomain = (): Error => libvirtError(42, 'Domain not found');

/** A domain whose libvirt state the test scripts; records what the executor asked of it. */
class FakeDomain {
  calls: string[] = [];
  /** null: the domain does not exist on this host. */
  constructor(
    public state: number | null,
    /** What a graceful shutdown request does: the state it moves to (undefined: ignored). */
    private readonly onShutdown?: number | null,
  ) {}
  readonly connection = {
    domainState: (uuid: string) => {
      assert.equal(uuid, UUID);
      if (this.state === null) return Promise.reject(noDomain());
      return Promise.resolve({ state: this.state, reason: 0 });
    },
    shutdown: () => {
      this.calls.push('shutdown');
      if (this.state === null) return Promise.reject(noDomain());
      if (this.onShutdown !== undefined) this.state = this.onShutdown;
      return Promise.resolve();
    },
    destroy: () => {
      this.calls.push('destroy');
      if (this.state === null) return Promise.reject(noDomain());
      if (this.state === S.SHUTOFF) return Promise.reject(libvirtError(55, 'domain is not running'));
      this.state = S.SHUTOFF;
      return Promise.resolve();
    },
  } as unknown as NativeConnection;
}

function command(action: CommandAction, extra: Partial<StopCommand> = {}): StopCommand {
  return {
    schema: COMMAND_SCHEMA,
    command_id: '11111111-2222-4333-8444-555555555555',
    action,
    host: 'cmp-01',
    instance_uuid: UUID,
    reason: 'test',
    issued_at: isoMicros(nowMicros()),
    expires_at: isoMicros(nowMicros() + 60_000_000),
    ...extra,
  };
}

function options(domain: FakeDomain | undefined, extra: Partial<StopDomainOptions> = {}): StopDomainOptions {
  return {
    enabled: true,
    gracefulTimeoutMs: 200,
    destroyOnTimeout: true,
    pollMs: 10,
    connection: () => domain?.connection,
    logger: pino({ level: 'silent' }),
    ...extra,
  };
}

describe('stop command against libvirt (Nova power_off)', () => {
  for (const action of ['stop', 'force_stop'] as const) {
    it(`${action} of a guest still shutting down (libvirt SHUTDOWN) destroys it without a new shutdown request`, async () => {
      const domain = new FakeDomain(S.SHUTDOWN);
      const result = await stopDomain(command(action), options(domain));
      assert.deepEqual(domain.calls, ['destroy']);
      assert.equal(domain.state, S.SHUTOFF, 'the qemu process is gone');
      assert.deepEqual(result, { outcome: 'stopped', method: 'destroy', power_state: 4, error: null });
    });

    it(`${action} of a crashed guest whose qemu is alive (libvirt CRASHED) destroys it`, async () => {
      const domain = new FakeDomain(S.CRASHED);
      const result = await stopDomain(command(action), options(domain));
      assert.deepEqual(domain.calls, ['destroy']);
      assert.equal(result.outcome, 'stopped');
      assert.equal(result.method, 'destroy');
      assert.equal(result.power_state, 4);
    });

    it(`${action} of a domain really shut off (SHUTOFF) is already_stopped and touches nothing`, async () => {
      const domain = new FakeDomain(S.SHUTOFF);
      const result = await stopDomain(command(action), options(domain));
      assert.deepEqual(domain.calls, []);
      assert.deepEqual(result, { outcome: 'already_stopped', method: 'none', power_state: 4, error: null });
    });

    it(`${action} of a domain this host does not have is not_found with power_state null`, async () => {
      const domain = new FakeDomain(null);
      const result = await stopDomain(command(action), options(domain));
      assert.deepEqual(domain.calls, []);
      assert.equal(result.outcome, 'not_found');
      assert.equal(result.power_state, null);
      assert.notEqual(result.outcome, 'already_stopped');
    });
  }

  it('the 4b guard [4, 6] lets a crashed guest through and destroys it', async () => {
    const domain = new FakeDomain(S.CRASHED);
    const result = await stopDomain(command('stop', { only_if_power_states: [4, 6] }), options(domain));
    assert.deepEqual(domain.calls, ['destroy']);
    assert.equal(result.outcome, 'stopped');
  });

  it('the 4b guard skips a guest that is running again, reading its live power_state', async () => {
    const domain = new FakeDomain(S.RUNNING);
    const result = await stopDomain(command('stop', { only_if_power_states: [4, 6] }), options(domain));
    assert.deepEqual(domain.calls, []);
    assert.deepEqual(result, { outcome: 'skipped', method: 'none', power_state: 1, error: null });
  });

  it('a running guest that shuts down cleanly: stopped by shutdown, no destroy', async () => {
    const domain = new FakeDomain(S.RUNNING, S.SHUTOFF);
    const result = await stopDomain(command('stop'), options(domain));
    assert.deepEqual(domain.calls, ['shutdown']);
    assert.deepEqual(result, { outcome: 'stopped', method: 'shutdown', power_state: 4, error: null });
  });

  it('a running guest that stays in SHUTDOWN after the request is destroyed (Nova: SHUTDOWN ends _clean_shutdown, then _destroy)', async () => {
    const domain = new FakeDomain(S.RUNNING, S.SHUTDOWN);
    const result = await stopDomain(command('stop'), options(domain, { gracefulTimeoutMs: 5000 }));
    assert.deepEqual(domain.calls, ['shutdown', 'destroy']);
    assert.equal(domain.state, S.SHUTOFF);
    assert.equal(result.method, 'destroy');
  });

  it('with the default destroyOnTimeout a stop that the guest ignores ends destroyed', async () => {
    const domain = new FakeDomain(S.RUNNING);
    const result = await stopDomain(command('stop'), options(domain));
    assert.deepEqual(domain.calls, ['shutdown', 'destroy']);
    assert.deepEqual(result, { outcome: 'stopped', method: 'destroy', power_state: 4, error: null });
  });

  it('destroyOnTimeout=false: a stop never destroys, not even a crashed guest; the failure is reported', async () => {
    for (const start of [S.RUNNING, S.CRASHED]) {
      const domain = new FakeDomain(start);
      const result = await stopDomain(command('stop'), options(domain, { destroyOnTimeout: false }));
      assert.ok(!domain.calls.includes('destroy'), `no destroy from ${start}`);
      assert.equal(result.outcome, 'failed');
      assert.equal(result.power_state, start === S.CRASHED ? 6 : 1);
    }
  });

  it('a transient guest that vanishes during its clean shutdown is stopped (NOSTATE)', async () => {
    const domain = new FakeDomain(S.RUNNING, null);
    const result = await stopDomain(command('stop'), options(domain));
    assert.deepEqual(domain.calls, ['shutdown']);
    assert.deepEqual(result, { outcome: 'stopped', method: 'shutdown', power_state: 0, error: null });
  });

  it('results that did not read libvirt carry power_state null', async () => {
    const domain = new FakeDomain(S.RUNNING);
    const expired = await stopDomain(
      command('stop', { expires_at: isoMicros(nowMicros() - 1_000_000) }),
      options(domain),
    );
    const refused = await stopDomain(command('stop'), options(domain, { enabled: false }));
    const disconnected = await stopDomain(command('stop'), options(undefined));
    assert.deepEqual(
      [expired, refused, disconnected].map((r) => [r.outcome, r.power_state]),
      [
        ['expired', null],
        ['refused', null],
        ['failed', null],
      ],
    );
    assert.deepEqual(domain.calls, []);
  });

  it('a libvirt failure reading the state reports failed with power_state null', async () => {
    const broken = {
      domainState: () => Promise.reject(libvirtError(1, 'internal error')),
    } as unknown as NativeConnection;
    const result = await stopDomain(command('force_stop'), options(undefined, { connection: () => broken }));
    assert.equal(result.outcome, 'failed');
    assert.equal(result.power_state, null);
    assert.match(result.error ?? '', /internal error/);
  });
});

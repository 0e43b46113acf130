import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BINDING_FUNCTIONS,
  CONNECTION_METHODS,
  NOT_BUILT_MESSAGE,
  VIR_ERR_NO_DOMAIN,
  VIR_ERR_OPERATION_INVALID,
  isLibvirtError,
  loadNativeBinding,
} from '../../src/native/binding';
import type { NativeBinding } from '../../src/native/contract';
import { NO_KEEPALIVE, TEST_URI } from '../support/native-collector';

void describe('native contract', () => {
  const binding = loadNativeBinding();

  void it('loads once and caches the binding', () => {
    assert.equal(loadNativeBinding(), binding);
  });

  void it('exports every NativeBinding function', () => {
    for (const name of BINDING_FUNCTIONS) assert.equal(typeof binding[name], 'function', name);
    const exported = Object.keys(binding).sort();
    assert.deepEqual(exported, [...BINDING_FUNCTIONS].sort());
  });

  void it('gives a NativeConnection every method of the contract and a numeric id', async () => {
    const conn = await binding.openConnection(TEST_URI, NO_KEEPALIVE);
    try {
      for (const name of CONNECTION_METHODS) assert.equal(typeof conn[name], 'function', name);
      assert.equal(typeof conn.id, 'number');
      assert.ok(conn.id > 0);
      assert.throws(() => {
        (conn as unknown as { id: number }).id = 99;
      }, TypeError);
    } finally {
      await conn.close();
    }
  });

  void it('refuses to construct a NativeConnection from JavaScript', async () => {
    const conn = await binding.openConnection(TEST_URI, NO_KEEPALIVE);
    await conn.close();
    const Ctor = conn.constructor as new (...args: unknown[]) => unknown;
    assert.throws(() => new Ctor(), /created by openConnection\(\) only/);
    assert.throws(() => new Ctor({}), TypeError);
  });

  void it('validates arguments with TypeError/RangeError', async () => {
    assert.throws(() => binding.startEventLoop(undefined as unknown as () => void), TypeError);
    assert.throws(() => binding.drain(-1), RangeError);
    assert.throws(() => binding.drain(1.5), RangeError);
    assert.throws(() => binding.setQueueCapacity(0), RangeError);
    assert.throws(() => binding.setQueueCapacity(2.5), RangeError);
    assert.throws(() => binding.injectSyntheticEvents(-1, 1), RangeError);
    assert.throws(() => binding.injectSyntheticEvents(1, 0), RangeError);
    assert.throws(() => binding.openConnection(42 as unknown as string, NO_KEEPALIVE), TypeError);
    assert.throws(
      () => binding.openConnection(TEST_URI, { readOnly: 'no' } as unknown as typeof NO_KEEPALIVE),
      TypeError,
    );
    const conn = await binding.openConnection(TEST_URI, NO_KEEPALIVE);
    try {
      assert.throws(() => conn.domainState(7 as unknown as string), TypeError);
      assert.throws(() => conn.domainStates(['a', 1] as unknown as string[]), TypeError);
    } finally {
      await conn.close();
    }
  });

  void it('reports a missing addon with the build hint', () => {
    const missing = join(tmpdir(), 'virtbus-no-such-addon', 'virtbus_native.node');
    assert.throws(
      () => loadNativeBinding(missing),
      (e: unknown) => {
        assert.ok(e instanceof Error);
        assert.ok(e.message.startsWith(NOT_BUILT_MESSAGE), e.message);
        return true;
      },
    );
  });

  void it('accepts a ready-made binding and rejects an incomplete one', () => {
    const fake: NativeBinding = { ...binding };
    assert.equal(loadNativeBinding(fake), fake);
    const broken = { ...binding, drain: undefined } as unknown as NativeBinding;
    assert.throws(() => loadNativeBinding(broken), /missing drain/);
  });

  void it('exports the libvirt error numbers and a type guard', () => {
    assert.equal(VIR_ERR_NO_DOMAIN, 42);
    assert.equal(VIR_ERR_OPERATION_INVALID, 55);
    const e = Object.assign(new Error('x'), {
      name: 'LibvirtError',
      libvirtCode: 42,
      libvirtDomain: 12,
      libvirtLevel: 2,
    });
    assert.equal(isLibvirtError(e), true);
    assert.equal(isLibvirtError(new Error('x')), false);
    assert.equal(
      isLibvirtError({ name: 'LibvirtError', libvirtCode: 42, libvirtDomain: 1, libvirtLevel: 2 }),
      false,
    );
    assert.equal(isLibvirtError(Object.assign(new Error('x'), { name: 'LibvirtError' })), false);
  });
});

/**
 * The FlavorPayload built from a row's attributes (src/notify/flavor.ts): Nova's API and database
 * forms, the instance's own flavor columns, a bare name, and garbage, always with FlavorPayload's
 * field types (the field-by-field check against Nova's own objects is test/consumer/nova-objects).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { flavorPayload, flavorPayloadData } from '../../src/notify/flavor';

const FIELDS = [
  'flavorid',
  'memory_mb',
  'vcpus',
  'root_gb',
  'ephemeral_gb',
  'name',
  'swap',
  'rxtx_factor',
  'vcpu_weight',
  'disabled',
  'is_public',
  'extra_specs',
  'projects',
  'description',
];

describe('FlavorPayload from row attributes', () => {
  it('without attributes: nullable members null, the others Nova’s defaults', () => {
    assert.deepEqual(flavorPayload({}), {
      'nova_object.name': 'FlavorPayload',
      'nova_object.namespace': 'nova',
      'nova_object.version': '1.4',
      'nova_object.data': {
        flavorid: null,
        memory_mb: null,
        vcpus: null,
        root_gb: null,
        ephemeral_gb: null,
        name: '',
        swap: 0,
        rxtx_factor: null,
        vcpu_weight: null,
        disabled: false,
        is_public: true,
        extra_specs: null,
        projects: null,
        description: null,
      },
    });
  });

  it("Nova's API form (openstack server show): ram, disk, the extension keys, swap ''", () => {
    const data = flavorPayloadData({
      flavor: {
        id: 'a22d5517',
        name: 'm1.small',
        ram: 2048,
        vcpus: 1,
        disk: 20,
        'OS-FLV-EXT-DATA:ephemeral': 5,
        swap: '',
        rxtx_factor: 1.0,
        'os-flavor-access:is_public': false,
        'OS-FLV-DISABLED:disabled': true,
        extra_specs: { 'hw:cpu_policy': 'dedicated', 'quota:cpu_shares': 1024 },
        description: 'small',
      },
    });
    assert.deepEqual(data, {
      flavorid: 'a22d5517',
      memory_mb: 2048,
      vcpus: 1,
      root_gb: 20,
      ephemeral_gb: 5,
      name: 'm1.small',
      swap: 0,
      rxtx_factor: 1,
      vcpu_weight: null,
      disabled: true,
      is_public: false,
      extra_specs: { 'hw:cpu_policy': 'dedicated', 'quota:cpu_shares': '1024' },
      projects: null,
      description: 'small',
    });
  });

  it('a FlavorPayload primitive is taken as it is, member by member', () => {
    const data = flavorPayloadData({
      flavor: {
        'nova_object.name': 'FlavorPayload',
        'nova_object.data': { flavorid: '42', name: 'x', memory_mb: 64, swap: 128, projects: ['p1'] },
      },
    });
    assert.equal(data.flavorid, '42');
    assert.equal(data.memory_mb, 64);
    assert.equal(data.swap, 128);
    assert.deepEqual(data.projects, ['p1']);
  });

  it("a flavor name with the instance's own columns", () => {
    const data = flavorPayloadData({ flavor: 'm1.tiny', memory_mb: 512, vcpus: '2', root_gb: 1 });
    assert.equal(data.name, 'm1.tiny');
    assert.equal(data.memory_mb, 512);
    assert.equal(data.vcpus, 2, 'an integer string, as Nova coerces');
    assert.equal(data.root_gb, 1);
    assert.equal(data.flavorid, null);
  });

  it('garbage never throws and never breaks a field type', () => {
    const garbage: unknown[] = [
      null,
      7,
      true,
      [],
      ['x'],
      { name: 5 },
      { ram: 1.5, vcpus: 'many' },
      { extra_specs: { a: {} } },
    ];
    for (const flavor of garbage) {
      const data = flavorPayloadData({ flavor }) as unknown as Record<string, unknown>;
      assert.deepEqual(Object.keys(data), FIELDS);
      assert.equal(typeof data.name, 'string');
      assert.equal(typeof data.swap, 'number');
      assert.equal(typeof data.disabled, 'boolean');
      assert.equal(typeof data.is_public, 'boolean');
      for (const key of ['memory_mb', 'vcpus', 'root_gb', 'ephemeral_gb', 'vcpu_weight'])
        assert.ok(data[key] === null || Number.isInteger(data[key]), `${key} of ${JSON.stringify(flavor)}`);
    }
    assert.equal(flavorPayloadData({ flavor: { name: 5 } }).name, '5', 'StringField coerces numbers');
    assert.equal(flavorPayloadData({ flavor: { extra_specs: { a: {} } } }).extra_specs, null);
  });
});

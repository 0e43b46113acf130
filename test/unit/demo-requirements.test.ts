import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { describeMissing, missingForDemo } from '../../src/demo/requirements';

describe('virtbus demo: what it needs beyond virtbus', () => {
  it('finds nothing missing on a machine set up for the tests (setup.sh installs every piece)', () => {
    assert.deepEqual(missingForDemo('test'), []);
    assert.deepEqual(missingForDemo('qemu'), []);
  });

  it('names every missing piece at once and one apt-get line for them all', () => {
    const message = describeMissing([
      { what: 'libvirtd', paths: [], debianPackage: 'libvirt-daemon' },
      { what: 'virsh', paths: [], debianPackage: 'libvirt-clients' },
      { what: 'rabbitmq-server', paths: [], debianPackage: 'rabbitmq-server' },
    ]);
    assert.match(
      message,
      /libvirtd is not installed; virsh is not installed; rabbitmq-server is not installed/,
    );
    assert.match(message, /apt-get install libvirt-daemon libvirt-clients rabbitmq-server /);
  });
});

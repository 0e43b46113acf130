/**
 * The real-hypervisor sandbox itself (src/sandbox/qemu-host.ts): a TCG guest boots under a private
 * qemu libvirtd, takes an order over its control channel and acts on it itself, and survives a
 * daemon kill + restart (the daemon finds its running guest again). Every other test in test/qemu
 * relies on these three facts, so they fail here first, with the console in the message.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { startQemuHost } from '../../src/sandbox';

describe('qemu sandbox: a real TCG guest under a private libvirtd', async () => {
  const host = await startQemuHost({ name: 'smoke' });
  after(() => host.dispose());
  const guest = await host.defineGuest({ name: 'smoke-1' });

  it('boots a guest whose init announces itself on the console', async () => {
    await guest.start();
    await guest.waitBooted();
    assert.equal(await guest.state(), 'running');
    assert.match(await host.virsh('domuuid', guest.name), new RegExp(guest.uuid));
  });

  it('makes the guest reboot itself over the control channel', async () => {
    const before = guest.console().split('VIRTBUS-GUEST-READY').length;
    await guest.order('reboot');
    await guest.waitBooted();
    assert.equal(
      guest.console().split('VIRTBUS-GUEST-READY').length,
      before + 1,
      guest.console().slice(-500),
    );
    assert.equal(await guest.state(), 'running');
  });

  it('keeps the guest running across a daemon kill and restart', async () => {
    await host.kill();
    assert.equal(host.running(), false);
    await host.start();
    assert.equal(await guest.state(), 'running');
    await guest.order('poweroff');
    await guest.waitState('shut off');
  });
});

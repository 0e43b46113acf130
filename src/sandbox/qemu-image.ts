/**
 * The guest image the real-hypervisor sandbox boots: a Debian kernel and a busybox initramfs built by
 * scripts/build-guest.sh at set-up and cached outside the repository (the kernel package alone is
 * ~70 MB). This module only finds it, building it on first use when set-up has not, so a test file run
 * alone on a machine that ran `npm run setup` never downloads anything.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { runChecked } from './exec';

export interface GuestImage {
  /** The kernel (`<os><kernel>`). */
  readonly kernel: string;
  /** The busybox initramfs whose init takes orders on ttyS1 (`<os><initrd>`). */
  readonly initrd: string;
}

/** Where the builder caches the image: VIRTBUS_GUEST_CACHE or /var/cache/virtbus/guest. */
export function guestCacheRoot(): string {
  return process.env.VIRTBUS_GUEST_CACHE ?? '/var/cache/virtbus/guest';
}

/** scripts/build-guest.sh, from src/sandbox or dist/src/sandbox. */
const BUILDER = existsSync(resolve(__dirname, '..', '..', 'scripts', 'build-guest.sh'))
  ? resolve(__dirname, '..', '..', 'scripts', 'build-guest.sh')
  : resolve(__dirname, '..', '..', '..', 'scripts', 'build-guest.sh');

let pending: Promise<GuestImage> | undefined;

/** The cached guest image, built once (per process) when missing; the builder is idempotent. */
export function ensureGuestImage(): Promise<GuestImage> {
  pending ??= (async () => {
    const dir = (await runChecked('bash', [BUILDER, guestCacheRoot()])).trim().split('\n').pop() ?? '';
    const image = { kernel: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd.img') };
    if (!existsSync(image.kernel) || !existsSync(image.initrd))
      throw new Error(`scripts/build-guest.sh did not produce a guest image under ${dir}`);
    return image;
  })();
  pending.catch(() => (pending = undefined));
  return pending;
}

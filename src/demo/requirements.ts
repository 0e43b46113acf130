/**
 * What `virtbus demo` needs beyond virtbus itself — the services it starts privately — checked all
 * at once before anything starts, so an operator who installed the package (where these are only
 * Suggests) gets one message naming every missing piece and the one apt-get line that adds them.
 */
import { existsSync } from 'node:fs';

interface Requirement {
  readonly what: string;
  /** Present when any of these paths exists. */
  readonly paths: readonly string[];
  readonly debianPackage: string;
}

const COMMON: readonly Requirement[] = [
  { what: 'libvirtd', paths: ['/usr/sbin/libvirtd'], debianPackage: 'libvirt-daemon' },
  { what: 'virsh', paths: ['/usr/bin/virsh'], debianPackage: 'libvirt-clients' },
  { what: 'rabbitmq-server', paths: ['/usr/sbin/rabbitmq-server'], debianPackage: 'rabbitmq-server' },
];

const QEMU: readonly Requirement[] = [
  { what: 'qemu-system-x86_64', paths: ['/usr/bin/qemu-system-x86_64'], debianPackage: 'qemu-system-x86' },
  {
    what: "libvirt's QEMU driver",
    paths: ['/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so'],
    debianPackage: 'libvirt-daemon-driver-qemu',
  },
  { what: 'busybox (static)', paths: ['/bin/busybox', '/usr/bin/busybox'], debianPackage: 'busybox-static' },
  { what: 'cpio', paths: ['/usr/bin/cpio', '/bin/cpio'], debianPackage: 'cpio' },
];

/** The demo's missing pieces for this hypervisor, or an empty list. */
export function missingForDemo(hypervisor: 'test' | 'qemu'): Requirement[] {
  const needed = hypervisor === 'qemu' ? [...COMMON, ...QEMU] : COMMON;
  return needed.filter((requirement) => !requirement.paths.some((path) => existsSync(path)));
}

/** One message naming every missing piece and the apt-get line that installs them all. */
export function describeMissing(missing: readonly Requirement[]): string {
  const names = missing.map((requirement) => `${requirement.what} is not installed`).join('; ');
  const packages = [...new Set(missing.map((requirement) => requirement.debianPackage))].join(' ');
  return (
    `virtbus demo: ${names}. Install them with: apt-get install ${packages}` +
    ' (from a source checkout, `npm run setup` installs everything the demo and the tests need)'
  );
}

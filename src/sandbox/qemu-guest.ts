/**
 * One real QEMU guest (TCG) of a sandboxed qemu host (./qemu-host.ts): its domain XML, its console
 * (a file the host reads), and the control channel that makes the GUEST itself act — reboot, power
 * off, panic or suspend to RAM — which is how a test produces the transitions libvirt's test driver
 * cannot (REBOOT, guest SHUTDOWN, CRASHED, PMSUSPENDED).
 *
 * Control protocol (guest side in scripts/build-guest.sh): the host writes `"\nORDER NONCE\n"` to the
 * guest's second serial port (a unix socket qemu binds); the guest's init echoes
 * `VIRTBUS-ORDER ORDER NONCE` on its console BEFORE it acts, so the host knows the order arrived and
 * resends it (same nonce) when it did not. The init prints `VIRTBUS-GUEST-READY` once per boot.
 * A guest that will migrate must be defined with `control: false`: the bound socket path would
 * clash on the destination (both daemons see the same /tmp); its console is an append-mode file.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { waitUntil } from './exec';
import type { GuestImage } from './qemu-image';

/** ignore-acpi: the guest stops reacting to the ACPI power button (`virsh shutdown` then does nothing). */
export type GuestOrder = 'reboot' | 'poweroff' | 'panic' | 'suspend' | 'ignore-acpi';

export interface QemuGuestOptions {
  readonly name: string;
  /** Domain UUID (random when absent). */
  readonly uuid?: string;
  /** `<on_crash>`: what libvirt does when the guest panics. Default 'destroy'. */
  readonly onCrash?: 'destroy' | 'preserve';
  /** The ttyS1 control channel (bound unix socket). Default true; false for guests that migrate. */
  readonly control?: boolean;
  /** `virsh define` (default) rather than a transient `virsh create` at start(). */
  readonly persistent?: boolean;
  /** Guest memory in MiB (default 128). */
  readonly memoryMiB?: number;
}

export interface QemuGuest {
  readonly name: string;
  readonly uuid: string;
  /** True once defined (persistent: true, or after makePersistent()). */
  readonly persistent: boolean;
  readonly control: boolean;
  /** The console file (ttyS0). */
  readonly consolePath: string;
  /** The domain XML as defined. */
  readonly xml: string;
  /** `virsh start` (persistent) or `virsh create` (transient); marks a boot for waitBooted(). */
  start(): Promise<void>;
  /**
   * Resolves once the guest's init announced itself after the last boot mark (start(), or an order
   * 'reboot'; call markBoot() before a reboot the test causes by other means, e.g. `virsh reboot`).
   */
  waitBooted(timeoutMs?: number): Promise<void>;
  markBoot(): void;
  /**
   * `virsh define` of a guest created transient and now running: it becomes persistent (managedsave
   * needs that) without ever having existed shut off, which a snapshot would report.
   */
  makePersistent(): Promise<void>;
  /** Makes the guest act by itself; resolves once the guest confirmed the order (before it acts). */
  order(order: GuestOrder, timeoutMs?: number): Promise<void>;
  /** `virsh domstate` of this guest on its host, e.g. 'running', 'shut off', 'crashed', 'pmsuspended'. */
  state(): Promise<string>;
  waitState(state: string, timeoutMs?: number): Promise<void>;
  /** The console text so far (for diagnostics). */
  console(): string;
  /** Closes the control connection (the host's dispose() does it for every guest). */
  close(): void;
}

/** What the guest needs from its host: a virsh against it and the directory for its files. */
export interface GuestHostAccess {
  readonly dir: string;
  virsh(...args: string[]): Promise<string>;
}

const READY = 'VIRTBUS-GUEST-READY';

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/'/g, '&apos;');
}

/** The domain XML: TCG, ACPI (virsh shutdown), S3 allowed, an ISA pvpanic device, serial console. */
export function guestXml(
  options: QemuGuestOptions & { uuid: string; consolePath: string; controlPath?: string },
  image: GuestImage,
): string {
  const control =
    options.controlPath === undefined
      ? ''
      : `    <serial type='unix'><source mode='bind' path='${escapeXml(options.controlPath)}'/><target port='1'/></serial>\n`;
  return `<domain type='qemu'>
  <name>${escapeXml(options.name)}</name>
  <uuid>${options.uuid}</uuid>
  <memory unit='MiB'>${options.memoryMiB ?? 128}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${escapeXml(image.kernel)}</kernel>
    <initrd>${escapeXml(image.initrd)}</initrd>
    <cmdline>console=ttyS0 quiet panic=0</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>${options.onCrash ?? 'destroy'}</on_crash>
  <pm><suspend-to-mem enabled='yes'/><suspend-to-disk enabled='no'/></pm>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='file'><source path='${escapeXml(options.consolePath)}' append='on'/><target port='0'/></serial>
${control}    <panic model='isa'><address type='isa' iobase='0x505'/></panic>
    <memballoon model='none'/>
    <video><model type='none'/></video>
  </devices>
</domain>
`;
}

export async function createGuest(
  host: GuestHostAccess,
  image: GuestImage,
  options: QemuGuestOptions,
): Promise<QemuGuest> {
  const uuid = options.uuid ?? randomUUID();
  const control = options.control ?? true;
  let persistent = options.persistent ?? true;
  const consolePath = join(host.dir, `${options.name}.console`);
  const controlPath = control ? join(host.dir, `${options.name}.ctl`) : undefined;
  const xml = guestXml({ ...options, uuid, consolePath, controlPath }, image);
  const xmlPath = join(host.dir, `${options.name}.xml`);
  writeFileSync(xmlPath, xml);
  if (persistent) await host.virsh('define', xmlPath);

  const consoleText = (): string => (existsSync(consolePath) ? readFileSync(consolePath, 'latin1') : '');
  const readyCount = (): number => consoleText().split(READY).length - 1;
  let bootMark = readyCount();
  let nonce = 0;
  let socket: Socket | undefined;

  const openControl = async (): Promise<Socket> => {
    if (socket && !socket.destroyed) return socket;
    if (controlPath === undefined) throw new Error(`guest ${options.name} has no control channel`);
    const opened = connect(controlPath);
    await new Promise<void>((resolve, reject) => {
      opened.once('connect', resolve);
      opened.once('error', reject);
    });
    // A later error (guest destroyed) only means the next order reconnects.
    opened.on('error', () => opened.destroy());
    socket = opened;
    return opened;
  };

  const guest: QemuGuest = {
    name: options.name,
    uuid,
    get persistent() {
      return persistent;
    },
    control,
    consolePath,
    xml,
    start: async () => {
      bootMark = readyCount();
      await host.virsh(...(persistent ? ['start', options.name] : ['create', xmlPath]));
    },
    makePersistent: async () => {
      await host.virsh('define', xmlPath);
      persistent = true;
    },
    markBoot: () => {
      bootMark = readyCount();
    },
    waitBooted: (timeoutMs = 120000) =>
      waitUntil(
        `guest ${options.name} to boot (console ${consolePath})`,
        () => readyCount() > bootMark,
        timeoutMs,
        200,
      ),
    order: async (order, timeoutMs = 30000) => {
      nonce += 1;
      const line = `${order} ${nonce}`;
      const echo = `VIRTBUS-ORDER ${line}`;
      if (order === 'reboot') bootMark = readyCount();
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        try {
          (await openControl()).write(`\n${line}\n`);
        } catch {
          socket?.destroy();
          socket = undefined;
        }
        // The guest answers within milliseconds when it is listening; resend otherwise.
        const until = Math.min(deadline, Date.now() + 2000);
        while (Date.now() < until) {
          if (consoleText().includes(echo)) return;
          await sleep(100);
        }
        if (Date.now() >= deadline)
          throw new Error(`guest ${options.name} did not confirm order '${order}' within ${timeoutMs} ms`);
      }
    },
    state: async () => (await host.virsh('domstate', options.name)).trim(),
    waitState: (state, timeoutMs = 30000) =>
      waitUntil(
        `guest ${options.name} in state '${state}'`,
        async () => (await host.virsh('domstate', options.name).catch(() => '')).trim() === state,
        timeoutMs,
        200,
      ),
    console: consoleText,
    close: () => {
      socket?.destroy();
      socket = undefined;
    },
  };
  return guest;
}

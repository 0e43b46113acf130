/**
 * Drives a libvirtd from the test process through the addon's client calls (thread pool): create,
 * define, suspend, resume, destroy… Tests use it to make lifecycle events happen fast; `virsh` on the
 * sandbox is the slower independent client.
 */
import { loadNativeBinding } from '../../src/native/binding';
import type { DomainRef, NativeConnection } from '../../src/native/contract';

export function domainXml(name: string, uuid?: string): string {
  return `<domain type='test'><name>${name}</name>${uuid ? `<uuid>${uuid}</uuid>` : ''}<memory>65536</memory><os><type>hvm</type></os></domain>`;
}

export async function openDriver(uri: string): Promise<NativeConnection> {
  return loadNativeBinding().openConnection(uri, {
    readOnly: false,
    keepaliveInterval: 0,
    keepaliveCount: 1,
  });
}

/** Defines a persistent domain named `name` and starts it. */
export async function startedDomain(driver: NativeConnection, name: string): Promise<DomainRef> {
  const ref = await driver.defineXML(domainXml(name));
  await driver.start(ref.uuid);
  return ref;
}

/** Creates `count` running transient domains named `${prefix}-<i>`. */
export async function createDomains(
  driver: NativeConnection,
  prefix: string,
  count: number,
): Promise<DomainRef[]> {
  const refs: DomainRef[] = [];
  for (let i = 0; i < count; i += 1) refs.push(await driver.createXML(domainXml(`${prefix}-${i}`)));
  return refs;
}

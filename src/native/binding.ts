/**
 * The only module that loads the native addon (native/build/Release/virtbus_native.node). Everything
 * else receives a NativeBinding, so tests can hand in a fake and unusual deployments another binary.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { LibvirtErrorShape, NativeBinding, NativeConnection } from './contract';

/** virErrorNumber values virtbus looks at (libvirt virterror.h). */
export const VIR_ERR_OK = 0;
export const VIR_ERR_INTERNAL_ERROR = 1;
export const VIR_ERR_NO_SUPPORT = 3;
export const VIR_ERR_NO_CONNECT = 5;
export const VIR_ERR_INVALID_CONN = 6;
export const VIR_ERR_INVALID_DOMAIN = 7;
export const VIR_ERR_INVALID_ARG = 8;
export const VIR_ERR_OPERATION_FAILED = 9;
export const VIR_ERR_DOM_EXIST = 28;
export const VIR_ERR_OPERATION_DENIED = 29;
export const VIR_ERR_SYSTEM_ERROR = 38;
export const VIR_ERR_RPC = 39;
export const VIR_ERR_NO_DOMAIN = 42;
export const VIR_ERR_AUTH_FAILED = 45;
export const VIR_ERR_OPERATION_INVALID = 55;
export const VIR_ERR_OPERATION_TIMEOUT = 68;
export const VIR_ERR_AUTH_CANCELLED = 79;
export const VIR_ERR_AUTH_UNAVAILABLE = 94;

/** virErrorDomain values (where an error came from). */
export const VIR_FROM_NONE = 0;
export const VIR_FROM_RPC = 7;
export const VIR_FROM_TEST = 12;
export const VIR_FROM_REMOTE = 13;
export const VIR_FROM_QEMU = 10;

/** virErrorLevel. */
export const VIR_ERR_WARNING = 1;
export const VIR_ERR_ERROR = 2;

/** VIR_CONNECT_CLOSE_REASON_*. */
export const CloseReason = { ERROR: 0, EOF: 1, KEEPALIVE: 2, CLIENT: 3 } as const;

/** Environment variable naming another addon binary (a sanitizer or debug build, say). */
export const ADDON_PATH_ENV = 'VIRTBUS_NATIVE_ADDON';

export const NOT_BUILT_MESSAGE = 'native addon not built: run `npm run build:native`';

/** Every function the addon must export; checked on load so a stale binary fails loudly. */
export const BINDING_FUNCTIONS = [
  'startEventLoop',
  'stopEventLoop',
  'eventLoopRunning',
  'setQueueCapacity',
  'drain',
  'queueStats',
  'openConnection',
  'injectSyntheticEvents',
] as const satisfies ReadonlyArray<keyof NativeBinding>;

/** Every method a NativeConnection must have (besides the `id` property). */
export const CONNECTION_METHODS = [
  'isAlive',
  'libVersion',
  'listAllDomains',
  'domainState',
  'domainStates',
  'jobType',
  'isActive',
  'createXML',
  'defineXML',
  'undefine',
  'start',
  'shutdown',
  'destroy',
  'suspend',
  'resume',
  'reboot',
  'close',
] as const satisfies ReadonlyArray<Exclude<keyof NativeConnection, 'id'>>;

/** Where the addon is looked for, relative to this file in src/native or dist/src/native. */
export function defaultAddonCandidates(): string[] {
  const roots = [resolve(__dirname, '..', '..'), resolve(__dirname, '..', '..', '..')];
  const out: string[] = [];
  for (const root of roots) {
    for (const flavour of ['Release', 'Debug'])
      out.push(join(root, 'native', 'build', flavour, 'virtbus_native.node'));
  }
  return out;
}

let cached: NativeBinding | undefined;
const byPath = new Map<string, NativeBinding>();

function checkShape(candidate: unknown, where: string): NativeBinding {
  const missing = BINDING_FUNCTIONS.filter(
    (name) => typeof (candidate as Record<string, unknown> | null)?.[name] !== 'function',
  );
  if (missing.length > 0) {
    throw new Error(
      `native addon at ${where} does not implement the contract (missing ${missing.join(', ')}); ` +
        'rebuild it with `npm run build:native`',
    );
  }
  return candidate as NativeBinding;
}

function requireAddon(path: string): NativeBinding {
  let loaded: unknown;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- a .node file can only be required
    loaded = require(path);
  } catch (cause) {
    throw new Error(`cannot load the native addon ${path}: ${(cause as Error).message}`, { cause });
  }
  return checkShape(loaded, path);
}

/**
 * Loads (once) and returns the native binding. `override` is a path to another .node file or a
 * ready-made NativeBinding (a fake in tests), returned as is. Without one, $VIRTBUS_NATIVE_ADDON
 * names the file if set, else native/build/Release (or Debug) is used.
 */
export function loadNativeBinding(override?: string | NativeBinding): NativeBinding {
  if (override !== undefined && typeof override !== 'string') return checkShape(override, 'override');
  if (typeof override === 'string') {
    const path = resolve(override);
    let binding = byPath.get(path);
    if (!binding) {
      if (!existsSync(path)) throw new Error(`${NOT_BUILT_MESSAGE} (no file at ${path})`);
      binding = requireAddon(path);
      byPath.set(path, binding);
    }
    return binding;
  }
  if (cached) return cached;
  const fromEnv = process.env[ADDON_PATH_ENV];
  if (fromEnv) {
    cached = loadNativeBinding(fromEnv);
    return cached;
  }
  const candidates = defaultAddonCandidates();
  const found = candidates.find((path) => existsSync(path));
  if (!found) throw new Error(`${NOT_BUILT_MESSAGE} (looked for ${candidates.join(', ')})`);
  cached = requireAddon(found);
  return cached;
}

/** True for the errors the addon rejects with when libvirt reports a failure. */
export function isLibvirtError(e: unknown): e is LibvirtErrorShape {
  if (!(e instanceof Error) || e.name !== 'LibvirtError') return false;
  const fields = e as Partial<Record<'libvirtCode' | 'libvirtDomain' | 'libvirtLevel', unknown>>;
  return (
    typeof fields.libvirtCode === 'number' &&
    typeof fields.libvirtDomain === 'number' &&
    typeof fields.libvirtLevel === 'number'
  );
}

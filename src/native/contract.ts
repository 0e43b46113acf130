/**
 * The TypeScript face of the native addon (native/src/*.cc). This file and binding.ts are the only
 * door to native code: nothing else imports the .node file, and the consumer never loads it.
 *
 * Threading contract (see docs/architecture.md):
 * - libvirt's default event loop runs on one dedicated native thread. Its callbacks copy each event
 *   into a bounded queue and never call JavaScript, never log and never make a libvirt RPC.
 * - JavaScript is woken through a thread-safe function at most once per batch, and then pulls the
 *   batch with drain().
 * - Every call that may block on libvirt (RPC to libvirtd) runs on the libuv thread pool and returns a
 *   promise.
 */

/** VIR_DOMAIN_EVENT_ID_* values the addon registers for. */
export const NativeEventId = { LIFECYCLE: 0, REBOOT: 1 } as const;

/** One domain event as copied by the libvirt callback on the event-loop thread. */
export interface RawDomainEvent {
  /** Which NativeConnection delivered it (0 for synthetic benchmark events). */
  readonly connectionId: number;
  /** VIR_DOMAIN_EVENT_ID_LIFECYCLE (0) or VIR_DOMAIN_EVENT_ID_REBOOT (1). */
  readonly eventId: number;
  /** virDomainEventType for LIFECYCLE; -1 for REBOOT. Unknown values are passed through as numbers. */
  readonly type: number;
  /** The detail code for LIFECYCLE (meaning depends on type); -1 for REBOOT. */
  readonly detail: number;
  /** Domain UUID, lower-case 36-character form. */
  readonly uuid: string;
  /** Domain name (truncated to 255 bytes if longer; nameTruncated tells). */
  readonly name: string;
  readonly nameTruncated: boolean;
  /** CLOCK_REALTIME at callback time, microseconds since the Unix epoch. */
  readonly wallMicros: number;
  /** CLOCK_MONOTONIC at callback time, microseconds. */
  readonly monoMicros: number;
  /** Per-process sequence number assigned on enqueue; dropped events consume a number too. */
  readonly seq: number;
}

/** VIR_CONNECT_CLOSE_REASON_*: ERROR 0, EOF 1, KEEPALIVE 2, CLIENT 3. */
export interface RawCloseEvent {
  readonly connectionId: number;
  readonly reason: number;
}

export interface DrainResult {
  readonly events: RawDomainEvent[];
  readonly closes: RawCloseEvent[];
  /**
   * Number of events dropped because the queue was full since the previous drain. Non-zero means
   * the caller must take a state snapshot ("resync needed" marker).
   */
  readonly overflowed: number;
}

export interface QueueStats {
  readonly depth: number;
  readonly capacity: number;
  readonly highWater: number;
  /** Total dropped since process start. */
  readonly dropped: number;
  /** Total enqueued since process start. */
  readonly enqueued: number;
}

/** virDomainGetState result: virDomainState and its reason code. */
export interface DomainState {
  readonly state: number;
  readonly reason: number;
}

export interface DomainInfo extends DomainState {
  readonly uuid: string;
  readonly name: string;
  readonly active: boolean;
  readonly persistent: boolean;
}

export interface DomainRef {
  readonly uuid: string;
  readonly name: string;
}

export interface OpenOptions {
  readonly readOnly: boolean;
  /** virConnectSetKeepAlive interval in seconds; <= 0 disables keepalive. */
  readonly keepaliveInterval: number;
  readonly keepaliveCount: number;
  /** Credentials answered to libvirt's auth callback (SASL); never prompted for. */
  readonly username?: string;
  readonly password?: string;
}

/** An open libvirt connection with LIFECYCLE and REBOOT callbacks and a close callback registered. */
export interface NativeConnection {
  readonly id: number;
  /** virConnectIsAlive: no RPC, safe to call on the JS thread. */
  isAlive(): boolean;
  /** virConnectGetLibVersion (one RPC): a cheap liveness probe. */
  libVersion(): Promise<number>;
  listAllDomains(): Promise<DomainInfo[]>;
  /** Rejects with a LibvirtError (libvirtCode 42, VIR_ERR_NO_DOMAIN) when the domain does not exist. */
  domainState(uuid: string): Promise<DomainState>;
  /** Many states in one thread-pool job; null where the domain does not exist. */
  domainStates(uuids: readonly string[]): Promise<Array<DomainState | null>>;
  /** virDomainGetJobStats type (VIR_DOMAIN_JOB_*). */
  jobType(uuid: string): Promise<number>;
  isActive(uuid: string): Promise<boolean>;
  createXML(xml: string): Promise<DomainRef>;
  defineXML(xml: string): Promise<DomainRef>;
  undefine(uuid: string): Promise<void>;
  /** virDomainCreate: start a defined domain. */
  start(uuid: string): Promise<void>;
  shutdown(uuid: string): Promise<void>;
  destroy(uuid: string): Promise<void>;
  suspend(uuid: string): Promise<void>;
  resume(uuid: string): Promise<void>;
  reboot(uuid: string): Promise<void>;
  /** Deregisters every callback and closes the connection. Idempotent. */
  close(): Promise<void>;
}

export interface SyntheticOptions {
  /** Wait for room instead of dropping when the queue is full (default false). */
  readonly waitWhenFull?: boolean;
}

export interface NativeBinding {
  /**
   * Registers libvirt's default event implementation (once per process, before any connection),
   * creates the wake-up thread-safe function and starts the loop thread. Throws if already running.
   */
  startEventLoop(onWake: () => void): void;
  /** Wakes the loop, joins its thread and releases the wake-up function. Idempotent. */
  stopEventLoop(): void;
  eventLoopRunning(): boolean;
  /** Only while the loop is stopped and the queue empty; throws RangeError otherwise. */
  setQueueCapacity(capacity: number): void;
  /**
   * Takes up to max queued items (all if max is omitted). Only from the environment (main thread or
   * worker) that last started the loop; throws in any other.
   */
  drain(max?: number): DrainResult;
  queueStats(): QueueStats;
  openConnection(uri: string, options: OpenOptions): Promise<NativeConnection>;
  /**
   * Benchmark/test only: a separate native thread pushes `count` synthetic LIFECYCLE events
   * (cycling over `domains` synthetic UUIDs and the types STARTED/SUSPENDED/RESUMED) through the
   * same enqueue path the libvirt callbacks use. Resolves when that thread has finished.
   * Like libvirt's callbacks it drops when the queue is full, unless `waitWhenFull` is set: then it
   * waits for drain() to make room (to measure the hand-off ceiling without losing events).
   * Like drain(), only from the environment that owns the loop.
   */
  injectSyntheticEvents(count: number, domains: number, options?: SyntheticOptions): Promise<void>;
}

/** The shape of errors the addon rejects or throws with for libvirt failures. */
export interface LibvirtErrorShape extends Error {
  readonly name: 'LibvirtError';
  /** virErrorNumber, e.g. 42 VIR_ERR_NO_DOMAIN, 55 VIR_ERR_OPERATION_INVALID. */
  readonly libvirtCode: number;
  /** virErrorDomain, e.g. 13 VIR_FROM_REMOTE, 7 VIR_FROM_RPC, 12 VIR_FROM_TEST. */
  readonly libvirtDomain: number;
  readonly libvirtLevel: number;
}

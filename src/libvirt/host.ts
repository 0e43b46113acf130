/**
 * The libvirt connection and its life: opens it (waiting for a libvirtd that is down at start
 * instead of failing), registers the callbacks (the addon does that on every open), notices loss
 * through the close callback (error, EOF, keepalive) or a dead connection, and reconnects with
 * exponential backoff and jitter. Every successful reconnect is announced so the bridge can publish
 * a `reconnect` snapshot: events that happened while disconnected are repaired by it.
 */
import { EventEmitter } from 'node:events';
import type { NativeBinding, NativeConnection, OpenOptions, RawCloseEvent } from '../native/contract';
import type { Logger } from '../util/log';
import { Backoff, cancellableDelay } from '../util/backoff';
import { CLOSE_REASON_NAMES, nameOrNumber } from './constants';

export interface LibvirtHostOptions {
  readonly binding: NativeBinding;
  readonly uri: string;
  readonly open: OpenOptions;
  readonly reconnectInitialDelayMs: number;
  readonly reconnectMaxDelayMs: number;
  readonly logger: Logger;
}

export interface LibvirtHostEvents {
  /** A connection is open; `reconnect` is false only for the first one. */
  up: [connection: NativeConnection, reconnect: boolean];
  down: [reason: string];
}

export class LibvirtHost extends EventEmitter<LibvirtHostEvents> {
  readonly #options: LibvirtHostOptions;
  readonly #abort = new AbortController();
  readonly #backoff: Backoff;
  #connection: NativeConnection | undefined;
  #everConnected = false;
  #loop: Promise<void> | undefined;
  #lost: (() => void) | undefined;
  #reconnects = 0;
  #lostReason = '';

  constructor(options: LibvirtHostOptions) {
    super();
    this.#options = options;
    this.#backoff = new Backoff(options.reconnectInitialDelayMs, options.reconnectMaxDelayMs);
  }

  get connection(): NativeConnection | undefined {
    return this.#connection;
  }

  get isUp(): boolean {
    return this.#connection !== undefined;
  }

  get reconnects(): number {
    return this.#reconnects;
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  /** A close callback reported by the addon (delivered through the native queue's drain). */
  handleClose(event: RawCloseEvent): void {
    if (this.#connection?.id !== event.connectionId) return; // an old connection's late report
    this.#markLost(`closed by libvirt (${nameOrNumber(CLOSE_REASON_NAMES, event.reason)})`);
  }

  async close(): Promise<void> {
    this.#abort.abort();
    this.#lost?.();
    await this.#loop;
    const connection = this.#connection;
    this.#connection = undefined;
    if (connection) await connection.close().catch(() => undefined);
  }

  #markLost(reason: string): void {
    if (!this.#connection) return;
    this.#options.logger.warn({ reason }, 'libvirt connection lost');
    this.#lostReason = reason;
    this.#lost?.();
  }

  async #run(): Promise<void> {
    const { binding, uri, open, logger } = this.#options;
    const signal = this.#abort.signal;
    while (!signal.aborted) {
      let connection: NativeConnection;
      try {
        connection = await binding.openConnection(uri, open);
      } catch (error) {
        const delay = this.#backoff.next();
        logger.error(
          { uri, err: error, retryInMs: delay, attempt: this.#backoff.attempts },
          'cannot connect to libvirt',
        );
        await cancellableDelay(delay, signal);
        continue;
      }
      if (signal.aborted) {
        await connection.close().catch(() => undefined);
        break;
      }
      this.#backoff.reset();
      const reconnect = this.#everConnected;
      this.#everConnected = true;
      if (reconnect) this.#reconnects += 1;
      this.#connection = connection;
      this.#lostReason = '';
      const lost = new Promise<void>((resolve) => (this.#lost = resolve));
      // The close callback normally reports loss; this poll (no RPC) catches a connection that died silently.
      const watchdog = setInterval(() => {
        if (!connection.isAlive()) this.#markLost('connection no longer alive');
      }, 1000);
      watchdog.unref();
      logger.info({ uri, reconnect }, 'connected to libvirt');
      this.emit('up', connection, reconnect);
      await lost;
      clearInterval(watchdog);
      this.#connection = undefined;
      if (signal.aborted) {
        await connection.close().catch(() => undefined);
        break;
      }
      this.emit('down', this.#lostReason);
      await connection.close().catch(() => undefined);
      await cancellableDelay(this.#backoff.next(), signal);
    }
  }
}

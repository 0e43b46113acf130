/**
 * One AMQP connection that stays up: connects (round-robin over the configured URLs), reconnects with
 * backoff and jitter after any loss, and tells its users through 'up' / 'down' so each can open its
 * channels and re-declare its topology on every (re)connect. TLS (amqps://) verifies the broker by
 * default; credentials never reach the log (URLs are redacted).
 */
import { connect, credentials, type ChannelModel } from 'amqplib';
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import type { Logger } from '../util/log';
import { Backoff, cancellableDelay } from '../util/backoff';
import { redactValue } from '../config/redact';

export interface AmqpTlsOptions {
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
  readonly passphrase: string;
  readonly verify: boolean;
}

export interface AmqpConnectionOptions {
  /** One URL or several (comma-separated), tried round-robin. */
  readonly url: string;
  readonly heartbeatSeconds: number;
  readonly tls: AmqpTlsOptions;
  /** Shown in the broker's connection list (client property connection_name). */
  readonly connectionName: string;
  readonly reconnectInitialDelayMs: number;
  readonly reconnectMaxDelayMs: number;
  /** The broker user name, when the URL does not say it (certificate authentication); '' = from the URL. */
  readonly user?: string;
  readonly logger: Logger;
}

export interface AmqpConnectionEvents {
  up: [model: ChannelModel];
  down: [error: Error | undefined];
  blocked: [reason: string];
  unblocked: [];
}

export function splitUrls(url: string): string[] {
  return url
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part.length > 0);
}

/** amqps:// in any letter case (URL schemes are case-insensitive: AMQPS:// is TLS too). */
export function isTlsUrl(url: string): boolean {
  try {
    return new URL(url).protocol === 'amqps:';
  } catch {
    return /^amqps:/i.test(url.trim());
  }
}

/**
 * amqplib's socket options for one URL: client properties, and for amqps:// the CA, client
 * certificate and verification settings of amqp.tls (shared by the services and `virtbus tail`).
 */
export function socketOptions(
  url: string,
  tls: AmqpTlsOptions,
  connectionName: string,
): Record<string, unknown> {
  const base: Record<string, unknown> = {
    clientProperties: { connection_name: connectionName, product: 'virtbus' },
    timeout: 10000,
  };
  if (!isTlsUrl(url)) return base;
  return {
    ...base,
    ...(tls.caFile ? { ca: [readFileSync(tls.caFile)] } : {}),
    ...(tls.certFile ? { cert: readFileSync(tls.certFile) } : {}),
    ...(tls.keyFile ? { key: readFileSync(tls.keyFile) } : {}),
    ...(tls.passphrase ? { passphrase: tls.passphrase } : {}),
    rejectUnauthorized: tls.verify,
    servername: new URL(url).hostname,
    // A client certificate and no user in the URL: log in as the certificate (SASL EXTERNAL,
    // rabbitmq_auth_mechanism_ssl), the user being its CN. With a user in the URL, PLAIN as before.
    ...(tls.certFile && new URL(url).username === '' ? { credentials: credentials.external() } : {}),
  };
}

/** Said once at start: without verification anyone on the path can pose as the broker. */
export function warnIfUnverified(url: string, tls: AmqpTlsOptions, logger: Logger): void {
  if (tls.verify) return;
  logger.warn(
    { tlsInUse: splitUrls(url).some(isTlsUrl) },
    'amqp.tls.verify is false: the broker certificate and host name are NOT verified; anyone on the network path can pose as the broker (experiments only)',
  );
}

/** amqplib takes the heartbeat from the URL query; an explicit one in the URL wins. */
function withHeartbeat(url: string, seconds: number): string {
  const parsed = new URL(url);
  if (!parsed.searchParams.has('heartbeat')) parsed.searchParams.set('heartbeat', String(seconds));
  return parsed.toString();
}

/**
 * The broker user a connection to this URL authenticates as: the configured name (amqp.user), else
 * the URL's user name, else guest (the client's default) — or '' when the URL names nobody and a
 * client certificate is configured (the login may be by certificate, whose name is not known here:
 * better no user_id than one the broker refuses, which would close the publishing channel).
 * What a publisher sets as user_id: RabbitMQ refuses any other.
 */
export function brokerUser(url: string, configured = '', clientCertificate = false): string {
  if (configured) return configured;
  try {
    const parsed = new URL(url);
    if (parsed.username) return decodeURIComponent(parsed.username);
    return clientCertificate && parsed.password === '' ? '' : 'guest';
  } catch {
    return '';
  }
}

export class AmqpConnection extends EventEmitter<AmqpConnectionEvents> {
  readonly #options: AmqpConnectionOptions;
  readonly #urls: string[];
  readonly #abort = new AbortController();
  readonly #backoff: Backoff;
  #model: ChannelModel | undefined;
  #urlIndex = 0;
  /** The broker user of the current (or first) URL, computed once per connect (read per publish). */
  #user: string;
  #loop: Promise<void> | undefined;
  /** Ends the wait on the current connection (as if it closed), so the loop sees the abort and exits. */
  #stopWaitingForClose: (() => void) | undefined;
  #blocked = false;

  constructor(options: AmqpConnectionOptions) {
    super();
    this.#options = options;
    this.#urls = splitUrls(options.url);
    this.#user = brokerUser(this.#urls[0] ?? '', options.user, options.tls.certFile !== '');
    this.#backoff = new Backoff(options.reconnectInitialDelayMs, options.reconnectMaxDelayMs);
  }

  get model(): ChannelModel | undefined {
    return this.#model;
  }

  /** The broker user of the current connection (user_id of what is published on it; '' = unknown). */
  get user(): string {
    return this.#user;
  }

  get isUp(): boolean {
    return this.#model !== undefined;
  }

  get isBlocked(): boolean {
    return this.#blocked;
  }

  /** Starts the connect/reconnect loop in the background; 'up' fires on each successful connect. */
  start(): void {
    if (!this.#loop) warnIfUnverified(this.#options.url, this.#options.tls, this.#options.logger);
    this.#loop ??= this.#run();
  }

  /** Resolves at the next 'up' (immediately if up), or rejects when the signal aborts first. */
  async whenUp(signal?: AbortSignal): Promise<ChannelModel> {
    if (this.#model) return this.#model;
    return new Promise((resolve, reject) => {
      const onUp = (model: ChannelModel): void => {
        signal?.removeEventListener('abort', onAbort);
        resolve(model);
      };
      const onAbort = (): void => {
        this.off('up', onUp);
        reject(new Error('aborted while waiting for the broker'));
      };
      this.once('up', onUp);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Forces a reconnect (e.g. after a channel-level failure that left the connection unusable). */
  reset(reason: string): void {
    const model = this.#model;
    if (!model) return;
    this.#options.logger.warn({ reason }, 'resetting the broker connection');
    model.close().catch(() => undefined);
  }

  async close(): Promise<void> {
    this.#abort.abort();
    this.#stopWaitingForClose?.();
    const model = this.#model;
    this.#model = undefined;
    if (model) await model.close().catch(() => undefined);
    await this.#loop;
  }

  async #run(): Promise<void> {
    const { logger } = this.#options;
    const signal = this.#abort.signal;
    while (!signal.aborted) {
      const url = this.#urls[this.#urlIndex % this.#urls.length] ?? '';
      this.#urlIndex += 1;
      let model: ChannelModel;
      try {
        model = await connect(
          withHeartbeat(url, this.#options.heartbeatSeconds),
          socketOptions(url, this.#options.tls, this.#options.connectionName),
        );
      } catch (error) {
        const delay = this.#backoff.next();
        logger.error(
          { broker: redactValue(url), err: error, retryInMs: delay, attempt: this.#backoff.attempts },
          'cannot connect to the broker',
        );
        await cancellableDelay(delay, signal);
        continue;
      }
      if (signal.aborted) {
        await model.close().catch(() => undefined);
        break;
      }
      const closed = new Promise<Error | undefined>((resolve) => {
        model.on('close', (error?: Error) => resolve(error));
        this.#stopWaitingForClose = () => resolve(undefined);
      });
      model.on('error', (error: Error) => logger.warn({ err: error }, 'broker connection error'));
      model.on('blocked', (reason: string) => {
        this.#blocked = true;
        logger.warn({ reason }, 'broker blocked publishing (resource alarm)');
        this.emit('blocked', reason);
      });
      model.on('unblocked', () => {
        this.#blocked = false;
        logger.info('broker unblocked publishing');
        this.emit('unblocked');
      });
      this.#backoff.reset();
      this.#user = brokerUser(url, this.#options.user, this.#options.tls.certFile !== '');
      this.#model = model;
      logger.info({ broker: redactValue(url) }, 'connected to the broker');
      this.emit('up', model);
      const error = await closed;
      this.#model = undefined;
      this.#blocked = false;
      if (signal.aborted) break;
      logger.warn({ err: error }, 'broker connection lost; reconnecting');
      this.emit('down', error);
      await cancellableDelay(this.#backoff.next(), signal);
    }
  }
}

/** Builds connection options from the validated configuration. */
export function amqpOptionsFromConfig(
  amqp: {
    url: string;
    heartbeatSeconds: number;
    reconnectInitialDelayMs: number;
    reconnectMaxDelayMs: number;
    tls: AmqpTlsOptions;
    user?: string;
  },
  connectionName: string,
  logger: Logger,
): AmqpConnectionOptions {
  return {
    url: amqp.url,
    heartbeatSeconds: amqp.heartbeatSeconds,
    tls: amqp.tls,
    connectionName,
    reconnectInitialDelayMs: amqp.reconnectInitialDelayMs,
    reconnectMaxDelayMs: amqp.reconnectMaxDelayMs,
    user: amqp.user ?? '',
    logger,
  };
}

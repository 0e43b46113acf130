/**
 * The root logger: pino, JSON lines on stdout. Components get children ({ module }) through their
 * constructors. Credentials never reach the log: URLs and secrets pass through redactValue before
 * logging, and these paths are censored as a second line of defence.
 */
import pino, { type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string, name: string): Logger {
  return pino({
    name,
    level,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: {
      paths: [
        'password',
        '*.password',
        'passphrase',
        '*.passphrase',
        'amqp.url',
        'db.url',
        '*.amqp.url',
        '*.db.url',
      ],
      censor: '[redacted]',
    },
  });
}

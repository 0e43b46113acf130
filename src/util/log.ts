/**
 * The root logger: pino, JSON lines on stdout (or on `destination`: the CLI passes a readable-line
 * formatter on a terminal, src/cli/log-format.ts). Components get children ({ module }) through their
 * constructors. Credentials never reach the log: URLs and secrets pass through redactValue before
 * logging, and these paths are censored as a second line of defence.
 */
import pino, { type DestinationStream, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string, name: string, destination?: DestinationStream): Logger {
  const options: pino.LoggerOptions = {
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
  };
  return destination ? pino(options, destination) : pino(options);
}

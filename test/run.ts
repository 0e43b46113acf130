/**
 * The test runner behind `npm test`: starts the run's shared private RabbitMQ node and PostgreSQL
 * cluster once, runs every suite with node:test, and tears the services down whatever happens.
 * Usage: node dist/test/run.js [--test-name-pattern=REGEX ...] [suite-dir ...]   (default: every suite)
 * Options starting with `--` are handed to node --test as they are.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { startPostgres, startRabbitMQ } from '../src/sandbox';
import { SHARED_POSTGRES_ENV, SHARED_RABBIT_ENV, type SharedRabbit } from './support/services';

const SUITES = [
  'unit',
  'native',
  'integration',
  'consumer',
  'e2e',
  'faults',
  'ops',
  'security',
  'qemu',
  'package',
];

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const testOptions = args.filter((arg) => arg.startsWith('--'));
  const requested = args.filter((arg) => !arg.startsWith('--'));
  const suites = (requested.length > 0 ? requested : SUITES)
    .map((suite) => join(__dirname, suite))
    .filter((dir) => existsSync(dir));
  const started = Date.now();
  console.log('test/run: starting the shared RabbitMQ node and PostgreSQL cluster…');
  const [rabbit, postgres] = await Promise.all([startRabbitMQ({ name: 'virtbus-test' }), startPostgres()]);
  console.log(
    `test/run: services up in ${Date.now() - started} ms (RabbitMQ :${rabbit.port}, PostgreSQL :${postgres.port})`,
  );
  const shared: SharedRabbit = { host: '127.0.0.1', port: rabbit.port, nodeName: rabbit.nodeName };
  let code = 1;
  try {
    code = await new Promise<number>((resolve) => {
      const child = spawn(
        process.execPath,
        [
          '--expose-gc',
          '--test',
          '--test-concurrency=1',
          '--test-reporter=spec',
          '--test-timeout=600000',
          ...testOptions,
          ...suites,
        ],
        {
          stdio: 'inherit',
          env: {
            ...process.env,
            [SHARED_RABBIT_ENV]: JSON.stringify(shared),
            [SHARED_POSTGRES_ENV]: postgres.url,
          },
        },
      );
      child.on('exit', (exitCode, signal) => resolve(exitCode ?? (signal ? 1 : 0)));
    });
  } finally {
    await Promise.allSettled([rabbit.dispose(), postgres.dispose()]);
  }
  console.log(`test/run: finished in ${Math.round((Date.now() - started) / 1000)} s, exit ${code}`);
  return code;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error('test/run failed:', error);
    process.exit(1);
  },
);

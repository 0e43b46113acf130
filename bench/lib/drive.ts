/**
 * Drives lifecycle events through libvirtd from several driver processes (bench/workers/driver.ts),
 * each taking its share of the domains, and combines their figures into one.
 */
import type { Worker } from './ipc';

export interface DriveResult {
  events: number;
  errors: number;
  /** The first failed call's message, when any failed. */
  firstError?: string;
  seconds: number;
  rate: number;
  finishedAtMs: number;
}

export interface DriveOptions {
  readonly uri: string;
  readonly uuids: readonly string[];
  /** Events in all (split evenly between the drivers). */
  readonly events: number;
  /** Events per second in all; 0: flat out. */
  readonly rate: number;
  /** Concurrent libvirt clients in each driver process. */
  readonly workersPerDriver: number;
  readonly timeoutMs: number;
}

/** Every driver process drives its share of `uuids`; resolves with the combined figures. */
export async function driveAll(drivers: readonly Worker[], options: DriveOptions): Promise<DriveResult> {
  const per = Math.floor(options.events / drivers.length);
  const started = Date.now();
  const results = await Promise.all(
    drivers.map((driver, d) =>
      driver.call<DriveResult>(
        'drive',
        {
          uri: options.uri,
          uuids: options.uuids.filter((_, i) => i % drivers.length === d),
          workers: options.workersPerDriver,
          events: per,
          rate: options.rate / drivers.length,
        },
        options.timeoutMs,
      ),
    ),
  );
  const finishedAtMs = Math.max(...results.map((r) => r.finishedAtMs));
  const done = results.reduce((sum, r) => sum + r.events, 0);
  const firstError = results.find((r) => r.firstError)?.firstError;
  return {
    events: done,
    errors: results.reduce((sum, r) => sum + r.errors, 0),
    ...(firstError === undefined ? {} : { firstError }),
    seconds: (finishedAtMs - started) / 1000,
    rate: done / ((finishedAtMs - started) / 1000),
    finishedAtMs,
  };
}

/** Percentiles, rates and process resource sampling shared by the benchmarks. */

export interface Distribution {
  readonly count: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
  readonly mean: number;
}

/** Percentiles of `values` (any unit); sorts a copy. */
export function distribution(values: ArrayLike<number>): Distribution | null {
  const count = values.length;
  if (count === 0) return null;
  const sorted = Float64Array.from(values).sort();
  const at = (q: number): number => sorted[Math.min(count - 1, Math.max(0, Math.ceil(q * count) - 1))]!;
  let sum = 0;
  for (const v of sorted) sum += v;
  return { count, p50: at(0.5), p90: at(0.9), p99: at(0.99), max: sorted[count - 1]!, mean: sum / count };
}

/** A growable list of numbers without per-value allocation. */
export class Samples {
  #data = new Float64Array(1024);
  #length = 0;

  push(value: number): void {
    if (this.#length === this.#data.length) {
      const bigger = new Float64Array(this.#data.length * 2);
      bigger.set(this.#data);
      this.#data = bigger;
    }
    this.#data[this.#length++] = value;
  }

  get length(): number {
    return this.#length;
  }

  values(): Float64Array {
    return this.#data.subarray(0, this.#length);
  }

  clear(): void {
    this.#length = 0;
  }
}

export interface ResourceUse {
  readonly wallSeconds: number;
  /** user + system CPU of this process over the wall time, in % of one core. */
  readonly cpuPercent: number;
  readonly rssMaxMB: number;
  readonly rssMeanMB: number;
  readonly rssEndMB: number;
}

/**
 * Samples this process's RSS every intervalMs (process.memoryUsage.rss(): cheap, unlike a full
 * memoryUsage()) and its CPU time between start and stop.
 */
export class ResourceSampler {
  readonly #startCpu = process.cpuUsage();
  readonly #start = performance.now();
  readonly #timer: NodeJS.Timeout;
  #rssMax = 0;
  #rssSum = 0;
  #n = 0;

  constructor(intervalMs = 100) {
    this.#sample();
    this.#timer = setInterval(() => this.#sample(), intervalMs);
  }

  #sample(): void {
    const rss = process.memoryUsage.rss();
    this.#rssMax = Math.max(this.#rssMax, rss);
    this.#rssSum += rss;
    this.#n += 1;
  }

  stop(): ResourceUse {
    clearInterval(this.#timer);
    this.#sample();
    const cpu = process.cpuUsage(this.#startCpu);
    const wall = (performance.now() - this.#start) / 1000;
    const mb = (bytes: number): number => Math.round((bytes / 1048576) * 10) / 10;
    return {
      wallSeconds: wall,
      cpuPercent: Math.round(((cpu.user + cpu.system) / 1e6 / wall) * 1000) / 10,
      rssMaxMB: mb(this.#rssMax),
      rssMeanMB: mb(this.#rssSum / this.#n),
      rssEndMB: mb(process.memoryUsage.rss()),
    };
  }
}

export function round(value: number, digits = 0): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

/** A quantile from Prometheus-style cumulative buckets (linear inside a bucket, as histogram_quantile). */
export function bucketQuantile(
  buckets: ReadonlyArray<{ le: number; count: number }>,
  q: number,
): number | null {
  const sorted = [...buckets].sort((a, b) => a.le - b.le);
  const total = sorted[sorted.length - 1]?.count ?? 0;
  if (total === 0) return null;
  const rank = q * total;
  let previousLe = 0;
  let previousCount = 0;
  for (const bucket of sorted) {
    if (bucket.count >= rank) {
      if (!Number.isFinite(bucket.le)) return previousLe;
      const inBucket = bucket.count - previousCount;
      return inBucket === 0
        ? bucket.le
        : previousLe + ((bucket.le - previousLe) * (rank - previousCount)) / inBucket;
    }
    previousLe = bucket.le;
    previousCount = bucket.count;
  }
  return previousLe;
}

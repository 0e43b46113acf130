/**
 * Bounded waits for shutdown paths: wait for some work, but never longer than a deadline allows.
 */

/**
 * Resolves true when `work` settles (fulfilled or rejected) within `ms`, false when the time runs
 * out first; the timer is cleared either way, so it never keeps the process alive.
 */
export async function settlesWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), Math.max(0, ms));
  });
  const settled = work.then(
    () => true as const,
    () => true as const,
  );
  try {
    return await Promise.race([settled, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

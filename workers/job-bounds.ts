/**
 * The worker's bounds on every job, whatever its producer sent. The job contract is the data, so
 * a plain BullMQ producer (no lensfleet SDK) is a normal client — and BullMQ lets each job's own
 * options win: `removeOnComplete: false` (or none) keeps a job in Redis forever, and
 * `attempts: 1000` retries a failing job a thousand times. Before a job runs, the worker caps its
 * in-memory options (BullMQ reads them from that same Job object when the job finishes):
 *
 * - `attempts` at `LENSFLEET_MAX_ATTEMPTS`, so a job still failing at the ceiling fails for good;
 * - `removeOnComplete` / `removeOnFail` at the worker's retention (a producer may keep less,
 *   never more);
 * - `backoff` is routed through the worker's strategy (`createBackoffStrategy`), which applies
 *   the retry policy of `src/retry-policy.ts` and otherwise the job's own backoff.
 *
 * Nothing is written back to the job's stored options.
 */
import { Backoffs, type BackoffOptions, type BackoffStrategy, type Job, type KeepJobs, type MinimalJob } from 'bullmq';
import type { JobSettings } from '../src/config.js';
import { LensfleetError, type ErrorCode } from '../src/errors.js';
import { decideRetry, defaultBackoffMs, MAX_RETRY_DELAY_MS, type RetrySettings } from '../src/retry-policy.js';

/** The backoff type every job runs with inside the worker (its own backoff is kept aside). */
export const WORKER_BACKOFF_TYPE = 'lensfleet';

/** How long and how many finished jobs are kept at most. */
export interface Retention {
  /** Seconds. */
  readonly age: number;
  readonly count: number;
}

type KeepOption = boolean | number | KeepJobs | undefined;

/**
 * The stricter of a job's own retention and the worker's ceiling. `true` / `0` (remove at once)
 * stay; `false`, none, or a negative count (keep everything) become the ceiling; an age or count
 * larger than the ceiling's is lowered to it.
 */
export function boundKeepJobs(own: KeepOption, ceiling: Retention): boolean | KeepJobs {
  if (own === true || own === 0) return true;
  if (own === undefined || own === false || (typeof own === 'number' && own < 0)) return { age: ceiling.age, count: ceiling.count };
  if (typeof own === 'number') return { age: ceiling.age, count: Math.min(own, ceiling.count) };
  const ownAge = 'age' in own && typeof own.age === 'number' && own.age >= 0 ? own.age : Number.POSITIVE_INFINITY;
  const ownCount = typeof own.count === 'number' && own.count >= 0 ? own.count : Number.POSITIVE_INFINITY;
  const bounded: KeepJobs = { age: Math.min(ownAge, ceiling.age), count: Math.min(ownCount, ceiling.count) };
  if ('limit' in own && own.limit !== undefined) bounded.limit = own.limit;
  return bounded;
}

/** Each job's own backoff, kept aside while the job runs under the worker's strategy. */
const ownBackoffs = new WeakMap<object, BackoffOptions | undefined>();

/** Cap a job's attempts and retention and route its backoff through the worker's strategy. */
export function applyJobBounds(job: Job, settings: JobSettings): void {
  const opts = job.opts;
  // BullMQ stores "no attempts given" as 0: one attempt.
  opts.attempts = Math.min(Math.max(1, opts.attempts ?? 1), settings.maxAttempts);
  opts.removeOnComplete = boundKeepJobs(opts.removeOnComplete, { age: settings.keepCompletedSeconds, count: settings.keepCompletedCount });
  opts.removeOnFail = boundKeepJobs(opts.removeOnFail, { age: settings.keepFailedSeconds, count: settings.keepFailedCount });
  const own = opts.backoff;
  if (typeof own === 'object' && own.type === WORKER_BACKOFF_TYPE) return; // bounded already
  ownBackoffs.set(job, typeof own === 'number' ? { type: 'fixed', delay: own } : own);
  opts.backoff = { type: WORKER_BACKOFF_TYPE };
}

/** The cause of a failed attempt, by class: the processor throws the LensfleetError or wraps it as `cause`. */
export function failureCode(err: unknown): ErrorCode {
  if (err instanceof LensfleetError) return err.code;
  const cause = (err as { cause?: unknown } | undefined)?.cause;
  return cause instanceof LensfleetError ? cause.code : 'INTERNAL';
}

/**
 * The Worker's `settings.backoffStrategy`: BullMQ calls it for a failed attempt that still has
 * attempts left (its `attemptsMade` counts this attempt). -1 tells BullMQ not to retry.
 */
export function createBackoffStrategy(settings: RetrySettings): BackoffStrategy {
  return (attemptsMade: number, _type?: string, err?: Error, job?: MinimalJob): number => {
    const failedBefore = attemptsMade - 1;
    const decision = decideRetry(failureCode(err), failedBefore, settings);
    if (!decision.retry) return -1;
    const own = job === undefined ? undefined : ownBackoffs.get(job);
    let delay = defaultBackoffMs(failedBefore, settings);
    if (own !== undefined && own.type in Backoffs.builtinStrategies) {
      const d = Backoffs.calculate(own, attemptsMade, err as Error, job as MinimalJob) as number | undefined;
      delay = typeof d === 'number' && Number.isFinite(d) && d >= 0 ? d : delay;
    }
    return Math.min(MAX_RETRY_DELAY_MS, Math.max(delay, decision.delayMs ?? 0));
  };
}

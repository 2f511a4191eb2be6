/**
 * Which failures are retried, and after how long. `errors.ts` says whether a cause *can* pass on
 * retry; this policy adds what a retry costs. A statement timeout is the expensive case: the
 * query ran for its whole timeout (5 s by default) on the tenant's database, and four more
 * attempts at full cost rarely finish where the first did not — they only load a database that
 * is already slow. So a timeout is retried according to `LENSFLEET_RETRY_QUERY_TIMEOUT`
 * (default `once`), after a delay that starts at `LENSFLEET_RETRY_QUERY_TIMEOUT_DELAY_MS` and
 * doubles. Every other transient cause (pool busy or timed out, connection refused or lost,
 * 53300, serialization failure, shutdown) is cheap to retry and is retried with the job's own
 * backoff, or, for a job that brings none, an exponential one from `LENSFLEET_RETRY_BACKOFF_MS`.
 */
import { ERROR_CODES, type ErrorCode } from './errors.js';

export interface RetrySettings {
  /** First delay of the default exponential backoff. @defaultValue 500 */
  readonly backoffMs: number;
  /** @defaultValue 'once' */
  readonly queryTimeoutRetry: 'off' | 'once' | 'on';
  /** First delay before a timed-out query runs again; doubles per attempt. @defaultValue 10000 */
  readonly queryTimeoutDelayMs: number;
}

export interface RetryDecision {
  readonly retry: boolean;
  /** The least delay this cause needs before the next attempt (the job's own backoff may ask for more). */
  readonly delayMs?: number;
}

/** No retry waits longer than this (a doubling delay would otherwise overflow). */
export const MAX_RETRY_DELAY_MS = 3_600_000;

const NO_RETRY: RetryDecision = Object.freeze({ retry: false });
const RETRY: RetryDecision = Object.freeze({ retry: true });

/**
 * Whether a job that failed with `code` is attempted again. `attemptsMade` counts the attempts
 * that failed before this one (BullMQ's `job.attemptsMade` while the job runs): 0 on the first.
 * The attempts ceiling is not decided here: the worker caps each job's `attempts` (BullMQ stops
 * when they are used up).
 */
export function decideRetry(code: ErrorCode, attemptsMade: number, settings: RetrySettings): RetryDecision {
  if (!ERROR_CODES[code]) return NO_RETRY;
  if (code !== 'QUERY_TIMEOUT') return RETRY;
  switch (settings.queryTimeoutRetry) {
    case 'off':
      return NO_RETRY;
    case 'once':
      if (attemptsMade > 0) return NO_RETRY;
      break;
    case 'on':
      break;
  }
  return { retry: true, delayMs: doubling(settings.queryTimeoutDelayMs, attemptsMade) };
}

/** The default backoff of a job without one: `backoffMs`, doubling per failed attempt. */
export function defaultBackoffMs(attemptsMade: number, settings: RetrySettings): number {
  return doubling(settings.backoffMs, attemptsMade);
}

/** `base × 2^n`, at most MAX_RETRY_DELAY_MS. */
function doubling(base: number, n: number): number {
  return Math.min(MAX_RETRY_DELAY_MS, base * 2 ** Math.max(0, Math.min(n, 40)));
}

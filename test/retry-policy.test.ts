/**
 * The retry policy (src/retry-policy.ts) and the worker's per-job bounds (workers/job-bounds.ts),
 * as functions: which cause is retried after how long, and how a job's own attempts, retention
 * and backoff are capped. test/retention.test.ts checks the same on real jobs.
 */
import type { Job } from 'bullmq';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES, LensfleetError, type ErrorCode } from '../src/errors.js';
import { decideRetry, MAX_RETRY_DELAY_MS, type RetrySettings } from '../src/retry-policy.js';
import { applyJobBounds, boundKeepJobs, createBackoffStrategy, failureCode, WORKER_BACKOFF_TYPE } from '../workers/job-bounds.js';
import { loadWorkerConfig } from '../src/config.js';

const settings = (over: Partial<RetrySettings> = {}): RetrySettings => ({ backoffMs: 500, queryTimeoutRetry: 'once', queryTimeoutDelayMs: 10_000, ...over });
const codes = Object.keys(ERROR_CODES) as ErrorCode[];

describe('decideRetry', () => {
  it('never retries a cause errors.ts marks unrecoverable, at any attempt', () => {
    for (const code of codes.filter((c) => !ERROR_CODES[c])) {
      for (const n of [0, 1, 4]) expect(decideRetry(code, n, settings({ queryTimeoutRetry: 'on' })), code).toEqual({ retry: false });
    }
  });

  it('retries every other transient cause with no extra delay (the backoff decides)', () => {
    for (const code of codes.filter((c) => ERROR_CODES[c] && c !== 'QUERY_TIMEOUT')) {
      for (const n of [0, 3]) expect(decideRetry(code, n, settings({ queryTimeoutRetry: 'off' })), code).toEqual({ retry: true });
    }
  });

  it('QUERY_TIMEOUT: off never; once only after the first attempt; on always, after a delay doubling from queryTimeoutDelayMs', () => {
    expect(decideRetry('QUERY_TIMEOUT', 0, settings({ queryTimeoutRetry: 'off' }))).toEqual({ retry: false });
    expect(decideRetry('QUERY_TIMEOUT', 0, settings({ queryTimeoutRetry: 'once' }))).toEqual({ retry: true, delayMs: 10_000 });
    expect(decideRetry('QUERY_TIMEOUT', 1, settings({ queryTimeoutRetry: 'once' }))).toEqual({ retry: false });
    expect(decideRetry('QUERY_TIMEOUT', 3, settings({ queryTimeoutRetry: 'once' }))).toEqual({ retry: false });
    const on = settings({ queryTimeoutRetry: 'on', queryTimeoutDelayMs: 1000 });
    expect([0, 1, 2, 3].map((n) => decideRetry('QUERY_TIMEOUT', n, on).delayMs)).toEqual([1000, 2000, 4000, 8000]);
    expect(decideRetry('QUERY_TIMEOUT', 80, on)).toEqual({ retry: true, delayMs: MAX_RETRY_DELAY_MS });
  });

  it('the default is once: a statement timeout costs at most two runs, not five', () => {
    const { jobs } = loadWorkerConfig({});
    const runs = [0, 1, 2, 3, 4].filter((n) => n === 0 || decideRetry('QUERY_TIMEOUT', n - 1, jobs).retry).length;
    expect(runs).toBe(2);
  });
});

describe('boundKeepJobs', () => {
  const ceiling = { age: 3600, count: 10_000 };
  it.each([
    ['none (BullMQ keeps forever)', undefined, { age: 3600, count: 10_000 }],
    ['false (keep forever)', false, { age: 3600, count: 10_000 }],
    ['a negative count (keep all)', -1, { age: 3600, count: 10_000 }],
    ['true (remove at once) stays', true, true],
    ['0 (remove at once) stays', 0, true],
    ['a larger count', 1_000_000, { age: 3600, count: 10_000 }],
    ['a smaller count stays', 10, { age: 3600, count: 10 }],
    ['a longer age', { age: 86_400 }, { age: 3600, count: 10_000 }],
    ['a shorter age and larger count', { age: 60, count: 50_000, limit: 100 }, { age: 60, count: 10_000, limit: 100 }],
    ['a count only', { count: 5 }, { age: 3600, count: 5 }],
  ] as const)('%s', (_what, own, expected) => {
    expect(boundKeepJobs(own as Parameters<typeof boundKeepJobs>[0], ceiling)).toEqual(expected);
  });
});

describe('applyJobBounds', () => {
  const jobs = loadWorkerConfig({ LENSFLEET_MAX_ATTEMPTS: '3' }).jobs;
  const fakeJob = (opts: Record<string, unknown>) => ({ opts: { attempts: 0, ...opts } }) as unknown as Job;

  it('caps attempts at the ceiling, keeps fewer, and treats none (0) as one', () => {
    const j = (attempts: number) => {
      const job = fakeJob({ attempts });
      applyJobBounds(job, jobs);
      return job.opts.attempts;
    };
    expect([j(1000), j(3), j(2), j(0)]).toEqual([3, 3, 2, 1]);
  });

  it('bounds retention and routes the backoff through the worker strategy, keeping the job’s own', async () => {
    const job = fakeJob({ attempts: 5, removeOnComplete: false, backoff: { type: 'fixed', delay: 7000 } });
    applyJobBounds(job, jobs);
    expect(job.opts.removeOnComplete).toEqual({ age: 3600, count: 10_000 });
    expect(job.opts.removeOnFail).toEqual({ age: 604_800, count: 10_000 });
    expect(job.opts.backoff).toEqual({ type: WORKER_BACKOFF_TYPE });
    // applied twice (a retry of the same Job object): the job's own backoff is not lost
    applyJobBounds(job, jobs);
    const strategy = createBackoffStrategy(jobs);
    const transient = new Error('POOL_TIMEOUT: …', { cause: new LensfleetError('POOL_TIMEOUT', 'x') });
    expect(await strategy(1, WORKER_BACKOFF_TYPE, transient, job)).toBe(7000);
  });
});

describe('the worker backoff strategy', () => {
  const s = settings({ backoffMs: 100, queryTimeoutDelayMs: 5000 });
  const strategy = createBackoffStrategy(s);
  const failed = (code: ErrorCode) => new Error(`${code}: …`, { cause: new LensfleetError(code, 'x') });
  const withOwn = (backoff: unknown) => {
    const job = { opts: { attempts: 5, backoff } } as unknown as Job;
    applyJobBounds(job, { ...loadWorkerConfig({}).jobs, ...s });
    return job;
  };

  it('classifies a failure by the error class it carries, never by its message', () => {
    expect(failureCode(failed('CONNECTION_FAILED'))).toBe('CONNECTION_FAILED');
    expect(failureCode(new LensfleetError('QUERY_TIMEOUT', 'x'))).toBe('QUERY_TIMEOUT');
    expect(failureCode(new Error('QUERY_TIMEOUT: looks like one, is not'))).toBe('INTERNAL');
  });

  it('a job without a backoff: the default, doubling from LENSFLEET_RETRY_BACKOFF_MS', async () => {
    const job = withOwn(undefined);
    expect([1, 2, 3].map((n) => strategy(n, WORKER_BACKOFF_TYPE, failed('POOL_TIMEOUT'), job))).toEqual([100, 200, 400]);
  });

  it('a job with its own backoff: that backoff (fixed or exponential, as BullMQ computes it)', async () => {
    expect(await strategy(3, WORKER_BACKOFF_TYPE, failed('CONNECTION_FAILED'), withOwn({ type: 'exponential', delay: 500 }))).toBe(2000);
    expect(await strategy(3, WORKER_BACKOFF_TYPE, failed('CONNECTION_FAILED'), withOwn(250))).toBe(250);
    // a custom type this worker does not know falls back to the default instead of failing the job
    expect(await strategy(1, WORKER_BACKOFF_TYPE, failed('CONNECTION_FAILED'), withOwn({ type: 'mine', delay: 1 }))).toBe(100);
  });

  it('QUERY_TIMEOUT: at least the timeout delay, whatever the job’s backoff; -1 (no retry) when the policy says so', async () => {
    expect(await strategy(1, WORKER_BACKOFF_TYPE, failed('QUERY_TIMEOUT'), withOwn({ type: 'fixed', delay: 100 }))).toBe(5000);
    expect(await strategy(2, WORKER_BACKOFF_TYPE, failed('QUERY_TIMEOUT'), withOwn({ type: 'fixed', delay: 100 }))).toBe(-1);
    const off = createBackoffStrategy(settings({ queryTimeoutRetry: 'off' }));
    expect(await off(1, WORKER_BACKOFF_TYPE, failed('QUERY_TIMEOUT'), withOwn(undefined))).toBe(-1);
    expect(await off(1, WORKER_BACKOFF_TYPE, failed('INVALID_PARAMS'), withOwn(undefined))).toBe(-1);
  });
});

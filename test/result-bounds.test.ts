/**
 * Results are bounded before they are in memory (issue 10 item 2): the server is asked for at most
 * maxRows + 1 rows, and rows are counted in bytes as they arrive. A worker given eight jobs whose
 * lens would return 2,000,000 rows each keeps its memory flat and fails them at once with
 * RESULT_TOO_LARGE (not retried).
 */
import { readFileSync } from 'node:fs';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LensfleetError } from '../src/errors.js';
import { executeLens } from '../src/execute.js';
import { createTenants, killWorker, makeTestPool, redisUrl, spawnWorker, uniqueId, waitFor, type ChildWorker } from './support/harness.js';
import { seriesLens } from './support/test-lenses.js';

const TENANT = uniqueId('yBig');
let tenants: Awaited<ReturnType<typeof createTenants>>;

beforeAll(async () => {
  tenants = await createTenants([TENANT], 4);
});
afterAll(async () => {
  await tenants?.drop();
});

/** Resident set size of a process, in bytes (Linux). */
function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) * 1024;
}

describe('result bounds', () => {
  it('rows past maxRows are never read: RESULT_TOO_LARGE after maxRows + 1 rows, connection kept', async () => {
    const { pool } = makeTestPool(TENANT, tenants.dbs[0]!.databaseUrl, { minSize: 0 }, 1);
    try {
      const started = performance.now();
      // 100,000,000 rows: producing them all would take minutes (and hit the lens's 30 s timeout).
      const err = await executeLens(pool, seriesLens, { rows: 100_000_000, width: 8 }).catch((e: unknown) => e);
      const ms = performance.now() - started;
      expect((err as LensfleetError).code).toBe('RESULT_TOO_LARGE');
      expect((err as LensfleetError).retryable).toBe(false);
      // The server stopped at 11 rows, and the connection stayed.
      expect(ms).toBeLessThan(2000);
      expect(pool.stats().connections_closed_total).toEqual({});
      const ok = await executeLens(pool, seriesLens, { rows: 10, width: 8 });
      expect(ok.rowCount).toBe(10);
    } finally {
      await pool.close();
    }
  });

  it('rows past the byte cap fail with RESULT_TOO_LARGE (never a silent truncation)', async () => {
    const { pool } = makeTestPool(TENANT, tenants.dbs[0]!.databaseUrl, { minSize: 0 }, 1);
    try {
      // 5 rows of 1,000 characters: within maxRows (10) but over a 2,000-byte cap.
      const err = await executeLens(pool, seriesLens, { rows: 5, width: 1000 }, { maxResultBytes: 2000 }).catch((e: unknown) => e);
      expect((err as LensfleetError).code).toBe('RESULT_TOO_LARGE');
      expect((err as Error).message).toMatch(/more than 2000 bytes/);
      const ok = await executeLens(pool, seriesLens, { rows: 1, width: 1000 }, { maxResultBytes: 2000 });
      expect(ok.rows[0]!.pad).toHaveLength(1000);
    } finally {
      await pool.close();
    }
  });

  it('a worker given 8 concurrent 2,000,000-row jobs (maxRows 10) keeps its RSS growth under 20 MB and fails each once', async () => {
    const queueName = uniqueId('big');
    let worker: ChildWorker | undefined;
    const queue = new Queue(queueName, { connection: { url: redisUrl() } });
    try {
      worker = await spawnWorker({ LENSFLEET_QUEUE: queueName, LENSFLEET_TENANTS: TENANT, ...tenants.env, LENSFLEET_CONCURRENCY: '8', LOG_LEVEL: 'warn' });
      const pid = worker.proc.pid!;
      // Warm the process (pool, prepared statement, JIT) before the baseline.
      await queue.add('w', { v: 1, tenant: TENANT, lens: 'test.series', params: { rows: 5 } });
      await waitFor('warm-up job', async () => (await queue.getJobCounts('completed')).completed === 1);
      const baseline = rssBytes(pid);
      let peak = baseline;
      const sampler = setInterval(() => {
        peak = Math.max(peak, rssBytes(pid));
      }, 10);
      const jobs = await queue.addBulk(
        Array.from({ length: 8 }, () => ({
          name: 'big',
          data: { v: 1, tenant: TENANT, lens: 'test.series', params: { rows: 2_000_000 } },
          opts: { attempts: 5 },
        })),
      );
      await waitFor('8 failed jobs', async () => (await queue.getJobCounts('failed')).failed === 8, 60_000);
      clearInterval(sampler);
      const growthMb = (peak - baseline) / 1024 / 1024;
      console.log(
        `[figure] worker RSS ${Math.round(baseline / 1024 / 1024)} MB before, peak +${growthMb.toFixed(1)} MB during 8 concurrent 2M-row jobs (maxRows 10)`,
      );
      expect(growthMb).toBeLessThan(20);
      for (const j of jobs) {
        const job = (await queue.getJob(j.id!))!;
        expect(job.failedReason).toMatch(/^RESULT_TOO_LARGE: /);
        expect(job.attemptsMade).toBe(1);
      }
    } finally {
      await killWorker(worker);
      await queue.obliterate({ force: true }).catch(() => {});
      await queue.close();
    }
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enqueueMany } from '../queues/producer.js';
import { admin, createTenants, startTestWorker, type TestWorker, uniqueId, waitFor } from './support/harness.js';

const DOWN = uniqueId('yBrkDown');
const UP = uniqueId('yBrkUp');
const THRESHOLD = 3;
/** Retried failures (each adds to the count) until the breaker opens, then none: 3 attempts is plenty. */
const RETRY = { attempts: 3, backoff: { type: 'fixed', delay: 50 } } as const;

let tenants: Awaited<ReturnType<typeof createTenants>>;
let downDb: string;

/** Refuse (or accept again) every new connection to DOWN's database, and end the open ones. */
async function setDown(down: boolean): Promise<void> {
  await admin(async (c) => {
    await c.query(`ALTER DATABASE "${downDb}" WITH ALLOW_CONNECTIONS ${down ? 'false' : 'true'}`);
    if (down) await c.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [downDb]);
  });
}

beforeAll(async () => {
  tenants = await createTenants([DOWN, UP], 5);
  downDb = tenants.dbs.find((d) => d.tenant === DOWN)!.database;
});
afterAll(async () => {
  if (downDb) await setDown(false).catch(() => {});
  await tenants?.drop();
});

function start(failures: number): Promise<TestWorker> {
  return startTestWorker({
    env: { ...tenants.env, LENSFLEET_TENANTS: `${DOWN},${UP}` },
    concurrency: 8,
    pool: { maxSize: 4, maxOverflow: 0, connectTimeoutMs: 2000 },
    settings: {
      LENSFLEET_BREAKER_FAILURES: String(failures),
      LENSFLEET_BREAKER_COOLDOWN_MS: '300',
      LENSFLEET_BREAKER_MAX_COOLDOWN_MS: '1200',
      LOG_LEVEL: 'info',
    },
  });
}

interface PoolsBody {
  pools: { tenant: string; breaker: { state: string; failures: number } }[];
  breakers: { tenant: string; state: string; failures: number; since: string }[];
}

const metricValue = (text: string, name: string, labels: string): number => {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return Number(line?.split(' ').at(-1) ?? Number.NaN);
};

describe('per-tenant circuit breaker', () => {
  it('opens on repeated connect failures: DOWN’s jobs are delayed (no attempt burnt) while UP’s complete; a probe closes it when the database is back and every job completes', async () => {
    await setDown(true);
    const w = await start(THRESHOLD);
    const base = `http://127.0.0.1:${w.service.port}`;
    const pools = async () => (await (await fetch(`${base}/pools`)).json()) as PoolsBody;
    try {
      const down = await enqueueMany(
        w.queue,
        Array.from({ length: 30 }, () => ({ tenant: DOWN, lens: 'test.whoami' })),
        RETRY,
      );
      await waitFor('DOWN’s breaker open', async () => (await pools()).breakers.some((b) => b.tenant === DOWN && b.state !== 'closed'), 30_000);

      // While it is open: UP runs as usual, DOWN's jobs wait in the delayed set.
      const t0 = Date.now();
      const up = await enqueueMany(
        w.queue,
        Array.from({ length: 100 }, () => ({ tenant: UP, lens: 'test.whoami' })),
        RETRY,
      );
      await Promise.all(up.map((j) => j.waitUntilFinished(w.events, 30_000)));
      const upMs = Date.now() - t0;
      const during = await pools();
      const downBreaker = during.breakers.find((b) => b.tenant === DOWN);
      expect(downBreaker?.state, 'still open (or probing) after UP’s jobs').not.toBe('closed');
      expect(downBreaker!.failures).toBeGreaterThanOrEqual(THRESHOLD);
      expect(during.pools.find((p) => p.tenant === UP)?.breaker).toEqual({ state: 'closed', failures: 0 });
      const delayed = (await w.queue.getJobs(['delayed'])).filter((j) => j.data.tenant === DOWN);
      expect(delayed.length, 'DOWN’s jobs wait delayed').toBeGreaterThan(0);
      // Only the failures before it opened (and failed probes) used attempts: far fewer than the jobs.
      const attemptsUsed = (await Promise.all(down.map((j) => w.queue.getJob(j.id!)))).reduce((s, j) => s + (j?.attemptsMade ?? 0), 0);
      expect(attemptsUsed).toBeLessThan(down.length);
      expect(await w.queue.getJobCounts('failed')).toEqual({ failed: 0 });
      const text = await (await fetch(`${base}/metrics`)).text();
      expect(metricValue(text, 'lensfleet_breaker_state', `tenant="${DOWN}"`)).toBeGreaterThanOrEqual(1);
      expect(metricValue(text, 'lensfleet_breaker_state', `tenant="${UP}"`)).toBe(0);
      expect(metricValue(text, 'lensfleet_job_deferrals_total', `tenant="${DOWN}",reason="breaker_open"`)).toBeGreaterThan(0);
      expect(metricValue(text, 'lensfleet_breaker_transitions_total', `tenant="${DOWN}",to="open"`)).toBeGreaterThanOrEqual(1);
      console.info(
        `[breaker] UP's 100 jobs took ${upMs} ms while DOWN's breaker was open; DOWN: ${delayed.length} delayed, ${attemptsUsed} attempts used by 30 jobs`,
      );

      // The database is back: the next probe connects, the breaker closes, every job completes.
      await setDown(false);
      await waitFor(
        'all of DOWN’s jobs completed',
        async () => (await Promise.all(down.map((j) => j.getState()))).every((s) => s === 'completed'),
        60_000,
        100,
      );
      const after = await pools();
      expect(after.breakers.filter((b) => b.tenant === DOWN)).toEqual([]);
      expect(after.pools.find((p) => p.tenant === DOWN)?.breaker.state).toBe('closed');
      expect(await w.queue.getJobCounts('failed')).toEqual({ failed: 0 });
      const final = await (await fetch(`${base}/metrics`)).text();
      expect(metricValue(final, 'lensfleet_breaker_transitions_total', `tenant="${DOWN}",to="closed"`)).toBe(1);
      expect(metricValue(final, 'lensfleet_breaker_transitions_total', `tenant="${DOWN}",to="half_open"`)).toBeGreaterThanOrEqual(1);
      expect(w.logs.find((l) => l.tenant === DOWN && String(l.msg).startsWith('circuit breaker open')).length).toBeGreaterThanOrEqual(1);
    } finally {
      await w.close();
      await setDown(false);
    }
  }, 120_000);

  it('without a breaker (LENSFLEET_BREAKER_FAILURES=0) the same jobs burn their attempts and fail', async () => {
    await setDown(true);
    const w = await start(0);
    try {
      const down = await enqueueMany(
        w.queue,
        Array.from({ length: 10 }, () => ({ tenant: DOWN, lens: 'test.whoami' })),
        RETRY,
      );
      await waitFor('DOWN’s jobs failed', async () => (await Promise.all(down.map((j) => j.getState()))).every((s) => s === 'failed'), 60_000, 100);
      const jobs = await Promise.all(down.map((j) => w.queue.getJob(j.id!)));
      expect(jobs.every((j) => j?.attemptsMade === RETRY.attempts && j.failedReason.startsWith('CONNECTION_FAILED'))).toBe(true);
    } finally {
      await w.close();
      await setDown(false);
    }
  }, 120_000);
});

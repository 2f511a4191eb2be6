/**
 * Deadlines all the way down (issue 13 item 6): a lens's timeout bounds the wait for a connection
 * and the statement together, and a job that timed out leaves no backend running its query.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { LensfleetError } from '../src/errors.js';
import { executeLens } from '../src/execute.js';
import { defineLens } from '../src/lens.js';
import { createTenants, makeTestPool, pgAdminUrl, uniqueId, waitFor } from './support/harness.js';

const TENANT = uniqueId('yDead');
let tenants: Awaited<ReturnType<typeof createTenants>>;

beforeAll(async () => {
  tenants = await createTenants([TENANT], 4);
});
afterAll(async () => {
  await tenants?.drop();
});

const sleeper = defineLens({
  name: 'deadline.sleep',
  params: z.object({ seconds: z.number() }),
  sql: ({ seconds }) => ({ text: 'SELECT pg_sleep($1::float8) AS slept', values: [seconds] }),
  timeoutMs: 1000,
});

/** Backends of the tenant's database still running a pg_sleep, seen from outside. */
async function sleepingBackends(database: string): Promise<number> {
  const c = new pg.Client({ connectionString: pgAdminUrl() });
  await c.connect();
  try {
    const r = await c.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND state = 'active' AND query LIKE '%pg_sleep%'",
      [database],
    );
    return r.rows[0]!.n;
  } finally {
    await c.end();
  }
}

describe('deadlines', () => {
  it('a 30 s pg_sleep lens with a 1 s timeout fails with QUERY_TIMEOUT and leaves no active backend after 2 s', async () => {
    const { pool } = makeTestPool(TENANT, tenants.dbs[0]!.databaseUrl, { minSize: 0 }, 2);
    try {
      const started = performance.now();
      const err = (await executeLens(pool, sleeper, { seconds: 30 }).catch((e: unknown) => e)) as LensfleetError;
      expect(err.code).toBe('QUERY_TIMEOUT');
      expect(performance.now() - started).toBeLessThan(2000);
      await new Promise((r) => setTimeout(r, Math.max(0, 2000 - (performance.now() - started))));
      expect(await sleepingBackends(tenants.dbs[0]!.database)).toBe(0);
    } finally {
      await pool.close();
    }
  });

  it('the wait for a connection counts against the lens timeout: a job that waited 700 ms gets ~300 ms of statement time', async () => {
    const { pool } = makeTestPool(TENANT, tenants.dbs[0]!.databaseUrl, { minSize: 1, maxSize: 1, maxOverflow: 0 }, 1);
    try {
      await pool.warm();
      const held = await pool.acquire();
      setTimeout(() => pool.release(held), 700);
      const started = performance.now();
      // 0.6 s of sleep would fit the 1 s timeout alone, not after a 0.7 s wait.
      const err = (await executeLens(pool, sleeper, { seconds: 0.6 }).catch((e: unknown) => e)) as LensfleetError;
      const ms = performance.now() - started;
      expect(err.code).toBe('QUERY_TIMEOUT');
      expect(ms).toBeLessThan(1300);
      // Without the wait, the same job completes.
      await executeLens(pool, sleeper, { seconds: 0.6 });
    } finally {
      await pool.close();
    }
  });

  it('a connection that stays busy past the lens timeout fails the acquire at the lens timeout (not acquireTimeoutMs)', async () => {
    const { pool } = makeTestPool(TENANT, tenants.dbs[0]!.databaseUrl, { minSize: 1, maxSize: 1, maxOverflow: 0, acquireTimeoutMs: 10_000 }, 1);
    try {
      await pool.warm();
      const held = await pool.acquire();
      const started = performance.now();
      const err = (await executeLens(pool, sleeper, { seconds: 0 }).catch((e: unknown) => e)) as LensfleetError;
      const ms = performance.now() - started;
      pool.release(held);
      expect(err.code).toBe('POOL_TIMEOUT');
      expect(err.message).toContain('timed out after 1000 ms');
      expect(ms).toBeGreaterThanOrEqual(950);
      expect(ms).toBeLessThan(5000);
      await waitFor('pool idle again', () => pool.stats().waiting === 0 && pool.stats().inUse === 0);
    } finally {
      await pool.close();
    }
  });
});

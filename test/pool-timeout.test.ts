/**
 * Acquire timeouts: a job that cannot get a connection within acquireTimeoutMs fails with a typed,
 * retryable POOL_TIMEOUT stating the pool's numbers, is retried and completes, while the tenant
 * database never sees more connections than the pool's ceiling. A connection that arrives after
 * its waiter gave up goes back to the pool instead of leaking.
 */
import { performance } from 'node:perf_hooks';
import type { Job } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enqueue } from '../queues/producer.js';
import { DEFAULT_POOL_SETTINGS } from '../src/config.js';
import { LensfleetError } from '../src/errors.js';
import { TenantPool, type PoolClient } from '../src/pool/tenant-pool.js';
import { Secret } from '../src/secret.js';
import { countConnections, createTenants, sampleConnections, startTestWorker, uniqueId, waitFor, type TestWorker } from './support/harness.js';

const TENANT = uniqueId('yPto');

describe('pool acquire timeout', () => {
  let tenants: Awaited<ReturnType<typeof createTenants>>;

  beforeAll(async () => {
    tenants = await createTenants([TENANT], 10);
  });
  afterAll(async () => {
    await tenants?.drop();
  });

  describe('in a worker (maxSize 1, maxOverflow 0, acquireTimeoutMs 300, concurrency 2)', () => {
    let w: TestWorker;

    beforeAll(async () => {
      w = await startTestWorker({ env: tenants.env, concurrency: 2, pool: { maxSize: 1, maxOverflow: 0, acquireTimeoutMs: 300 } });
    });
    afterAll(async () => {
      await w?.close();
    });

    it('fails the waiting job with POOL_TIMEOUT stating the pool numbers, retries it to completion, never exceeding 1 connection', async () => {
      const database = tenants.dbs[0]!.database;
      const failures: { id: string | undefined; attempt: number; message: string }[] = [];
      w.service.worker.on('failed', (job: Job | undefined, err: Error) => {
        failures.push({ id: job?.id, attempt: job?.attemptsMade ?? -1, message: err.message });
      });
      const sampler = sampleConnections(database, 10);
      let maxSeen: number | undefined;
      try {
        const a = await enqueue(w.queue, { tenant: TENANT, lens: 'test.sleep', params: { seconds: 1.2 } }, { attempts: 1 });
        const tenant = w.tenants.getPg(TENANT);
        // A holds the only connection.
        await waitFor('job A to hold the connection', () => w.service.registry.peek(tenant)?.stats().inUse === 1, 5000, 10);
        const b = await enqueue(w.queue, { tenant: TENANT, lens: 'test.whoami' }, { attempts: 5, backoff: { type: 'fixed', delay: 400 } });

        const [ra, rb] = await Promise.all([a.waitUntilFinished(w.events, 10_000), b.waitUntilFinished(w.events, 10_000)]);
        expect(ra.rows[0]).toMatchObject({ db: database });
        expect(rb.rows[0]).toMatchObject({ db: database });

        const bFailures = failures.filter((f) => f.id === b.id);
        expect(bFailures.length).toBeGreaterThanOrEqual(1);
        const first = bFailures[0]!;
        expect(first.message).toMatch(/^POOL_TIMEOUT: /);
        expect(first.message).toContain('300 ms');
        expect(first.message).toContain('total=1');
        expect(first.message).toContain('active=1');
        expect(first.message).toContain('waiting=');
        expect(first.message).toContain('max=1');
        // Every failed attempt of B was a pool timeout; A never failed.
        for (const f of bFailures) expect(f.message).toMatch(/^POOL_TIMEOUT: /);
        expect(failures.filter((f) => f.id === a.id)).toEqual([]);

        const storedB = await w.queue.getJob(b.id!);
        expect(await storedB!.getState()).toBe('completed');
        expect(storedB!.attemptsMade).toBeGreaterThanOrEqual(1);
        expect(storedB!.attemptsMade).toBeGreaterThanOrEqual(bFailures.length);

        const stats = w.service.registry.peek(tenant)!.stats();
        expect(stats.acquire_timeouts_total).toBeGreaterThanOrEqual(1);
        expect(stats.max).toBe(1);
        expect(stats.size).toBeLessThanOrEqual(1);
        expect(stats.inUse).toBe(0);
        expect(stats.waiting).toBe(0);

        const metrics = await w.service.metrics.metrics();
        const line = metrics.split('\n').find((l) => l.startsWith(`lensfleet_pool_acquire_timeouts_total{tenant="${TENANT}"}`));
        expect(line).toBeDefined();
        expect(Number(line!.split(' ').pop())).toBeGreaterThanOrEqual(1);
      } finally {
        maxSeen = await sampler.stop();
      }
      expect(maxSeen).toBe(1);
    });
  });

  describe('TenantPool (maxSize 1): a connection arriving after its waiter timed out', () => {
    let pool: TenantPool;

    beforeAll(() => {
      pool = new TenantPool({
        tenant: TENANT,
        key: `${TENANT}:service`,
        databaseUrl: new Secret(tenants.dbs[0]!.databaseUrl),
        settings: { ...DEFAULT_POOL_SETTINGS, minSize: 1, maxSize: 1, maxOverflow: 0, acquireTimeoutMs: 300 },
        max: 1,
        pooling: true,
      });
      // connect outside the 300 ms acquire deadline: a slow connect under load is not the timeout meant here
      return pool.warm();
    });
    afterAll(async () => {
      await pool?.close();
    });

    it('goes back to the pool, not leaked: stats inUse 0, idle 1, size 1, and the next acquire is immediate', async () => {
      const first: PoolClient = await pool.acquire();
      const pid1 = (await first.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;

      const started = performance.now();
      const err = await pool.acquire().then(
        () => undefined,
        (e: unknown) => e,
      );
      const waited = performance.now() - started;
      expect(err).toBeInstanceOf(LensfleetError);
      expect((err as LensfleetError).code).toBe('POOL_TIMEOUT');
      expect((err as LensfleetError).retryable).toBe(true);
      expect(waited).toBeGreaterThanOrEqual(280);
      expect(waited).toBeLessThan(1500);
      expect(pool.stats()).toMatchObject({ inUse: 1, waiting: 0, size: 1, acquire_timeouts_total: 1 });

      // #1 releases: pg-pool hands the connection to the abandoned waiter, which must give it back.
      pool.release(first);
      await waitFor('the connection to be idle again', () => pool.stats().idle === 1, 2000, 10);
      expect(pool.stats()).toMatchObject({ inUse: 0, idle: 1, size: 1, waiting: 0, leaks_total: 0 });

      const t3 = performance.now();
      const third = await pool.acquire();
      const took = performance.now() - t3;
      try {
        expect(took).toBeLessThan(150);
        const pid3 = (await third.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
        // The same backend: reused, not a fresh connection next to a leaked one.
        expect(pid3).toBe(pid1);
        expect(pool.stats()).toMatchObject({ inUse: 1, idle: 0, size: 1, connections_opened_total: 1 });
        expect(await countConnections(tenants.dbs[0]!.database)).toBe(1);
      } finally {
        pool.release(third);
      }
      expect(pool.stats()).toMatchObject({ inUse: 0, idle: 1, size: 1 });
    });
  });
});

/**
 * Tenant pool registry against real Postgres: single flight, one pool object per tenant, the
 * concurrency clamp, and failed creations not cached.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enqueueMany } from '../queues/producer.js';
import { DEFAULT_POOL_SETTINGS } from '../src/config.js';
import { LensfleetError } from '../src/errors.js';
import { PoolRegistry } from '../src/pool/registry.js';
import { Secret } from '../src/secret.js';
import { TenantDirectory, type PgTenant } from '../src/tenants.js';
import { countConnections, createTenants, LogCapture, sampleConnections, startTestWorker, uniqueId, waitFor } from './support/harness.js';

const A = uniqueId('ySF');
const B = uniqueId('yClamp');

describe('pool registry', () => {
  let tenants: Awaited<ReturnType<typeof createTenants>>;
  beforeAll(async () => {
    tenants = await createTenants([A, B]);
  });
  afterAll(async () => {
    await tenants?.drop();
  });

  it('single flight: 100 concurrent first jobs for a new tenant create one pool, never above the effective max', async () => {
    const w = await startTestWorker({ env: tenants.env, concurrency: 16, pool: { minSize: 5, maxSize: 20, maxOverflow: 5 } });
    const sampler = sampleConnections(`lf_${A}`, 5);
    try {
      const jobs = await enqueueMany(
        w.queue,
        Array.from({ length: 100 }, () => ({ tenant: A, lens: 'receiving.recent', params: { limit: 5 } })),
      );
      await Promise.all(jobs.map((j) => j.waitUntilFinished(w.events, 30_000)));
      expect(w.service.registry.created).toBe(1);
      expect(w.service.registry.keys()).toEqual([`${A}:service`]);
      const [stats] = w.service.registry.stats();
      expect(stats!.max).toBe(16);
      expect(stats!.requests_total).toBe(100);
    } finally {
      const maxSeen = await sampler.stop();
      await w.close();
      expect(maxSeen).toBeGreaterThan(0);
      expect(maxSeen).toBeLessThanOrEqual(16);
    }
  });

  it('single flight at the registry: 100 simultaneous get() calls resolve to one pool object', async () => {
    const logs = new LogCapture();
    const registry = new PoolRegistry({ concurrency: 8, logger: logs.logger });
    const tenant = pgTenant(A, tenants.env[`${A}_DATABASE_URL`]!);
    try {
      const pools = await Promise.all(Array.from({ length: 100 }, () => registry.get(tenant)));
      expect(new Set(pools).size).toBe(1);
      expect(registry.created).toBe(1);
      // min_size connections were opened when the pool was created
      expect(pools[0]!.stats().size).toBe(5);
    } finally {
      await registry.close();
    }
  });

  it("the guide's unit test, ported: two lookups of the same tenant return the same pool object", async () => {
    const registry = new PoolRegistry({ concurrency: 4, logger: new LogCapture().logger });
    const a = pgTenant(A, tenants.env[`${A}_DATABASE_URL`]!);
    const b = pgTenant(B, tenants.env[`${B}_DATABASE_URL`]!);
    try {
      const first = await registry.get(a);
      const second = await registry.get(a);
      expect(second).toBe(first);
      expect(registry.keys()).toContain(`${A}:service`);
      // and the key honours the tenant argument (the guide's bug: it always used a default tenant)
      const other = await registry.get(b);
      expect(other).not.toBe(first);
      expect(other.key).toBe(`${B}:service`);
    } finally {
      await registry.close();
    }
  });

  it('clamp: max_size 20 with concurrency 4 → at most 4 connections under load, logged once', async () => {
    const w = await startTestWorker({ env: tenants.env, concurrency: 4, pool: { minSize: 0, maxSize: 20, maxOverflow: 5 } });
    const sampler = sampleConnections(`lf_${B}`, 5);
    try {
      const jobs = await enqueueMany(
        w.queue,
        Array.from({ length: 40 }, (_, i) =>
          i % 4 === 0 ? { tenant: B, lens: 'test.sleep', params: { seconds: 0.05 } } : { tenant: B, lens: 'equipment.search', params: { q: 'pump' } },
        ),
      );
      await Promise.all(jobs.map((j) => j.waitUntilFinished(w.events, 30_000)));
      expect(w.service.registry.stats()[0]!.max).toBe(4);
      const clampLines = w.logs.find((e) => typeof e.msg === 'string' && e.msg.includes('clamped to worker concurrency') && e.tenant === B);
      expect(clampLines).toHaveLength(1);
      expect(clampLines[0]).toMatchObject({ maxSize: 20, maxOverflow: 5, concurrency: 4, effectiveMax: 4 });
    } finally {
      const maxSeen = await sampler.stop();
      await w.close();
      expect(maxSeen).toBeGreaterThanOrEqual(2);
      expect(maxSeen).toBeLessThanOrEqual(4);
    }
  });

  it('a failed creation is not cached: the next get() tries again', async () => {
    const registry = new PoolRegistry({ concurrency: 2, logger: new LogCapture().logger });
    const bad = pgTenant('yDown', 'postgres://nobody:pw@127.0.0.1:1/none', { minSize: 1, connectTimeoutMs: 2000 });
    try {
      const first = await registry.get(bad).catch((e: unknown) => e);
      expect(first).toBeInstanceOf(LensfleetError);
      expect((first as LensfleetError).code).toBe('CONNECTION_FAILED');
      expect((first as LensfleetError).retryable).toBe(true);
      const second = await registry.get(bad).catch((e: unknown) => e);
      expect((second as LensfleetError).code).toBe('CONNECTION_FAILED');
      expect(registry.created).toBe(2);
      expect(registry.keys()).toEqual([]);
    } finally {
      await registry.close();
    }
  });

  it('warm-up on start: LENSFLEET_WARM_TENANTS pools exist with min_size connections before any job', async () => {
    const w = await startTestWorker({ env: tenants.env, concurrency: 4, pool: { minSize: 3 }, extra: { warmTenants: [B] } });
    try {
      // Warm-up runs in the background (a warm tenant whose database is down must not keep the
      // worker from starting: test/warm-up.test.ts).
      await waitFor('the warm pool', () => w.logs.find((e) => e.msg === 'pool warmed' && e.tenant === B).length === 1, 10_000, 10);
      expect(w.service.registry.keys()).toEqual([`${B}:service`]);
      expect(w.service.registry.stats()[0]).toMatchObject({ size: 3, requests_total: 0 });
      expect(await countConnections(`lf_${B}`)).toBe(3);
      expect(w.logs.find((e) => e.msg === 'pool warmed' && e.tenant === B)).toHaveLength(1);
    } finally {
      await w.close();
    }
  });

  it('current(): the live pool of exactly this tenant object, synchronously; undefined once the pool is retired, replaced or closed', async () => {
    const logs = new LogCapture();
    const registry = new PoolRegistry({ concurrency: 4, logger: logs.logger });
    const url = tenants.env[`${A}_DATABASE_URL`]!;
    const tenant = pgTenant(A, url, { minSize: 0 });
    try {
      expect(registry.current(tenant)).toBeUndefined();
      const pool = await registry.get(tenant);
      expect(registry.current(tenant)).toBe(pool);
      // An equal object (a reload that changed nothing) is not current until get() has seen it.
      const reloaded = pgTenant(A, url, { minSize: 0 });
      expect(registry.current(reloaded)).toBeUndefined();
      expect(await registry.get(reloaded)).toBe(pool);
      expect(registry.current(reloaded)).toBe(pool);
      // Recycled: new work must not reach the draining pool.
      expect(registry.recycle(A)).toBe(true);
      expect(registry.current(reloaded)).toBeUndefined();
      const second = await registry.get(reloaded);
      expect(second).not.toBe(pool);
      expect(registry.current(reloaded)).toBe(second);
      // Reconfigured (another pool size): the old pool is retired by reconcile.
      const resized = pgTenant(A, url, { minSize: 0, maxSize: 3 });
      expect(registry.reconcile(new TenantDirectory([resized]))).toEqual({ replaced: [A], removed: [] });
      expect(registry.current(reloaded)).toBeUndefined();
      expect(registry.current(resized)).toBeUndefined();
      const third = await registry.get(resized);
      expect(registry.current(resized)).toBe(third);
      await registry.close();
      expect(registry.current(resized)).toBeUndefined();
    } finally {
      await registry.close();
    }
  });

  it('creations that overlap while settings flip (A, then B, then A again during warm-up) leave one live pool, and current() never returns an orphan', async () => {
    const logs = new LogCapture();
    const registry = new PoolRegistry({ concurrency: 4, logger: logs.logger });
    const url = tenants.env[`${A}_DATABASE_URL`]!;
    const first = pgTenant(A, url, { minSize: 2 });
    const flipped = pgTenant(A, url, { minSize: 2, maxSize: 3 });
    const back = pgTenant(A, url, { minSize: 2 });
    try {
      const results = await Promise.allSettled([registry.get(first), registry.get(flipped), registry.get(back)]);
      const live = registry.current(back);
      expect(live).toBeDefined();
      expect(results[2]).toEqual({ status: 'fulfilled', value: live });
      // The first object's pool, if it was ever registered, is out of service now.
      expect(registry.current(first)).toBeUndefined();
      expect(registry.keys()).toEqual([`${A}:service`]);
      // Only the live pool keeps connections once the others have drained.
      await waitFor('only the live pool holds connections', () => registry.connections() === live!.size);
    } finally {
      await registry.close();
    }
  });

  it('a closed registry refuses new pools with POOL_CLOSED', async () => {
    const registry = new PoolRegistry({ concurrency: 2, logger: new LogCapture().logger });
    await registry.close();
    const err = await registry.get(pgTenant(A, tenants.env[`${A}_DATABASE_URL`]!)).catch((e: unknown) => e);
    expect((err as LensfleetError).code).toBe('POOL_CLOSED');
  });
});

function pgTenant(id: string, url: string, pool: Partial<typeof DEFAULT_POOL_SETTINGS> = {}): PgTenant {
  return { id, backend: 'pg', databaseUrl: new Secret(url), pool: { ...DEFAULT_POOL_SETTINGS, ...pool }, pooling: true };
}

/**
 * The pool registry with both backends (src/backends.ts): a Supabase tenant gets its
 * RestTenantPool from the registry like a Postgres tenant gets its TenantPool — lazily and once
 * (single flight), its ceiling clamped to the concurrency, closed when idle, replaced on a reload
 * that changed its URL or key (the old one drains), closed on shutdown — and its sockets stay out
 * of the process connection budget.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTenantPools } from '../src/backends.js';
import { DEFAULT_POOL_SETTINGS, type PoolSettings } from '../src/config.js';
import type { LensfleetError } from '../src/errors.js';
import { receivingRecent } from '../src/lenses/maritime.js';
import { PoolRegistry } from '../src/pool/registry.js';
import { executeRestLens } from '../src/rest/execute.js';
import { RestTenantPool } from '../src/rest/pool.js';
import { Secret } from '../src/secret.js';
import { type PgTenant, type SupabaseTenant, TenantDirectory } from '../src/tenants.js';
import { createTenants, LogCapture, uniqueId, waitFor } from './support/harness.js';
import { type RestTenant, type RestTenants, startRestTenants } from './support/rest-tenants.js';

const P = uniqueId('yRegPg');
let rest: RestTenants;
let t: RestTenant;
let u: RestTenant;
let pgDb: Awaited<ReturnType<typeof createTenants>>;

beforeAll(async () => {
  [rest, pgDb] = await Promise.all([startRestTenants([uniqueId('yRegRest'), uniqueId('yRegRest2')], 10), createTenants([P], 10)]);
  [t, u] = rest.tenants as [RestTenant, RestTenant];
});
afterAll(async () => {
  await rest?.close();
  await pgDb?.drop();
});

function supabaseTenant(of: RestTenant, pool: Partial<PoolSettings> = {}, overrides: Partial<SupabaseTenant> = {}): SupabaseTenant {
  return Object.freeze({
    id: of.id,
    backend: 'supabase',
    supabaseUrl: of.standIn.url,
    serviceKey: new Secret(of.serviceKey),
    pool: { ...DEFAULT_POOL_SETTINGS, minSize: 0, ...pool },
    pooling: true,
    ...overrides,
  });
}

function pgTenant(id: string, pool: Partial<PoolSettings> = {}): PgTenant {
  return Object.freeze({
    id,
    backend: 'pg',
    databaseUrl: new Secret(pgDb.env[`${id}_DATABASE_URL`]!),
    pool: { ...DEFAULT_POOL_SETTINGS, minSize: 1, ...pool },
    pooling: true,
  });
}

describe('REST pools in the registry', () => {
  it('single flight: 100 simultaneous get() calls for a Supabase tenant make one RestTenantPool, keyed like a pg pool, clamped to the concurrency (logged once)', async () => {
    const logs = new LogCapture();
    const registry = createTenantPools({ concurrency: 3, logger: logs.logger });
    try {
      const tenant = supabaseTenant(t);
      const pools = await Promise.all(Array.from({ length: 100 }, () => registry.get(tenant)));
      expect(new Set(pools).size).toBe(1);
      expect(pools[0]).toBeInstanceOf(RestTenantPool);
      expect(registry.created).toBe(1);
      expect(registry.current(tenant)).toBe(pools[0]);
      expect(registry.keys()).toEqual([`${t.id}:service`]);
      // maxSize 20 + maxOverflow 5 > concurrency 3: the effective max is 3, as for a pg pool.
      expect(registry.stats()).toMatchObject([{ tenant: t.id, key: `${t.id}:service`, max: 3, min: 0, size: 0 }]);
      await registry.get(supabaseTenant(t)); // another object, same settings: the same pool, no second log line
      expect(logs.find((e) => e.msg === 'pool created')).toMatchObject([{ tenant: t.id, backend: 'supabase', max: 3 }]);
      expect(logs.find((e) => typeof e.msg === 'string' && e.msg.startsWith('pool max clamped'))).toMatchObject([{ tenant: t.id, effectiveMax: 3 }]);
    } finally {
      await registry.close();
    }
  });

  it('a pg and a Supabase tenant in one registry: each gets its own kind; stats have the same keys; only pg connections count in connections()', async () => {
    const registry = createTenantPools({ concurrency: 4, logger: new LogCapture().logger });
    try {
      const pgPool = await registry.get(pgTenant(P));
      const restPool = await registry.get(supabaseTenant(t));
      expect(pgPool.backend).toBe('pg');
      expect(restPool.backend).toBe('supabase');
      if (restPool.backend !== 'supabase') throw new Error('unreachable');
      await executeRestLens(restPool, receivingRecent, receivingRecent.parse({ limit: 1 }), undefined);
      const [pgStats, restStats] = [pgPool.stats(), restPool.stats()];
      expect(Object.keys(restStats).sort()).toEqual(Object.keys(pgStats).sort());
      expect(restStats).toMatchObject({ size: 1, connections_opened_total: 1 });
      expect(registry.keys().sort()).toEqual([`${P}:service`, `${t.id}:service`].sort());
      // The REST socket is open, but the process connection budget counts database connections.
      expect(pgPool.open).toBe(1);
      expect(registry.connections()).toBe(1);
    } finally {
      await registry.close();
    }
  });

  it('a REST socket takes no room in the process budget: a pg pool opens up to the budget beside it', async () => {
    const registry = createTenantPools({ concurrency: 4, processMaxConnections: 1, logger: new LogCapture().logger });
    try {
      const restPool = await registry.get(supabaseTenant(t));
      if (restPool.backend !== 'supabase') throw new Error('unreachable');
      await executeRestLens(restPool, receivingRecent, receivingRecent.parse({ limit: 1 }), undefined);
      expect(restPool.stats().size).toBe(1);
      // minSize 1 with a budget of 1: it opens at once, though a REST socket is open.
      const pgPool = await registry.get(pgTenant(P, { connectTimeoutMs: 1000 }));
      expect(pgPool.stats().size).toBe(1);
    } finally {
      await registry.close();
    }
  });

  it('reconcile: a changed service key or URL gets a new pool while the old one drains; unchanged keeps it; a removed tenant closes its pool', async () => {
    const closed: string[] = [];
    const registry = createTenantPools({ concurrency: 4, logger: new LogCapture().logger, onPoolClosed: (id) => closed.push(id) });
    try {
      const first = await registry.get(supabaseTenant(t));
      const other = await registry.get(supabaseTenant(u));
      // Same settings in new objects: nothing changes.
      expect(registry.reconcile(new TenantDirectory([supabaseTenant(t), supabaseTenant(u)]))).toEqual({ replaced: [], removed: [] });
      expect(await registry.get(supabaseTenant(t))).toBe(first);

      // A rotated service key: a new pool; the old one closes.
      const rotated = supabaseTenant(t, {}, { serviceKey: new Secret(`${t.serviceKey}x`) });
      expect(registry.reconcile(new TenantDirectory([rotated, supabaseTenant(u)]))).toEqual({ replaced: [t.id], removed: [] });
      expect(registry.current(rotated)).toBeUndefined();
      const second = await registry.get(rotated);
      expect(second).not.toBe(first);
      await waitFor('the old pool to close', () => (first as RestTenantPool).closed, 5000, 10);

      // A changed URL: another new pool.
      const moved = supabaseTenant(t, {}, { supabaseUrl: `${t.standIn.url}/` });
      expect(registry.reconcile(new TenantDirectory([moved, supabaseTenant(u)]))).toEqual({ replaced: [t.id], removed: [] });
      expect(await registry.get(moved)).not.toBe(second);

      // Removed: its pool closes and its series go.
      expect(registry.reconcile(new TenantDirectory([moved]))).toEqual({ replaced: [], removed: [u.id] });
      await waitFor('the removed tenant’s pool to close', () => (other as RestTenantPool).closed, 5000, 10);
      expect(registry.keys()).toEqual([`${t.id}:service`]);
      expect(closed).toEqual([t.id, t.id, u.id]);
    } finally {
      await registry.close();
    }
  });

  it('reconcile: a tenant moved from Postgres to Supabase (same id) gets a REST pool; the pg pool drains', async () => {
    const registry = createTenantPools({ concurrency: 4, logger: new LogCapture().logger });
    try {
      const before = await registry.get(pgTenant(P));
      const after = supabaseTenant(t, {}, { id: P });
      expect(registry.reconcile(new TenantDirectory([after]))).toEqual({ replaced: [P], removed: [] });
      const now = await registry.get(after);
      expect(now.backend).toBe('supabase');
      await waitFor('the pg pool to close', () => before.backend === 'pg' && before.closed, 5000, 10);
      expect(registry.connections()).toBe(0);
    } finally {
      await registry.close();
    }
  });

  it('an unused REST pool is closed after poolIdleTimeoutMs (onPoolClosed); a busy one is not', async () => {
    const closed: string[] = [];
    const registry = createTenantPools({ concurrency: 4, logger: new LogCapture().logger, onPoolClosed: (id) => closed.push(id), maintenanceIntervalMs: 50 });
    try {
      const idle = (await registry.get(supabaseTenant(t, { poolIdleTimeoutMs: 300 }))) as RestTenantPool;
      const busy = (await registry.get(supabaseTenant(u, { poolIdleTimeoutMs: 300 }))) as RestTenantPool;
      const held = await busy.acquire();
      await waitFor('the idle REST pool to be closed', () => idle.closed, 5000, 10);
      expect(closed).toEqual([t.id]);
      expect(registry.keys()).toEqual([`${u.id}:service`]);
      expect(busy.closed).toBe(false);
      held.release();
    } finally {
      await registry.close();
    }
  });

  it('close() closes REST pools too; later get() calls fail with POOL_CLOSED', async () => {
    const registry = createTenantPools({ concurrency: 4, logger: new LogCapture().logger });
    const pool = (await registry.get(supabaseTenant(t))) as RestTenantPool;
    await registry.close();
    expect(pool.closed).toBe(true);
    expect(registry.keys()).toEqual([]);
    const err = (await registry.get(supabaseTenant(t)).catch((e: unknown) => e)) as LensfleetError;
    expect(err.code).toBe('POOL_CLOSED');
  });

  it('a registry without a factory for the backend (the Postgres default) refuses a Supabase tenant with TENANT_UNSUPPORTED, and creates nothing', async () => {
    const registry = new PoolRegistry({ concurrency: 4, logger: new LogCapture().logger });
    try {
      const err = (await registry.get(supabaseTenant(t) as never).catch((e: unknown) => e)) as LensfleetError;
      expect(err.code).toBe('TENANT_UNSUPPORTED');
      expect(err.retryable).toBe(false);
      expect(registry.created).toBe(0);
    } finally {
      await registry.close();
    }
  });
});

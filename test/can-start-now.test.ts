/**
 * `ManagedPool.canStartNow` (issue 13 §4): the question the job processor asks a tenant's pool
 * before it waits for a connection — would this job be served now, or queue behind others? On
 * real Postgres (TenantPool, pooled and unpooled, and with a fleet cap whose leases are a fake:
 * a lease that never comes is the point) and on the Supabase stand-in (RestTenantPool).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_POOL_SETTINGS } from '../src/config.js';
import type { PoolClient } from '../src/pool/tenant-pool.js';
import { TenantPool } from '../src/pool/tenant-pool.js';
import type { ConnectionLease, PoolLeases } from '../src/pool/types.js';
import type { RestLease } from '../src/rest/pool.js';
import { Secret } from '../src/secret.js';
import { createTenants, makeTestPool, sleep, uniqueId, waitFor } from './support/harness.js';
import { makeRestPool, type RestTenants, startRestTenants } from './support/rest-tenants.js';

const TENANT = uniqueId('yCsn');
let tenants: Awaited<ReturnType<typeof createTenants>>;
let databaseUrl: string;
let rest: RestTenants;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  [tenants, rest] = await Promise.all([createTenants([TENANT], 5), startRestTenants([uniqueId('yCsnRest')], 10)]);
  databaseUrl = tenants.dbs[0]!.databaseUrl;
});
afterEach(async () => {
  await Promise.race([Promise.allSettled(cleanups.splice(0).map((c) => c())), sleep(5000)]);
});
afterAll(async () => {
  await Promise.allSettled([tenants?.drop(), rest?.close()]);
});

function pgPool(max: number, pooling = true) {
  const made = makeTestPool(TENANT, databaseUrl, { minSize: 0, maxSize: max, maxOverflow: 0, acquireTimeoutMs: 5000 }, max, uniqueId('lfcsn'), pooling);
  cleanups.push(() => made.pool.close());
  return made.pool;
}

describe('TenantPool.canStartNow', () => {
  it('true while a connection is idle or one more may open; false at max in use, and while an acquire waits', async () => {
    const pool = pgPool(2);
    expect(pool.canStartNow(), 'empty pool: room to open').toBe(true);
    const a = await pool.acquire();
    expect(pool.canStartNow(), 'one of two in use').toBe(true);
    const b = await pool.acquire();
    expect(pool.canStartNow(), 'both in use, none may open').toBe(false);
    pool.release(a);
    expect(pool.idleCount).toBe(1);
    expect(pool.canStartNow(), 'one idle').toBe(true);
    const c = await pool.acquire();
    const waiter = pool.acquire();
    expect(pool.waiting).toBe(1);
    pool.release(b);
    const d = await waiter;
    // Only the queue can say no now: released and reacquired, nothing idle, nothing waiting.
    expect(pool.canStartNow()).toBe(false);
    const queued = pool.acquire();
    pool.release(c);
    const e = await queued;
    pool.release(d);
    // An idle connection, but an acquire already waits first: it gets it.
    const f = await pool.acquire();
    const late = pool.acquire();
    expect(pool.waiting).toBe(1);
    expect(pool.canStartNow(), 'an acquire waits: a new one would queue behind it').toBe(false);
    pool.release(e);
    pool.release(await late);
    pool.release(f);
  });

  it('maxQueued: true while fewer than that many acquires wait for the pool’s own connections', async () => {
    const pool = pgPool(1);
    const a = await pool.acquire();
    expect(pool.canStartNow(), 'in use, nothing may open').toBe(false);
    expect(pool.canStartNow(2), 'it would wait first in line').toBe(true);
    const w1 = pool.acquire();
    expect(pool.canStartNow(2), 'second in line').toBe(true);
    const w2 = pool.acquire();
    expect(pool.waiting).toBe(2);
    expect(pool.canStartNow(2), 'two wait already').toBe(false);
    pool.release(a);
    const b = await w1;
    pool.release(b);
    pool.release(await w2);
  });

  it('without pooling: false once max connections are open (each job opens its own)', async () => {
    const pool = pgPool(1, false);
    expect(pool.canStartNow()).toBe(true);
    const a = await pool.acquire();
    expect(pool.canStartNow()).toBe(false);
    pool.release(a);
    await waitFor('the unpooled connection closed', async () => pool.size === 0);
    expect(pool.canStartNow()).toBe(true);
  });

  it('a closed pool answers true (the acquire then fails at once with POOL_CLOSED, as before)', async () => {
    const pool = pgPool(1);
    const a = await pool.acquire();
    expect(pool.canStartNow()).toBe(false);
    pool.release(a);
    await pool.close();
    expect(pool.canStartNow()).toBe(true);
  });

  it('a fleet-capped tenant: while an open waits for a lease, no room to open (though below max) and the open serves no one soon', async () => {
    // The fleet hands out one lease, then none (another process holds the rest of the cap).
    let granted = 0;
    const pending: (() => void)[] = [];
    const leases: PoolLeases = {
      acquire(_needed, _timeoutMs, onWait) {
        if (granted < 1) {
          granted++;
          const lease: ConnectionLease = { lost: false, release: () => granted-- };
          return Promise.resolve(lease);
        }
        onWait?.();
        return new Promise((resolve) => pending.push(() => resolve(undefined)));
      },
      giveBack: () => false,
      detach: () => {},
    };
    const pool = new TenantPool({
      tenant: TENANT,
      key: `${TENANT}:service`,
      databaseUrl: new Secret(databaseUrl),
      settings: { ...DEFAULT_POOL_SETTINGS, minSize: 0, maxSize: 4, maxOverflow: 0, acquireTimeoutMs: 5000, connectTimeoutMs: 5000 },
      max: 4,
      pooling: true,
      leases: () => leases,
    });
    cleanups.push(() => pool.close());
    const a: PoolClient = await pool.acquire();
    expect(pool.canStartNow(), 'one of four open, no lease wait yet').toBe(true);
    const waiting = pool.acquire().catch((e: unknown) => e);
    await waitFor('the second open waits for a lease', async () => pool.stats().lease_waits_total === 1);
    expect(pool.size, 'below max').toBeLessThan(pool.max);
    // The waiting acquire makes it false on its own; the lease wait must too once nothing waits:
    // release the connection to the waiting acquire, whose open then waits on unneeded.
    pool.release(a);
    const b = (await waiting) as PoolClient;
    expect(pool.waiting).toBe(0);
    expect(pool.canStartNow(), 'an open still waits for a lease: a new one would queue behind it').toBe(false);
    // It would wait for the one connection in use (the lease wait serves no one soon, and no more may open).
    expect(pool.canStartNow(1), 'first in line for a release').toBe(true);
    const queued = pool.acquire();
    expect(pool.waiting).toBe(1);
    expect(pool.canStartNow(1), 'one waits for a release already').toBe(false);
    expect(pool.canStartNow(2)).toBe(true);
    pool.release(b);
    const b2 = await queued;
    for (const wake of pending.splice(0)) wake();
    await waitFor('the lease wait ended', async () => pool.stats().opening === 0);
    expect(pool.canStartNow(), 'no lease wait: room to open one').toBe(true);
    pool.release(b2);
  });
});

describe('RestTenantPool.canStartNow', () => {
  it('true while a request slot is free and none waits; false at max in flight or with a request waiting', async () => {
    const { pool } = makeRestPool(rest.tenants[0]!, 2);
    cleanups.push(() => pool.close());
    expect(pool.canStartNow()).toBe(true);
    const a: RestLease = await pool.acquire();
    expect(pool.canStartNow()).toBe(true);
    const b = await pool.acquire();
    expect(pool.canStartNow()).toBe(false);
    expect(pool.canStartNow(1), 'it would wait first in line').toBe(true);
    const waiter = pool.acquire();
    expect(pool.canStartNow(1), 'one waits already').toBe(false);
    expect(pool.canStartNow(2)).toBe(true);
    a.release();
    const c = await waiter;
    expect(pool.canStartNow()).toBe(false);
    b.release();
    expect(pool.canStartNow()).toBe(true);
    c.release();
    await pool.close();
    expect(pool.canStartNow(), 'closed: the acquire fails at once').toBe(true);
  });
});

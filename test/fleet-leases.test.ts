/**
 * The fleet connection cap (issue 13 item 3) below the worker: tenant pools of several "workers"
 * in this process, each with its own FleetLeases (its own worker id and Redis connections), on
 * the real Redis and one real tenant database. What the database sees is sampled from
 * pg_stat_activity every 10 ms.
 */
import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_POOL_SETTINGS, type PoolSettings } from '../src/config.js';
import { LensfleetError } from '../src/errors.js';
import { FleetKeys, newWorkerId } from '../src/fleet/keys.js';
import { FleetLeases } from '../src/fleet/leases.js';
import { RENEW_LUA } from '../src/fleet/scripts.js';
import { TenantPool, type PoolEvent } from '../src/pool/tenant-pool.js';
import { Secret } from '../src/secret.js';
import { countConnections, createTenants, LogCapture, redisUrl, sampleConnections, sleep, uniqueId, waitFor } from './support/harness.js';

const TENANT = uniqueId('yLease');
const OTHER = uniqueId('yLease2');

interface Node {
  readonly id: string;
  readonly leases: FleetLeases;
  readonly redis: Redis;
  readonly pools: TenantPool[];
  readonly events: PoolEvent[];
  pool(tenant?: string): TenantPool;
  close(): Promise<void>;
}

describe('fleet connection leases (in-process workers, real Redis and Postgres)', () => {
  let tenants: Awaited<ReturnType<typeof createTenants>>;
  const nodes: Node[] = [];
  const urlOf = (tenant: string) => tenants.dbs.find((d) => d.tenant === tenant)!.databaseUrl;
  const dbOf = (tenant: string) => tenants.dbs.find((d) => d.tenant === tenant)!.database;

  beforeAll(async () => {
    tenants = await createTenants([TENANT, OTHER], 5);
  });
  afterAll(async () => {
    await Promise.allSettled(nodes.map((n) => n.close()));
    await tenants?.drop();
  });

  /** A "worker": its own FleetLeases and one pool per tenant, each capped at `cap`. */
  async function startNode(
    fleet: string,
    cap: number,
    settings: Partial<PoolSettings> = {},
    opts: { ttlMs?: number; max?: number; tenantList?: string[]; redis?: string; pooling?: boolean } = {},
  ): Promise<Node> {
    const id = newWorkerId();
    const redis = new Redis(opts.redis ?? redisUrl(), { maxRetriesPerRequest: 1, enableOfflineQueue: false, lazyConnect: true });
    redis.on('error', () => {});
    const subscriber = new Redis(opts.redis ?? redisUrl(), { maxRetriesPerRequest: null, lazyConnect: true });
    subscriber.on('error', () => {});
    await Promise.allSettled([redis.connect(), subscriber.connect()]);
    const logs = new LogCapture();
    const leases = new FleetLeases({ redis, subscriber, keys: new FleetKeys(fleet), workerId: id, ttlMs: opts.ttlMs ?? 3000, logger: logs.logger });
    await leases.start();
    const events: PoolEvent[] = [];
    const pools = (opts.tenantList ?? [TENANT]).map(
      (tenant) =>
        new TenantPool({
          tenant,
          key: `${tenant}:service`,
          databaseUrl: new Secret(urlOf(tenant)),
          settings: { ...DEFAULT_POOL_SETTINGS, minSize: 0, ...settings },
          max: opts.max ?? 8,
          pooling: opts.pooling ?? true,
          leases: leases.provider(tenant, cap),
          onEvent: (e) => events.push(e),
          applicationName: 'lensfleet',
        }),
    );
    let closing: Promise<void> | undefined;
    const node: Node = {
      id,
      leases,
      redis,
      pools,
      events,
      pool: (tenant = TENANT) => pools.find((p) => p.tenant === tenant)!,
      close() {
        // Pools first (their connections end and give their leases back), then the leases.
        closing ??= (async () => {
          await Promise.allSettled(pools.map((p) => p.close()));
          await leases.close();
          redis.disconnect();
          subscriber.disconnect();
        })();
        return closing;
      },
    };
    nodes.push(node);
    return node;
  }

  /** `loops` concurrent jobs, each acquiring, running a short query and releasing, `perLoop` times. */
  async function load(pool: TenantPool, loops: number, perLoop: number, sleepSeconds = 0.005): Promise<void> {
    await Promise.all(
      Array.from({ length: loops }, async () => {
        for (let i = 0; i < perLoop; i++) {
          const c = await pool.acquire();
          try {
            await c.query('SELECT pg_sleep($1)', [sleepSeconds]);
            pool.release(c);
          } catch (err) {
            pool.release(c, err);
            throw err;
          }
        }
      }),
    );
  }

  async function leaseCount(fleet: string, tenant = TENANT): Promise<number> {
    const r = new Redis(redisUrl());
    try {
      return await r.zcard(new FleetKeys(fleet).leases(tenant));
    } finally {
      r.disconnect();
    }
  }

  it('3 workers × 8 concurrent jobs on a tenant capped at 3: the database never sees more than 3, every job completes, every worker gets leases', async () => {
    const fleet = uniqueId('fl');
    const workers = await Promise.all([startNode(fleet, 3), startNode(fleet, 3), startNode(fleet, 3)]);
    const sampler = sampleConnections(dbOf(TENANT), 10);
    let maxSeen: number;
    try {
      await Promise.all(workers.map((w) => load(w.pool(), 8, 25)));
    } finally {
      maxSeen = await sampler.stop();
    }
    const stats = workers.map((w) => w.pool().stats());
    console.error(
      `[fleet-leases] cap 3: max ${maxSeen} connections seen; opened per worker ${stats.map((s) => s.connections_opened_total).join('/')}; lease waits ${stats.map((s) => s.lease_waits_total).join('/')}`,
    );
    expect(maxSeen).toBeGreaterThan(0);
    expect(maxSeen).toBeLessThanOrEqual(3);
    for (const s of stats) {
      expect(s.requests_total).toBe(200);
      expect(s.acquire_timeouts_total).toBe(0);
      expect(s.connections_opened_total).toBeGreaterThan(0);
      expect(s.leases).toBeLessThanOrEqual(3);
    }
    expect(stats.reduce((a, s) => a + s.lease_waits_total, 0)).toBeGreaterThan(0);
    await Promise.all(workers.map((w) => w.close()));
    // Every lease went back when the pools closed.
    expect(await leaseCount(fleet)).toBe(0);
  }, 60_000);

  it('without pooling (a connection per job), 2 workers × 6 concurrent jobs on a cap of 2: at most 2 connections, every job completes', async () => {
    const fleet = uniqueId('fl');
    const workers = await Promise.all([startNode(fleet, 2, {}, { pooling: false }), startNode(fleet, 2, {}, { pooling: false })]);
    const sampler = sampleConnections(dbOf(TENANT), 10);
    let maxSeen: number;
    try {
      await Promise.all(workers.map((w) => load(w.pool(), 6, 5)));
    } finally {
      maxSeen = await sampler.stop();
    }
    expect(maxSeen).toBeGreaterThan(0);
    expect(maxSeen).toBeLessThanOrEqual(2);
    for (const w of workers) {
      const s = w.pool().stats();
      expect(s.requests_total).toBe(30);
      expect(s.connections_opened_total).toBe(30);
      expect(s.acquire_timeouts_total).toBe(0);
    }
    await Promise.all(workers.map((w) => w.close()));
    expect(await leaseCount(fleet)).toBe(0);
  }, 60_000);

  it('FLEET_CAP_TIMEOUT (retried, stating the cap) after the connect timeout when no lease frees, not POOL_TIMEOUT', async () => {
    const fleet = uniqueId('fl');
    const a = await startNode(fleet, 1);
    const b = await startNode(fleet, 1, { connectTimeoutMs: 400, acquireTimeoutMs: 10_000 });
    const held = await a.pool().acquire();
    try {
      const started = performance.now();
      const err = await b
        .pool()
        .acquire()
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      const waited = performance.now() - started;
      expect(err).toBeInstanceOf(LensfleetError);
      expect((err as LensfleetError).code).toBe('FLEET_CAP_TIMEOUT');
      expect((err as LensfleetError).retryable).toBe(true);
      expect((err as LensfleetError).message).toContain('fleetMaxConnections=1');
      expect(waited).toBeGreaterThanOrEqual(350);
      expect(waited).toBeLessThan(5000);
      const s = b.pool().stats();
      expect(s.lease_timeouts_total).toBe(1);
      expect(s.lease_waits_total).toBe(1);
      // The cap holding is back-pressure, not a connection error.
      expect(s.connection_errors_total).toEqual({});
      expect(s.size).toBe(0);
      expect(await countConnections(dbOf(TENANT))).toBe(1);
    } finally {
      a.pool().release(held);
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('a waiting worker makes holders give back their idle connections above minSize at once', async () => {
    const fleet = uniqueId('fl');
    // A keeps idle connections for a minute unless asked for them.
    const a = await startNode(fleet, 3, { minSize: 1, idleTimeoutMs: 60_000 });
    const b = await startNode(fleet, 3, { connectTimeoutMs: 5000 });
    const three = await Promise.all([a.pool().acquire(), a.pool().acquire(), a.pool().acquire()]);
    for (const c of three) a.pool().release(c);
    expect(a.pool().stats()).toMatchObject({ idle: 3, leases: 3 });
    const sampler = sampleConnections(dbOf(TENANT), 10);
    try {
      const started = performance.now();
      // B needs two connections at once: A keeps its minSize (1) and gives back the other two.
      const [c1, c2] = await Promise.all([b.pool().acquire(), b.pool().acquire()]);
      const waited = performance.now() - started;
      expect(waited).toBeLessThan(3000);
      b.pool().release(c1);
      b.pool().release(c2);
      await waitFor('A to close what it gave back', () => a.pool().stats().size === 1, 5000, 10);
      expect(a.pool().stats().connections_closed_total).toEqual({ lease_wanted: 2 });
      expect(a.pool().stats().leases).toBe(1);
    } finally {
      expect(await sampler.stop()).toBeLessThanOrEqual(3);
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('under steady load on both sides, a busy holder gives back released connections above its fair share, so the other worker gets connections too', async () => {
    const fleet = uniqueId('fl');
    const a = await startNode(fleet, 4, { idleTimeoutMs: 60_000 });
    const b = await startNode(fleet, 4, { idleTimeoutMs: 60_000 });
    const sampler = sampleConnections(dbOf(TENANT), 10);
    let maxSeen = 0;
    try {
      const aLoad = load(a.pool(), 8, 150, 0.01);
      await waitFor('A to hold all 4 leases', () => a.pool().stats().leases === 4, 10_000, 5);
      const bLoad = load(b.pool(), 8, 30, 0.01);
      // B gets its share (2 of 4) while A keeps running.
      await waitFor('B to hold 2 leases', () => b.pool().stats().leases >= 2, 10_000, 5);
      expect(a.pool().stats().requests_total).toBeLessThan(1200);
      await Promise.all([aLoad, bLoad]);
      expect(a.pool().stats().connections_closed_total.lease_wanted).toBeGreaterThanOrEqual(1);
      expect(b.pool().stats().acquire_timeouts_total).toBe(0);
    } finally {
      maxSeen = await sampler.stop();
      await Promise.all([a.close(), b.close()]);
    }
    expect(maxSeen).toBeLessThanOrEqual(4);
  }, 60_000);

  it('renews all of a worker’s leases in one Redis call per renewal period, however many connections and tenants', async () => {
    const fleet = uniqueId('fl');
    const ttlMs = 900;
    const a = await startNode(fleet, 10, { idleTimeoutMs: 60_000 }, { ttlMs, tenantList: [TENANT, OTHER] });
    const renewSha = createHash('sha1').update(RENEW_LUA).digest('hex');
    let renewCalls = 0;
    const send = a.redis.sendCommand.bind(a.redis);
    a.redis.sendCommand = ((command: { name: string; args: unknown[] }) => {
      if ((command.name === 'evalsha' && command.args[0] === renewSha) || (command.name === 'eval' && command.args[0] === RENEW_LUA)) renewCalls++;
      return send(command as never);
    }) as typeof a.redis.sendCommand;
    try {
      for (const p of a.pools) {
        const held = await Promise.all(Array.from({ length: 4 }, () => p.acquire()));
        for (const c of held) p.release(c);
      }
      expect(a.leases.held()).toEqual(
        new Map([
          [TENANT, 4],
          [OTHER, 4],
        ]),
      );
      renewCalls = 0;
      const started = performance.now();
      await sleep(6 * (ttlMs / 3));
      const periods = (performance.now() - started) / (ttlMs / 3);
      // 8 leases over 2 tenants: about one call per period (timers on a loaded machine run late, never early).
      expect(renewCalls).toBeGreaterThanOrEqual(2);
      expect(renewCalls).toBeLessThanOrEqual(Math.ceil(periods) + 1);
      // …and they stayed alive across several TTLs.
      expect(await leaseCount(fleet, TENANT)).toBe(4);
      expect(await leaseCount(fleet, OTHER)).toBe(4);
    } finally {
      await a.close();
    }
  });

  it('a worker cut off from Redis for the TTL treats its leases as lost and closes their idle connections; the fleet hands them out again without ever exceeding the cap', async () => {
    const fleet = uniqueId('fl');
    const ttlMs = 3000;
    // minSize 2: A gives nothing back when B asks (only idle connections above minSize go).
    const a = await startNode(fleet, 2, { minSize: 2, idleTimeoutMs: 60_000 }, { ttlMs });
    const b = await startNode(fleet, 2, { connectTimeoutMs: 10_000 }, { ttlMs });
    await a.pool().warm();
    expect(a.pool().stats()).toMatchObject({ size: 2, leases: 2 });
    const sampler = sampleConnections(dbOf(TENANT), 10);
    try {
      // A partition: A can no longer reach Redis (its renewals fail), its connections stay open.
      a.redis.disconnect();
      const [c1, c2] = await Promise.all([b.pool().acquire(), b.pool().acquire()]);
      b.pool().release(c1);
      b.pool().release(c2);
      expect(a.pool().open).toBe(0);
      expect(a.pool().stats().connections_closed_total).toEqual({ lease_lost: 2 });
    } finally {
      expect(await sampler.stop()).toBeLessThanOrEqual(2);
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('a lease Redis no longer has, with the cap taken by others, is reported lost by the renewal and its connection closes', async () => {
    const fleet = uniqueId('fl');
    const ttlMs = 900;
    const a = await startNode(fleet, 1, { idleTimeoutMs: 60_000 }, { ttlMs });
    const c = await a.pool().acquire();
    a.pool().release(c);
    const admin = new Redis(redisUrl());
    try {
      // Another worker's lease in A's place (as after an expiry A did not notice).
      await admin.del(new FleetKeys(fleet).leases(TENANT));
      await admin.zadd(new FleetKeys(fleet).leases(TENANT), Date.now() + 60_000, 'someone-else|1');
      await waitFor('A to close the connection whose lease was lost', () => a.pool().stats().connections_closed_total.lease_lost === 1, 5000, 10);
      expect(a.pool().stats()).toMatchObject({ size: 0, leases: 0, connections_closed_total: { lease_lost: 1 } });
    } finally {
      admin.disconnect();
      await a.close();
    }
  });

  it('Redis unreachable: a capped tenant opens no connection (fails closed, FLEET_UNAVAILABLE after the connect timeout)', async () => {
    const { freePort } = await import('../dev/local/servers.js');
    const nowhere = `redis://127.0.0.1:${await freePort()}`;
    const a = await startNode(uniqueId('fl'), 5, { connectTimeoutMs: 300 }, { redis: nowhere });
    const before = await countConnections(dbOf(TENANT));
    try {
      const err = await a
        .pool()
        .acquire()
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect((err as LensfleetError).code).toBe('FLEET_UNAVAILABLE');
      expect((err as LensfleetError).retryable).toBe(true);
      expect(a.pool().stats().connections_opened_total).toBe(0);
      expect(a.pool().stats().connection_errors_total).toEqual({ fleet_unavailable: 1 });
      expect(await countConnections(dbOf(TENANT))).toBe(before);
    } finally {
      await a.close();
    }
  });
});

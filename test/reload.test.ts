/**
 * Reload without restart (issue 3), against real Postgres and Redis:
 * - a real worker process re-reads its tenants file on SIGHUP: a rotated password gets a new pool
 *   (the old one closes), added tenants appear, removed tenants' pools close, an invalid file is
 *   rejected and the old tenants kept, and a tenant switched to `pooling: false` drains its pool;
 * - in process, `service.reload(directory)` with a changed pool setting replaces the pool while a
 *   job holding a connection of the old pool finishes.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLensQueue, enqueue, enqueueMany, QueueEvents, type LensQueue } from '../queues/producer.js';
import type { PoolStats } from '../src/pool/tenant-pool.js';
import { TenantDirectory, type PgTenant } from '../src/tenants.js';
import {
  countConnections,
  createTenants,
  pgAdminUrl,
  redisUrl,
  sleep,
  spawnWorker,
  startTestWorker,
  uniqueId,
  waitFor,
  type ChildWorker,
} from './support/harness.js';

type Tenants = Awaited<ReturnType<typeof createTenants>>;

async function admin<T extends pg.QueryResultRow>(sql: string, values: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: pgAdminUrl() });
  await c.connect();
  try {
    return (await c.query<T>(sql, values)).rows;
  } finally {
    await c.end();
  }
}

/** Backends of a database that started before `since` (PG's clock). */
async function backendsStartedBefore(database: string, since: Date): Promise<number> {
  const [r] = await admin<{ n: string }>(
    "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend' AND backend_start < $2",
    [database, since],
  );
  return Number(r!.n);
}

function withPassword(url: string, password: string): string {
  const u = new URL(url);
  u.password = encodeURIComponent(password);
  return u.toString();
}

describe('SIGHUP reload of a worker process', () => {
  const T = uniqueId('yRot'); // password rotated
  const U = uniqueId('yAdd'); // added by a reload
  const V = uniqueId('yDel'); // removed by a reload
  const W = uniqueId('ySw'); // switched to pooling: false
  const QUEUE = uniqueId('q_reload');
  let tenants: Tenants;
  let dir: string;
  let file: string;
  let queue: LensQueue;
  let events: QueueEvents;
  let child: ChildWorker | undefined;
  const P2 = randomBytes(12).toString('hex');
  /** Tenants file entries, rewritten by each test. */
  const entries: Record<string, { databaseUrl: string; pooling?: boolean }> = {};

  const url = (id: string) => tenants.env[`${id}_DATABASE_URL`]!;
  const db = (id: string) => `lf_${id}`;
  const writeFile = () => writeFileSync(file, JSON.stringify({ tenants: entries }, null, 2));
  const getJson = async <T>(p: string): Promise<T> => (await (await fetch(`http://127.0.0.1:${child!.port}${p}`)).json()) as T;
  const pools = async (): Promise<PoolStats[]> => (await getJson<{ pools: PoolStats[] }>('/pools')).pools;
  const count = (needle: string) =>
    child!
      .output()
      .split('\n')
      .filter((l) => l.includes(needle)).length;
  /** Send SIGHUP and wait until the worker logged the outcome (`tenants reloaded` or `reload rejected`). */
  async function sighup(outcome: 'tenants reloaded' | 'reload rejected'): Promise<void> {
    const before = count(outcome);
    child!.proc.kill('SIGHUP');
    await waitFor(`"${outcome}" in the worker log`, () => count(outcome) > before, 10_000, 20);
  }
  async function runJobs(tenant: string, n: number, lens = 'test.whoami', params: Record<string, unknown> = {}) {
    const jobs = await enqueueMany(
      queue,
      Array.from({ length: n }, () => ({ tenant, lens, params })),
      { attempts: 1 },
    );
    return Promise.all(jobs.map((j) => j.waitUntilFinished(events, 15_000)));
  }

  beforeAll(async () => {
    tenants = await createTenants([T, U, V, W], 5);
    dir = mkdtempSync(path.join(os.tmpdir(), 'lensfleet-reload-'));
    file = path.join(dir, 'tenants.json');
    entries[T] = { databaseUrl: url(T) }; // password P1 (the one the role was created with)
    entries[V] = { databaseUrl: url(V) };
    entries[W] = { databaseUrl: url(W) };
    writeFile();
    queue = createLensQueue({ connection: { url: redisUrl() }, name: QUEUE });
    events = new QueueEvents(QUEUE, { connection: { url: redisUrl() } });
    events.setMaxListeners(1000);
    queue.setMaxListeners(1000);
    await events.waitUntilReady();
    child = await spawnWorker({
      LENSFLEET_TENANTS_FILE: file,
      LENSFLEET_QUEUE: QUEUE,
      LENSFLEET_CONCURRENCY: '4',
      LENSFLEET_POOL_MIN_SIZE: '2',
      LENSFLEET_POOL_MAX_SIZE: '4',
      LENSFLEET_POOL_MAX_OVERFLOW: '0',
    });
  });
  afterAll(async () => {
    if (child && child.proc.exitCode === null && child.proc.signalCode === null) {
      child.proc.kill('SIGTERM');
      const exited = await Promise.race([child.exited, sleep(10_000).then(() => undefined)]);
      if (exited === undefined) {
        child.proc.kill('SIGKILL');
        await child.exited;
      }
    }
    await events?.close();
    await queue?.obliterate({ force: true }).catch(() => {});
    await queue?.close();
    await tenants?.drop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('rotated password: a new pool with the new password serves jobs; the old pool’s connections close', async () => {
    const P1 = tenants.dbs.find((d) => d.tenant === T)!.password;
    const before = await runJobs(T, 10);
    expect(before.every((r) => r.rows[0]!.db === db(T))).toBe(true);
    const [old] = (await pools()).filter((p) => p.tenant === T);
    expect(old).toMatchObject({ requests_total: 10 });
    expect(await countConnections(db(T))).toBeGreaterThanOrEqual(2);

    await admin(`ALTER ROLE "lf_${T}_reader" PASSWORD '${P2}'`);
    // The rotation is real: P1 no longer opens a connection (the old pool's open ones live on).
    const stale = new pg.Client({ connectionString: url(T) });
    await expect(stale.connect()).rejects.toMatchObject({ code: '28P01' });
    await stale.end().catch(() => {});

    const reloadAt = (await admin<{ now: Date }>('SELECT clock_timestamp() AS now'))[0]!.now;
    entries[T] = { databaseUrl: withPassword(url(T), P2) };
    writeFile();
    await sighup('tenants reloaded');

    const after = await runJobs(T, 6);
    expect(after.every((r) => r.rows[0]!.db === db(T) && r.rows[0]!.usr === `lf_${T}_reader`)).toBe(true);

    const mine = (await pools()).filter((p) => p.tenant === T);
    expect(mine).toHaveLength(1);
    // fresh counters: only the jobs since the reload, only the new pool's connections
    expect(mine[0]).toMatchObject({ requests_total: 6, key: `${T}:service` });
    expect(mine[0]!.connections_opened_total).toBeGreaterThanOrEqual(2);
    expect(mine[0]!.connections_opened_total).toBeLessThanOrEqual(4);
    // the old pool's connections are gone: every backend of T's database is the new pool's
    await waitFor('the old pool’s backends to exit', async () => (await backendsStartedBefore(db(T), reloadAt)) === 0, 5000, 50);
    const size = (await pools()).find((p) => p.tenant === T)!.size;
    await waitFor(`${db(T)} to settle at the new pool’s ${size} connections`, async () => (await countConnections(db(T))) === size, 5000, 50);
    expect(child!.output()).toContain('pool retired; draining');
    // neither password ever reaches the log
    expect(child!.output()).not.toContain(P1);
    expect(child!.output()).not.toContain(P2);
  });

  it('a tenant added to the file appears on SIGHUP', async () => {
    const missing = await enqueue(queue, { tenant: U, lens: 'test.whoami' }, { attempts: 1 });
    await expect(missing.waitUntilFinished(events, 10_000)).rejects.toThrow(/TENANT_NOT_FOUND/);

    entries[U] = { databaseUrl: url(U) };
    writeFile();
    await sighup('tenants reloaded');
    const r = await runJobs(U, 3);
    expect(r.every((x) => x.rows[0]!.yacht_id === U)).toBe(true);
    const health = await getJson<{ connection_pools: { pool_keys: string[] } }>('/health');
    expect(health.connection_pools.pool_keys).toContain(`${U}:service`);
  });

  it('a tenant removed from the file: its jobs fail with TENANT_NOT_FOUND and its pool closes', async () => {
    await runJobs(V, 3);
    let health = await getJson<{ connection_pools: { pool_keys: string[] } }>('/health');
    expect(health.connection_pools.pool_keys).toContain(`${V}:service`);
    // minSize 2, but the process budget (8) may have had room for one only when the pool was
    // created: the jobs can all run on it (a released connection goes to the next waiting job)
    // while the second opens, after closing another tenant's idle connection.
    await waitFor(`${db(V)} to have 2 connections`, async () => (await countConnections(db(V))) >= 2, 5000, 50);

    delete entries[V];
    writeFile();
    await sighup('tenants reloaded');
    const gone = await enqueue(queue, { tenant: V, lens: 'test.whoami' }, { attempts: 3 });
    await expect(gone.waitUntilFinished(events, 10_000)).rejects.toThrow(/TENANT_NOT_FOUND/);
    expect((await queue.getJob(gone.id!))!.attemptsMade).toBe(1); // not retried
    health = await getJson<{ connection_pools: { pool_keys: string[] } }>('/health');
    expect(health.connection_pools.pool_keys).not.toContain(`${V}:service`);
    expect((await pools()).map((p) => p.tenant)).not.toContain(V);
    await waitFor(`0 connections to ${db(V)}`, async () => (await countConnections(db(V))) === 0, 5000, 50);
  });

  it('a tenant added on SIGHUP on another host without TLS is warned about, naming it, with no secret; the start had no such warning', async () => {
    const X = uniqueId('yClear');
    const secret = `Cl3ar${randomBytes(6).toString('hex')}`;
    const warned = () =>
      child!
        .output()
        .split('\n')
        .filter((l) => l.includes('without TLS'));
    expect(warned()).toEqual([]); // the start: every tenant on 127.0.0.1
    entries[X] = { databaseUrl: `postgres://reader:${secret}@db.invalid:5432/x` };
    writeFile();
    await sighup('tenants reloaded');
    expect(warned()).toHaveLength(1);
    expect(warned()[0]).toContain(X);
    expect(warned()[0]).toContain('"level":"warn"');
    expect(child!.output()).not.toContain(secret);
    delete entries[X];
    writeFile();
    await sighup('tenants reloaded');
    expect(warned()).toHaveLength(1); // not said again once it is gone
  });

  it('an invalid tenants file is rejected on SIGHUP: the worker keeps the old tenants and keeps serving', async () => {
    const keysBefore = (await getJson<{ connection_pools: { pool_keys: string[] } }>('/health')).connection_pools.pool_keys.sort();
    writeFileSync(file, '{ "tenants": { not json');
    await sighup('reload rejected');
    expect(child!.proc.exitCode).toBeNull();
    expect(child!.output()).toMatch(/reload rejected, keeping the current tenants: .*not valid JSON/);
    await runJobs(T, 2);
    await runJobs(U, 2);

    // a well-formed file with an unknown key is rejected too, naming the tenant and the key
    writeFileSync(file, JSON.stringify({ tenants: { ...entries, [T]: { ...entries[T], poolSize: 3 } } }));
    await sighup('reload rejected');
    expect(child!.output()).toMatch(new RegExp(`reload rejected.*tenants\\.${T}: unknown key\\(s\\) poolSize`));
    await runJobs(T, 2);
    expect((await getJson<{ connection_pools: { pool_keys: string[] } }>('/health')).connection_pools.pool_keys.sort()).toEqual(keysBefore);
    // T's pool was not replaced by the rejected reloads
    expect((await pools()).find((p) => p.tenant === T)!.requests_total).toBe(6 + 4);
    writeFile(); // restore the valid file
  });

  it('a tenant switched to `pooling: false` drains its pool (a running job finishes) and keeps serving jobs', async () => {
    await runJobs(W, 4);
    expect((await pools()).find((p) => p.tenant === W)).toMatchObject({ pooling: true });
    expect(await countConnections(db(W))).toBeGreaterThanOrEqual(2);
    // A job holds a connection of the old pool across the reload.
    const holder = await enqueue(queue, { tenant: W, lens: 'test.sleep', params: { seconds: 1 } }, { attempts: 1 });
    await waitFor('the sleeper to hold a connection', async () => (await pools()).find((p) => p.tenant === W)?.inUse === 1, 5000, 20);

    entries[W] = { databaseUrl: url(W), pooling: false };
    writeFile();
    await sighup('tenants reloaded');
    const during = await runJobs(W, 3);
    expect(during.every((r) => r.rows[0]!.db === db(W))).toBe(true);
    const held = await holder.waitUntilFinished(events, 10_000);
    expect(held.rows[0]).toMatchObject({ db: db(W) });
    expect((await queue.getJob(holder.id!))!.attemptsMade).toBe(1);
    // idle: no connection left (the old pool closed, the new one connects per job)
    await waitFor(`0 connections to ${db(W)}`, async () => (await countConnections(db(W))) === 0, 5000, 50);
    await runJobs(W, 2);
    await waitFor(`0 connections to ${db(W)} again`, async () => (await countConnections(db(W))) === 0, 5000, 50);
    const mine = (await pools()).filter((p) => p.tenant === W);
    expect(mine).toHaveLength(1);
    expect(mine[0]).toMatchObject({ pooling: false, requests_total: 5, connections_opened_total: 5, size: 0 });
    expect(mine[0]!.connections_closed_total).toEqual({ unpooled: 5 });
  });
});

describe('in-process reload: service.reload(directory)', () => {
  const X = uniqueId('yRel');
  let tenants: Tenants;
  beforeAll(async () => {
    tenants = await createTenants([X], 5);
  });
  afterAll(async () => {
    await tenants?.drop();
  });

  it('a changed maxSize replaces the pool (same key, new pool object) while a job on the old pool finishes', async () => {
    const w = await startTestWorker({ env: tenants.env, concurrency: 8, pool: { minSize: 1, maxSize: 2, maxOverflow: 0 } });
    try {
      const before = w.tenants.getPg(X);
      const warm = await enqueue(w.queue, { tenant: X, lens: 'test.whoami' });
      await warm.waitUntilFinished(w.events, 10_000);
      const oldPool = w.service.registry.peek(before)!;
      expect(oldPool.max).toBe(2);

      const holder = await enqueue(w.queue, { tenant: X, lens: 'test.sleep', params: { seconds: 0.5 } }, { attempts: 1 });
      await waitFor('the sleeper to hold a connection of the old pool', () => oldPool.stats().inUse === 1, 5000, 5);

      const next = new TenantDirectory(w.tenants.list().map((t) => ({ ...(t as PgTenant), pool: { ...t.pool, maxSize: 3 } })));
      const changes = await w.service.reload(next);
      expect(changes).toEqual({ replaced: [X], removed: [] });
      expect(oldPool.closed).toBe(true);
      expect(oldPool.stats().inUse).toBe(1); // still held: a graceful drain, not a kill

      const r = await enqueue(w.queue, { tenant: X, lens: 'test.whoami' });
      await r.waitUntilFinished(w.events, 10_000);
      expect(w.service.registry.keys()).toEqual([`${X}:service`]);
      const newPool = w.service.registry.peek(next.getPg(X))!;
      expect(newPool).toBeDefined();
      expect(newPool).not.toBe(oldPool);
      expect(newPool.key).toBe(oldPool.key);
      expect(newPool.max).toBe(3);
      expect(newPool.settings.maxSize).toBe(3);
      expect(w.service.registry.stats()).toHaveLength(1);

      const held = await holder.waitUntilFinished(w.events, 10_000);
      expect(held.rows[0]).toMatchObject({ db: `lf_${X}` });
      expect((await w.queue.getJob(holder.id!))!.attemptsMade).toBe(1);
      // the old pool closed its last connection once the job released it
      // (its size drops at once, the close is counted when the backend has gone)
      await waitFor('the old pool to close its connection', () => oldPool.stats().connections_closed_total.pool_closed === 1, 5000, 10);
      expect(oldPool.size).toBe(0);
      expect(oldPool.stats().connections_opened_total).toBe(1);
      await waitFor('only the new pool’s connections', async () => (await countConnections(`lf_${X}`)) === newPool.size, 5000, 20);
      expect(w.service.registry.connections()).toBe(newPool.size);
    } finally {
      await w.close();
    }
  });
});

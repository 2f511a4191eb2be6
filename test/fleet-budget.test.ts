/**
 * The process connection budget (issue 3) and the rollback switch, against real Postgres:
 * - 50 tenants round-robin at concurrency 8: pg_stat_activity never shows more than the budget
 *   (2 × concurrency), every job completes, and idle connections of other tenants are evicted;
 * - a budget below the concurrency is rejected at start;
 * - LENSFLEET_POOLING=off (and a per-tenant `pooling: false`) runs every job on a fresh
 *   connection that is closed afterwards, with the same metrics.
 */
import { performance } from 'node:perf_hooks';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enqueue, enqueueMany } from '../queues/producer.js';
import { DEFAULT_POOL_SETTINGS, loadWorkerConfig } from '../src/config.js';
import { LensfleetError } from '../src/errors.js';
import { ProcessBudget } from '../src/pool/budget.js';
import { TenantPool } from '../src/pool/tenant-pool.js';
import { Secret } from '../src/secret.js';
import type { BudgetMember } from '../src/pool/types.js';
import {
  countConnections,
  createTenants,
  LogCapture,
  pgAdminUrl,
  sleep,
  startTestWorker,
  terminateBackends,
  uniqueId,
  waitFor,
  type TestWorker,
} from './support/harness.js';

type Tenants = Awaited<ReturnType<typeof createTenants>>;

/** Value of an unlabelled (or exactly labelled) sample in a Prometheus text exposition. */
function metric(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

async function scrape(w: TestWorker): Promise<string> {
  return (await fetch(`http://127.0.0.1:${w.service.port}/metrics`)).text();
}

describe('process connection budget: 50 tenants round-robin at concurrency 8', () => {
  const PREFIX = uniqueId('yBud');
  const IDS = Array.from({ length: 50 }, (_, i) => `${PREFIX}_${String(i).padStart(2, '0')}`);
  const created: Tenants[] = [];
  const env: Record<string, string> = { LENSFLEET_TENANTS: IDS.join(',') };
  let createMs = 0;

  beforeAll(async () => {
    const started = Date.now();
    for (let i = 0; i < IDS.length; i += 10) {
      const batch = await createTenants(IDS.slice(i, i + 10), 5);
      created.push(batch);
      Object.assign(env, batch.env, { LENSFLEET_TENANTS: IDS.join(',') });
    }
    createMs = Date.now() - started;
    console.error(`[fleet-budget] created ${IDS.length} tenant databases in ${createMs} ms (batches of 10)`);
  }, 120_000);
  afterAll(async () => {
    await Promise.allSettled(created.map((c) => c.drop()));
  }, 120_000);

  it('never holds more than the budget (pg_stat_activity and /metrics), evicts idle connections, completes every job', async () => {
    const w = await startTestWorker({ env, concurrency: 8, pool: { minSize: 2 } });
    try {
      // 50 tenants × minSize 2 = 100 warm connections against a budget of 16: said at start, with the fix.
      const warned = w.logs.find((e) => e.warmFootprint !== undefined);
      expect(warned).toHaveLength(1);
      expect(warned[0]).toMatchObject({ level: 40, warmFootprint: 100, processMaxConnections: 16, tenants: 50 });
      expect(String(warned[0]!.msg)).toContain('LENSFLEET_POOL_MIN_SIZE=1');
      await runAndCheck(w);
    } finally {
      await w.close();
    }
  }, 120_000);

  async function runAndCheck(w: TestWorker): Promise<void> {
    const started = Date.now();
    const admin = new pg.Client({ connectionString: pgAdminUrl() });
    await admin.connect();
    let running = true;
    let maxPg = 0;
    let pgSamples = 0;
    let maxMetric = 0;
    let metricSamples = 0;
    let maxEstablished = 0;
    const dbPrefix = `lf_${PREFIX}_`;
    const pgSampler = (async () => {
      while (running) {
        const r = await admin.query<{ n: string }>(
          "SELECT count(*) AS n FROM pg_stat_activity WHERE starts_with(datname, $1) AND backend_type = 'client backend'",
          [dbPrefix],
        );
        maxPg = Math.max(maxPg, Number(r.rows[0]!.n));
        pgSamples++;
        await sleep(10);
      }
    })();
    const metricSampler = (async () => {
      while (running) {
        const n = metric(await scrape(w), 'lensfleet_process_connections');
        // Connections actually established (checked out or idle), for the report on failure.
        maxEstablished = Math.max(
          maxEstablished,
          w.service.registry.stats().reduce((a, x) => a + x.inUse + x.idle, 0),
        );
        if (n !== undefined) {
          maxMetric = Math.max(maxMetric, n);
          metricSamples++;
        }
        await sleep(25);
      }
    })();
    try {
      expect(w.service.registry.processMaxConnections).toBe(16);
      const jobs = await enqueueMany(
        w.queue,
        Array.from({ length: 300 }, (_, i) => ({ tenant: IDS[i % IDS.length]!, lens: 'receiving.recent', params: { limit: 3 } })),
        { attempts: 3, backoff: { type: 'fixed', delay: 50 } },
      );
      const results = await Promise.all(jobs.map((j) => j.waitUntilFinished(w.events, 60_000)));
      expect(results).toHaveLength(300);
      for (const [i, r] of results.entries()) expect(r.tenant).toBe(IDS[i % IDS.length]);
      // Every job completed on its first attempt: the budget never made one fail.
      const retried: string[] = [];
      for (const j of jobs) if ((await w.queue.getJob(j.id!))!.attemptsMade !== 1) retried.push(j.id!);
      expect(retried).toEqual([]);
    } finally {
      running = false;
      await Promise.all([pgSampler, metricSampler]);
      await admin.end();
    }
    try {
      expect(pgSamples).toBeGreaterThan(20);
      expect(metricSamples).toBeGreaterThan(5);
      expect(maxPg).toBeGreaterThan(8);
      expect(maxPg).toBeLessThanOrEqual(16);
      // Soft, so the assertions below still run when this one fails.
      expect
        .soft(
          maxMetric,
          `lensfleet_process_connections peaked at ${maxMetric} while at most ${maxEstablished} connections were established (pg_stat_activity max ${maxPg})`,
        )
        .toBeLessThanOrEqual(16);

      const text = await scrape(w);
      expect(metric(text, 'lensfleet_process_max_connections')).toBe(16);
      expect(metric(text, 'lensfleet_process_connections')).toBeLessThanOrEqual(16);

      const stats = w.service.registry.stats();
      expect(stats.length).toBeGreaterThan(0);
      const evicted = stats.reduce((n, s) => n + (s.connections_closed_total.evicted ?? 0), 0);
      expect(evicted).toBeGreaterThan(0);
      // 50 tenants × minSize 2 would be 100 connections: the budget kept it at 16.
      expect(stats.reduce((n, s) => n + s.size, 0)).toBeLessThanOrEqual(16);
    } finally {
      const text = await scrape(w);
      const sum = (name: string) =>
        text
          .split('\n')
          .filter((l) => l.startsWith(`${name}{`))
          .reduce((n, l) => n + Number(l.split(' ').pop()), 0);
      const avgMs = (h: string) => ((1000 * sum(`${h}_sum`)) / Math.max(1, sum(`${h}_count`))).toFixed(1);
      console.error(
        `[fleet-budget] jobs ${Date.now() - started} ms; max pg_stat_activity ${maxPg} over ${pgSamples} samples; max lensfleet_process_connections ${maxMetric}; ` +
          `avg acquire ${avgMs('lensfleet_pool_acquire_seconds')} ms, avg connect ${avgMs('lensfleet_pool_connect_seconds')} ms`,
      );
    }
  }
});

describe('process connection budget: exhaustion', () => {
  /** A pool as the budget sees it (the budget is tested with fakes on purpose: no Postgres needed to fill it). */
  const member = (tenant: string, size: number, idle = 0, busy = true): BudgetMember => ({
    tenant,
    size,
    idleCount: idle,
    busy,
    lastUsedAt: 0,
    evictIdle: async () => false,
  });

  it('a full budget with nothing idle to close fails with PROCESS_BUDGET_TIMEOUT (retried) after the timeout, stating its numbers', async () => {
    const requester = member('yWants', 1); // its new connection's slot already counts
    const pools = new Set([member('yBusy1', 1), member('yBusy2', 1), requester]);
    const budget = new ProcessBudget(2, pools, new LogCapture().logger);
    const started = performance.now();
    const err = await budget.reserve(requester, 200).then(
      () => undefined,
      (e: unknown) => e,
    );
    const took = performance.now() - started;
    expect(err).toBeInstanceOf(LensfleetError);
    expect((err as LensfleetError).code).toBe('PROCESS_BUDGET_TIMEOUT');
    expect((err as LensfleetError).retryable).toBe(true);
    expect((err as LensfleetError).message).toContain('tenant yWants');
    expect((err as LensfleetError).message).toContain('200 ms');
    expect((err as LensfleetError).message).toContain('total=3, max=2, pools=3, busy=3');
    expect((err as LensfleetError).details).toMatchObject({ tenant: 'yWants', total: 3, max: 2 });
    expect(took).toBeGreaterThanOrEqual(190);
    expect(took).toBeLessThan(2000);
  });

  it('a full budget closes the least recently used idle connection of another tenant: quiet pools first (oldest use first), then busy ones', async () => {
    const evicted: string[] = [];
    const pool = (tenant: string, lastUsedAt: number, idle: number, busy: boolean) => {
      const m = {
        tenant,
        size: Math.max(1, idle),
        idleCount: idle,
        busy,
        lastUsedAt,
        evictIdle: async () => {
          evicted.push(tenant);
          m.size--;
          m.idleCount--;
          return true;
        },
      };
      return m;
    };
    const requester = pool('yWants', 4000, 0, true); // its new connection's slot already counts
    const busyOldest = pool('yBusyOldest', 500, 1, true);
    const quietNewer = pool('yQuietNewer', 3000, 1, false);
    const quietOlder = pool('yQuietOlder', 1000, 1, false);
    const budget = new ProcessBudget(3, new Set<BudgetMember>([requester, quietNewer, busyOldest, quietOlder]), new LogCapture().logger);
    await budget.reserve(requester, 1000);
    expect(evicted).toEqual(['yQuietOlder']);
    requester.size++; // the next connection it opens
    await budget.reserve(requester, 1000);
    expect(evicted).toEqual(['yQuietOlder', 'yQuietNewer']);
    requester.size++;
    // no quiet pool has an idle connection left: a busy pool's idle one goes
    await budget.reserve(requester, 1000);
    expect(evicted).toEqual(['yQuietOlder', 'yQuietNewer', 'yBusyOldest']);
    expect(budget.total()).toBe(3);
  });

  it('room that appears before the timeout (a connection closed elsewhere) lets the reservation through', async () => {
    const requester = member('yWants', 1);
    const other = { ...member('yBusy', 2) };
    const budget = new ProcessBudget(2, new Set([other, requester]), new LogCapture().logger);
    const reserved = budget.reserve(requester, 5000);
    await sleep(50);
    other.size = 1;
    budget.released();
    await expect(reserved).resolves.toBeUndefined();
  });
});

describe('process connection budget: minSize within it', () => {
  const T = uniqueId('yBudMin');
  let tenants: Tenants;
  beforeAll(async () => {
    tenants = await createTenants([T], 5);
  });
  afterAll(async () => {
    await tenants?.drop();
  });

  it('a pool held below minSize by a full budget opens what fits, and does not take room that frees up later by itself', async () => {
    const members = new Set<BudgetMember>();
    const other = { tenant: 'yOther', size: 1, idleCount: 0, busy: true, lastUsedAt: 0, evictIdle: async () => false };
    members.add(other);
    const budget = new ProcessBudget(2, members, new LogCapture().logger);
    const app = uniqueId('lfbudmin');
    const pool = new TenantPool({
      tenant: T,
      key: `${T}:service`,
      databaseUrl: new Secret(tenants.env[`${T}_DATABASE_URL`]!),
      settings: { ...DEFAULT_POOL_SETTINGS, minSize: 2, maxSize: 2, maxOverflow: 0 },
      max: 2,
      pooling: true,
      budget,
      applicationName: app,
    });
    members.add(pool);
    try {
      await pool.warm();
      expect(pool.stats()).toMatchObject({ size: 1, connections_opened_total: 1, connection_errors_total: {} });
      // Its connection dies: the refill opens again what fits (1), nothing failed.
      expect(await terminateBackends(`lf_${T}`, { applicationName: app })).toBe(1);
      await waitFor('the refill', () => pool.stats().connections_opened_total === 2 && pool.stats().size === 1, 5000, 10);
      // Room appears (another tenant's connection closed); the idle pool leaves it to whoever
      // needs it: it refills on its own closed connections only (and a job still gets one).
      other.size = 0;
      await sleep(2000);
      expect(pool.stats()).toMatchObject({ size: 1, connections_opened_total: 2 });
    } finally {
      await pool.close();
    }
  });
});

describe('process connection budget: configuration', () => {
  it('rejects LENSFLEET_PROCESS_MAX_CONNECTIONS below the concurrency, naming both settings', () => {
    let err: unknown;
    try {
      loadWorkerConfig({ LENSFLEET_CONCURRENCY: '8', LENSFLEET_PROCESS_MAX_CONNECTIONS: '7' });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(LensfleetError);
    expect((err as LensfleetError).code).toBe('INVALID_CONFIG');
    expect((err as LensfleetError).message).toContain('LENSFLEET_PROCESS_MAX_CONNECTIONS (7)');
    expect((err as LensfleetError).message).toContain('LENSFLEET_CONCURRENCY (8)');
    // the boundary and the default
    expect(loadWorkerConfig({ LENSFLEET_CONCURRENCY: '8', LENSFLEET_PROCESS_MAX_CONNECTIONS: '8' }).processMaxConnections).toBe(8);
    // Unset, the budget is what the process can afford (src/process-limits.ts), never below 2 × concurrency.
    const limits = { openFiles: 1024, heapLimitBytes: 4 * 2 ** 30 };
    expect(loadWorkerConfig({ LENSFLEET_CONCURRENCY: '8' }, process.cwd(), limits).processMaxConnections).toBe(384);
    expect(loadWorkerConfig({ LENSFLEET_CONCURRENCY: '8' }, process.cwd(), { openFiles: 256, heapLimitBytes: 4 * 2 ** 30 }).processMaxConnections).toBe(16);
    // the default concurrency (8) counts too
    expect(() => loadWorkerConfig({ LENSFLEET_PROCESS_MAX_CONNECTIONS: '4' })).toThrow(/LENSFLEET_CONCURRENCY \(8\)/);
  });
});

describe('rollback switch: a fresh connection per job', () => {
  const OFF = uniqueId('yOff');
  const PER = uniqueId('yPerOff');
  const ON = uniqueId('yPerOn');
  let tenants: Tenants;
  let dir: string;
  beforeAll(async () => {
    tenants = await createTenants([OFF, PER, ON], 5);
    dir = mkdtempSync(path.join(os.tmpdir(), 'lensfleet-rollback-'));
  });
  afterAll(async () => {
    await tenants?.drop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  const db = (id: string) => tenants.dbs.find((d) => d.tenant === id)!.database;

  it('LENSFLEET_POOLING=off: 20 jobs open and close 20 connections, none stays open, same metrics', async () => {
    const config = loadWorkerConfig({ LENSFLEET_POOLING: 'off' });
    expect(config.pooling).toBe(false);
    const w = await startTestWorker({
      env: { LENSFLEET_TENANTS: OFF, [`${OFF}_DATABASE_URL`]: tenants.env[`${OFF}_DATABASE_URL`]! },
      concurrency: 4,
      pool: { minSize: 2 },
      extra: { pooling: config.pooling },
    });
    try {
      expect(w.tenants.getPg(OFF).pooling).toBe(false);
      for (let i = 0; i < 20; i++) {
        const job = await enqueue(w.queue, { tenant: OFF, lens: 'test.whoami' });
        const r = await job.waitUntilFinished(w.events, 10_000);
        expect(r.rows[0]).toMatchObject({ db: db(OFF) });
        // Between jobs the tenant has no connection (the job's one is closed after it).
        await waitFor(`0 connections to ${OFF} after job ${i}`, async () => (await countConnections(db(OFF))) === 0, 2000, 10);
      }
      expect(await countConnections(db(OFF))).toBe(0);
      const [s] = w.service.registry.stats();
      expect(s).toMatchObject({ tenant: OFF, pooling: false, requests_total: 20, connections_opened_total: 20, size: 0, idle: 0 });
      expect(s!.connections_closed_total).toEqual({ unpooled: 20 });

      const text = await scrape(w);
      expect(metric(text, 'lensfleet_pooling_enabled')).toBe(0);
      expect(metric(text, `lensfleet_pool_acquire_requests_total{tenant="${OFF}"}`)).toBe(20);
      expect(metric(text, `lensfleet_pool_connections_opened_total{tenant="${OFF}"}`)).toBe(20);
      expect(metric(text, `lensfleet_pool_connections_closed_total{tenant="${OFF}",reason="unpooled"}`)).toBe(20);
      expect(metric(text, `lensfleet_pool_acquire_seconds_count{tenant="${OFF}"}`)).toBe(20);
      expect(metric(text, `lensfleet_pool_connect_seconds_count{tenant="${OFF}"}`)).toBe(20);
      expect(metric(text, `lensfleet_pool_max_connections{tenant="${OFF}"}`)).toBe(4);
      expect(metric(text, `lensfleet_pool_connections{tenant="${OFF}",state="idle"}`)).toBe(0);
      expect(metric(text, `lensfleet_pool_connections{tenant="${OFF}",state="in_use"}`)).toBe(0);
      expect(metric(text, `lensfleet_pool_saturation_ratio{tenant="${OFF}"}`)).toBe(0);
      expect(metric(text, 'lensfleet_process_connections')).toBe(0);

      // While a job holds its fresh connection, the pool is in use like a pooled one: 1 of 4.
      const holder = await enqueue(w.queue, { tenant: OFF, lens: 'test.sleep', params: { seconds: 5 } }, { attempts: 1 });
      await waitFor('the job to hold its connection', () => w.service.registry.stats()[0]?.inUse === 1, 5000, 10);
      const busy = await scrape(w);
      expect(metric(busy, `lensfleet_pool_saturation_ratio{tenant="${OFF}"}`)).toBe(0.25);
      expect(metric(busy, `lensfleet_pool_connections{tenant="${OFF}",state="in_use"}`)).toBe(1);
      expect(metric(busy, 'lensfleet_process_connections')).toBe(1);
      await terminateBackends(db(OFF), { idleOnly: false }); // end the sleep now rather than in 5 s
      await holder.waitUntilFinished(w.events, 10_000).catch(() => {});
    } finally {
      await w.close();
    }
  });

  it('per-tenant `pooling: false` in the tenants file: that tenant unpooled, another pooled, in one worker', async () => {
    const file = path.join(dir, 'tenants.json');
    writeFileSync(file, JSON.stringify({ tenants: { [PER]: { pooling: false }, [ON]: {} } }));
    const env = {
      LENSFLEET_TENANTS_FILE: file,
      [`${PER}_DATABASE_URL`]: tenants.env[`${PER}_DATABASE_URL`]!,
      [`${ON}_DATABASE_URL`]: tenants.env[`${ON}_DATABASE_URL`]!,
    };
    const w = await startTestWorker({ env, concurrency: 4, pool: { minSize: 2 } });
    try {
      expect(w.tenants.getPg(PER).pooling).toBe(false);
      expect(w.tenants.getPg(ON).pooling).toBe(true);
      for (let i = 0; i < 5; i++) {
        const jobs = await enqueueMany(w.queue, [
          { tenant: PER, lens: 'test.whoami' },
          { tenant: ON, lens: 'test.whoami' },
        ]);
        await Promise.all(jobs.map((j) => j.waitUntilFinished(w.events, 10_000)));
      }
      await waitFor(`0 connections to ${PER}`, async () => (await countConnections(db(PER))) === 0, 2000, 10);
      // the pooled tenant keeps its warm connections
      expect(await countConnections(db(ON))).toBe(2);

      const byTenant = new Map(w.service.registry.stats().map((s) => [s.tenant, s]));
      expect(byTenant.get(PER)).toMatchObject({ pooling: false, requests_total: 5, connections_opened_total: 5, size: 0 });
      expect(byTenant.get(PER)!.connections_closed_total).toEqual({ unpooled: 5 });
      expect(byTenant.get(ON)).toMatchObject({ pooling: true, requests_total: 5, connections_opened_total: 2, size: 2 });
      expect(byTenant.get(ON)!.connections_closed_total).toEqual({});

      const text = await scrape(w);
      expect(metric(text, 'lensfleet_pooling_enabled')).toBe(1);
      expect(metric(text, `lensfleet_pool_connections_closed_total{tenant="${PER}",reason="unpooled"}`)).toBe(5);
      expect(metric(text, `lensfleet_pool_connections_opened_total{tenant="${ON}"}`)).toBe(2);
    } finally {
      await w.close();
    }
  });
});

/**
 * Resilience of a real worker process: when the database kills its idle backends
 * (pg_terminate_backend, as a server restart or an admin would), the process survives, the dead
 * connections are counted and replaced, every later job completes, and SIGTERM still exits 0.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLensQueue, enqueueMany, QueueEvents, type LensQueue } from '../queues/producer.js';
import { createTenants, pgAdminUrl, redisUrl, spawnWorker, uniqueId, waitFor, type ChildWorker, killWorker } from './support/harness.js';

const TENANT = uniqueId('yRes');
const QUEUE = uniqueId('q_res');
const RETRY = { attempts: 5, backoff: { type: 'fixed', delay: 100 } } as const;

/** Sum of a metric's samples whose labels contain every given label pair. */
function metricSum(text: string, name: string, labels: Record<string, string>): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

describe('resilience of a worker process', () => {
  let tenants: Awaited<ReturnType<typeof createTenants>>;
  let child: ChildWorker | undefined;
  let queue: LensQueue;
  let events: QueueEvents;

  beforeAll(async () => {
    tenants = await createTenants([TENANT], 20);
    queue = createLensQueue({ connection: { url: redisUrl() }, name: QUEUE });
    events = new QueueEvents(QUEUE, { connection: { url: redisUrl() } });
    await events.waitUntilReady();
    child = await spawnWorker({ ...tenants.env, LENSFLEET_QUEUE: QUEUE, LENSFLEET_CONCURRENCY: '4', LENSFLEET_POOL_MIN_SIZE: '4' });
  });
  afterAll(async () => {
    await killWorker(child);
    await events?.close();
    await queue?.obliterate({ force: true }).catch(() => {});
    await queue?.close();
    await tenants?.drop();
  });

  let terminated = 0;
  let metrics = '';

  it('survives pg_terminate_backend of its idle connections, completes every later job, and reports the errors', async () => {
    const c = child!;
    const base = `http://127.0.0.1:${c.port}`;
    const database = tenants.dbs[0]!.database;
    const reqs = (n: number) =>
      Array.from({ length: n }, (_, i) => ({ tenant: TENANT, lens: i % 2 ? 'receiving.recent' : 'test.whoami', params: i % 2 ? { limit: 5 } : {} }));

    const warm = await enqueueMany(queue, reqs(20), RETRY);
    const warmResults = await Promise.all(warm.map((j) => j.waitUntilFinished(events, 15_000)));
    expect(warmResults).toHaveLength(20);
    // Nothing checked out: every backend we kill below is idle in the pool.
    await waitFor(
      'the pool to be idle',
      async () => {
        const r = (await (await fetch(`${base}/pools`)).json()) as { pools: { inUse: number; idle: number }[] };
        return r.pools[0]?.inUse === 0 && r.pools[0].idle >= 1;
      },
      5000,
    );

    const admin = new pg.Client({ connectionString: pgAdminUrl() });
    await admin.connect();
    try {
      const r = await admin.query<{ ok: boolean }>(
        "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE datname = $1 AND state = 'idle' AND backend_type = 'client backend'",
        [database],
      );
      terminated = r.rows.filter((row) => row.ok).length;
    } finally {
      await admin.end();
    }
    expect(terminated).toBeGreaterThanOrEqual(1);

    const after = await enqueueMany(queue, reqs(40), RETRY);
    const settled = await Promise.allSettled(after.map((j) => j.waitUntilFinished(events, 20_000)));
    const rejected = settled.filter((s) => s.status === 'rejected');
    expect(rejected.map((s) => String((s as PromiseRejectedResult).reason))).toEqual([]);
    for (const j of after) expect(await queue.getJobState(j.id!)).toBe('completed');

    // Still alive and answering.
    expect(c.proc.exitCode).toBeNull();
    expect(c.proc.signalCode).toBeNull();
    const health = await fetch(`${base}/health`);
    expect(health.status).toBe(200);
    const body = (await health.json()) as { status: string; connection_pools: { pool_keys: string[] } };
    expect(body.status).toBe('healthy');
    expect(body.connection_pools.pool_keys).toEqual([`${TENANT}:service`]);
    expect((await fetch(`${base}/ready`)).status).toBe(200);

    // The killed connections are visible to operators.
    metrics = await (await fetch(`${base}/metrics`)).text();
    const idleErrors = metricSum(metrics, 'lensfleet_pool_connection_errors_total', { tenant: TENANT, kind: 'idle' });
    const closedBroken =
      metricSum(metrics, 'lensfleet_pool_connections_closed_total', { tenant: TENANT, reason: 'error' }) +
      metricSum(metrics, 'lensfleet_pool_connections_closed_total', { tenant: TENANT, reason: 'ping_failed' });
    expect(idleErrors).toBeGreaterThanOrEqual(1);
    expect(closedBroken).toBeGreaterThanOrEqual(1);
    // Replacements were opened for the killed ones.
    expect(metricSum(metrics, 'lensfleet_pool_connections_opened_total', { tenant: TENANT })).toBeGreaterThan(terminated);
  });

  it('counts each killed idle connection once, as kind="idle", not also as an error of an active connection', () => {
    expect(metrics).not.toBe('');
    // No connection was checked out when the backends were killed (the pool was idle), so an
    // "active" error here double-counts the same failure and inflates the error-rate alerts.
    expect(metricSum(metrics, 'lensfleet_pool_connection_errors_total', { tenant: TENANT, kind: 'active' })).toBe(0);
    // Each killed connection is counted at most once (a double count would give 2 × terminated);
    // one that a job's pre-ping finds dead before its error event arrives counts as a ping failure.
    const errors = metricSum(metrics, 'lensfleet_pool_connection_errors_total', { tenant: TENANT });
    expect(errors).toBeGreaterThanOrEqual(1);
    expect(errors).toBeLessThanOrEqual(terminated);
  });

  it('still drains and exits 0 on SIGTERM', async () => {
    const c = child!;
    expect(c.proc.exitCode).toBeNull();
    c.proc.kill('SIGTERM');
    const exit = await c.exited;
    expect(exit).toEqual({ code: 0, signal: null });
    expect(c.output()).toContain('worker stopped');
  });
});

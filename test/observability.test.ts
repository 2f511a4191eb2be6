/**
 * /metrics, /health, /pools, /ready and the logs: every metric of the first slice with its tenant
 * label, pool keys without secrets, and canary secrets that never appear anywhere.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { enqueue, enqueueMany } from '../queues/producer.js';
import { createTenants, pgAdminUrl, startTestWorker, uniqueId, type TestWorker } from './support/harness.js';

const GOOD = uniqueId('yObs');
const WRONG_PW = uniqueId('yWrong');
const DOWN = uniqueId('yDown');
const CANARY = `CANARY${Math.random().toString(36).slice(2, 12)}`;

const TENANT_METRICS = [
  'lensfleet_pool_connections',
  'lensfleet_pool_max_connections',
  'lensfleet_pool_min_connections',
  'lensfleet_pool_waiting_requests',
  'lensfleet_pool_saturation_ratio',
  'lensfleet_pool_acquire_seconds_bucket',
  'lensfleet_pool_connect_seconds_bucket',
  'lensfleet_pool_acquire_requests_total',
  'lensfleet_pool_acquire_timeouts_total',
  'lensfleet_pool_connections_opened_total',
];

describe('metrics, health and secrets', () => {
  let tenants: Awaited<ReturnType<typeof createTenants>>;
  let w: TestWorker;
  let base: string;

  beforeAll(async () => {
    tenants = await createTenants([GOOD]);
    const db = tenants.dbs[0]!;
    // Give the tenant's role a canary password, so any leak of it is detectable.
    const admin = new pg.Client({ connectionString: pgAdminUrl() });
    await admin.connect();
    await admin.query(`ALTER ROLE "${db.role}" PASSWORD '${CANARY}'`);
    await admin.end();
    const good = new URL(db.databaseUrl);
    good.password = CANARY;
    const wrong = new URL(db.databaseUrl);
    wrong.password = `${CANARY}x`;
    const down = new URL(db.databaseUrl);
    down.port = '1';
    down.password = `${CANARY}d`;
    const env = {
      LENSFLEET_TENANTS: [GOOD, WRONG_PW, DOWN].join(','),
      [`${GOOD}_DATABASE_URL`]: good.toString(),
      [`${WRONG_PW}_DATABASE_URL`]: wrong.toString(),
      [`${DOWN}_DATABASE_URL`]: down.toString(),
    };
    w = await startTestWorker({ env, concurrency: 4, pool: { minSize: 2, connectTimeoutMs: 2000 } });
    base = `http://127.0.0.1:${w.service.port}`;
    const ok = await enqueueMany(
      w.queue,
      Array.from({ length: 12 }, (_, i) => ({ tenant: GOOD, lens: i % 2 ? 'receiving.recent' : 'work_orders.open' })),
    );
    await Promise.all(ok.map((j) => j.waitUntilFinished(w.events, 30_000)));
    // One job that waits in the queue 1.5 s on purpose: its queue wait is known.
    const delayed = await enqueue(w.queue, { tenant: GOOD, lens: 'equipment.search', params: { q: 'pump' } }, { delay: 1500 });
    await delayed.waitUntilFinished(w.events, 30_000);
    const once = { attempts: 1 };
    const failing = [
      await enqueue(w.queue, { tenant: WRONG_PW, lens: 'receiving.recent' }, once),
      await enqueue(w.queue, { tenant: DOWN, lens: 'receiving.recent' }, once),
      await enqueue(w.queue, { tenant: GOOD, lens: 'receiving.recent', auth: { jwt: `${CANARY}.jwt.sig` } }, once),
      await enqueue(w.queue, { tenant: GOOD, lens: 'no.such_lens' }, once),
    ];
    await Promise.all(failing.map((j) => j.waitUntilFinished(w.events, 30_000).catch(() => {})));
  });
  afterAll(async () => {
    await w?.close();
    await tenants?.drop();
  });

  it('/metrics has every pool metric with the tenant label, and job/process metrics', async () => {
    const res = await fetch(`${base}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/plain');
    const text = await res.text();
    for (const name of TENANT_METRICS) {
      expect(text, name).toMatch(new RegExp(`^${name}\\{[^}]*tenant="${GOOD}"`, 'm'));
    }
    expect(text).toMatch(new RegExp(`^lensfleet_pool_connections\\{tenant="${GOOD}",state="in_use"\\} 0$`, 'm'));
    expect(text).toMatch(new RegExp(`^lensfleet_pool_max_connections\\{tenant="${GOOD}"\\} 4$`, 'm'));
    expect(text).toMatch(new RegExp(`^lensfleet_pool_acquire_requests_total\\{tenant="${GOOD}"\\} 1[2-9]$`, 'm'));
    expect(text).toMatch(new RegExp(`^lensfleet_jobs_total\\{lens="receiving.recent",tenant="${GOOD}",outcome="completed"\\} 6$`, 'm'));
    expect(text).toMatch(new RegExp(`^lensfleet_jobs_total\\{lens="unknown",tenant="${GOOD}",outcome="failed"\\} 1$`, 'm'));
    expect(text).toMatch(/^lensfleet_job_duration_seconds_bucket\{le="[^"]+",lens="work_orders.open"\}/m);
    expect(text).toMatch(/^lensfleet_job_queue_wait_seconds_count\{lens="work_orders.open"\} 6$/m);
    // The delayed job (1.5 s) waited 1.5 s and more, in seconds (not ms, not a sum of timestamps).
    const waited = Number(/^lensfleet_job_queue_wait_seconds_sum\{lens="equipment.search"\} (\S+)$/m.exec(text)?.[1]);
    expect(waited).toBeGreaterThanOrEqual(1.5);
    expect(waited).toBeLessThan(30);
    expect(text).toMatch(/^lensfleet_worker_concurrency 4$/m);
    expect(text).toMatch(/^lensfleet_pooling_enabled 1$/m);
    expect(text).toMatch(/^lensfleet_worker_ready 1$/m);
    expect(text).toMatch(/^lensfleet_pools 1$/m);
    expect(text).toMatch(new RegExp(`^lensfleet_queue_jobs\\{queue="${w.queueName}",state="failed"\\} 4$`, 'm'));
    expect(text).toMatch(/^process_cpu_seconds_total /m);
    // the tenants whose connections fail count connect errors but keep no pool
    expect(text).not.toMatch(new RegExp(`lensfleet_pool_max_connections\\{tenant="${DOWN}"`));
  });

  it('passes promtool check metrics on a real scrape', async () => {
    expect(existsSync('/usr/bin/promtool'), 'promtool (Debian package prometheus) is installed by the test setup or .ci/run').toBe(true);
    const text = await (await fetch(`${base}/metrics`)).text();
    const file = path.join(os.tmpdir(), `${uniqueId('metrics')}.prom`);
    onTestFinished(() => rm(file, { force: true }));
    await writeFile(file, text);
    const { stdout, stderr } = await promisify(execFile)('sh', ['-c', `promtool check metrics < ${file}`]).catch((e: { stdout: string; stderr: string }) => e);
    expect(`${stdout}${stderr}`.trim()).toBe('');
  });

  it('/health lists the active pool count and keys, and no secret', async () => {
    const res = await fetch(`${base}/health`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { status: string; connection_pools: { active_pools: number; pool_keys: string[] } };
    expect(body.status).toBe('healthy');
    expect(body.connection_pools).toEqual({ active_pools: 1, pool_keys: [`${GOOD}:service`] });
    expect(JSON.stringify(body)).not.toContain(CANARY);
  });

  it('/pools returns stats per pool; /ready is 200 while Redis is reachable', async () => {
    const body = (await (await fetch(`${base}/pools`)).json()) as { pools: Record<string, unknown>[] };
    expect(body.pools).toHaveLength(1);
    expect(body.pools[0]).toMatchObject({ tenant: GOOD, key: `${GOOD}:service`, max: 4, min: 2, inUse: 0, waiting: 0 });
    expect(body.pools[0]!.requests_total).toBeGreaterThanOrEqual(12);
    expect((await fetch(`${base}/ready`)).status).toBe(200);
    expect((await fetch(`${base}/nope`)).status).toBe(404);
  });

  it('failures are typed and the canary never appears in logs, endpoints or failure reasons', async () => {
    const failed = await w.queue.getFailed();
    const reasons = failed.map((j) => j.failedReason).sort();
    expect(reasons).toHaveLength(4);
    expect(reasons.some((r) => r.startsWith('CONNECTION_FAILED:') && r.includes('28P01'))).toBe(true);
    expect(reasons.some((r) => r.startsWith('CONNECTION_FAILED:') && r.includes('ECONNREFUSED'))).toBe(true);
    // The tenant has no JWT key: a job with a token is refused without looking at it.
    expect(reasons.some((r) => r.startsWith('AUTH_NOT_CONFIGURED:'))).toBe(true);
    expect(reasons.some((r) => r.startsWith('UNKNOWN_LENS:'))).toBe(true);
    const surfaces = {
      logs: w.logs.text(),
      metrics: await (await fetch(`${base}/metrics`)).text(),
      pools: await (await fetch(`${base}/pools`)).text(),
      health: await (await fetch(`${base}/health`)).text(),
      reasons: JSON.stringify(failed.map((j) => [j.failedReason, j.stacktrace])),
    };
    expect(surfaces.logs.length).toBeGreaterThan(1000);
    for (const [where, text] of Object.entries(surfaces)) expect(text.includes(CANARY), `canary leaked into ${where}`).toBe(false);
  });
});

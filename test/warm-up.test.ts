import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLensQueue, enqueue, QueueEvents, type LensQueue } from '../queues/producer.js';
import { admin, type ChildWorker, createTenants, killWorker, redisUrl, spawnWorker, uniqueId, waitFor } from './support/harness.js';

const HEALTHY = uniqueId('yWarmOk');
const LIMITED = uniqueId('yWarmLim');
const MISSING = uniqueId('yWarmNo');
const QUEUE = uniqueId('q_warm');

interface PoolJson {
  tenant: string;
  size: number;
  min: number;
  requests_total: number;
  connection_errors_total: Record<string, number>;
}

describe('warm-up in the background, with partial failure', () => {
  let tenants: Awaited<ReturnType<typeof createTenants>>;
  let queue: LensQueue;
  let events: QueueEvents;
  let child: ChildWorker | undefined;
  let missingDb: string;

  const pools = async (): Promise<Map<string, PoolJson>> => {
    const body = (await (await fetch(`http://127.0.0.1:${child!.port}/pools`)).json()) as { pools: PoolJson[] };
    return new Map(body.pools.map((p) => [p.tenant, p]));
  };
  const metric = async (name: string): Promise<number | undefined> => {
    const text = await (await fetch(`http://127.0.0.1:${child!.port}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`${name} `));
    return line === undefined ? undefined : Number(line.slice(name.length + 1));
  };

  beforeAll(async () => {
    tenants = await createTenants([HEALTHY, LIMITED], 5);
    const limited = tenants.dbs.find((d) => d.tenant === LIMITED)!;
    await admin((c) => c.query(`ALTER ROLE "${limited.role}" CONNECTION LIMIT 2`));
    // MISSING: HEALTHY's role, a database that does not exist yet.
    const url = new URL(tenants.env[`${HEALTHY}_DATABASE_URL`]!);
    missingDb = `lf_${MISSING}`;
    url.pathname = `/${missingDb}`;
    queue = createLensQueue({ connection: { url: redisUrl() }, name: QUEUE });
    events = new QueueEvents(QUEUE, { connection: { url: redisUrl() } });
    await events.waitUntilReady();
    child = await spawnWorker({
      ...tenants.env,
      LENSFLEET_TENANTS: [HEALTHY, LIMITED, MISSING].join(','),
      [`${MISSING}_DATABASE_URL`]: url.toString(),
      LENSFLEET_QUEUE: QUEUE,
      LENSFLEET_WARM_TENANTS: [MISSING, LIMITED, HEALTHY].join(','),
      LENSFLEET_POOL_MIN_SIZE: '5',
      LENSFLEET_CONCURRENCY: '8',
    });
  });
  afterAll(async () => {
    await killWorker(child);
    await events?.close();
    await queue?.obliterate({ force: true }).catch(() => {});
    await queue?.close();
    await admin((c) => c.query(`DROP DATABASE IF EXISTS "${missingDb}" WITH (FORCE)`)).catch(() => {});
    await tenants?.drop();
  });

  it('the worker starts (ready) although a warm tenant has no database; the failure is logged with its code and counted', async () => {
    expect(child!.proc.exitCode).toBeNull();
    expect((await fetch(`http://127.0.0.1:${child!.port}/ready`)).status).toBe(200);
    await waitFor('the warm-up failure to be logged', () => child!.output().includes('pool warm-up failed'), 15_000);
    const line = child!
      .output()
      .split('\n')
      .filter((l) => l.includes('pool warm-up failed'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(line).toHaveLength(1);
    expect(line[0]).toMatchObject({ tenant: MISSING, code: 'CONNECTION_FAILED' });
    expect(String(line[0]!.msg)).toContain('3D000'); // invalid_catalog_name
    expect(await metric('lensfleet_warmup_failures_total')).toBe(1);
  });

  it('the healthy tenant is warmed to minSize and its jobs complete', async () => {
    await waitFor('HEALTHY warmed to 5', async () => (await pools()).get(HEALTHY)?.size === 5, 15_000);
    for (let i = 0; i < 3; i++) {
      const r = await (await enqueue(queue, { tenant: HEALTHY, lens: 'test.whoami' })).waitUntilFinished(events, 15_000);
      expect(r.rows[0]).toMatchObject({ db: `lf_${HEALTHY}`, yacht_id: HEALTHY });
    }
  });

  it('the limited tenant (CONNECTION LIMIT 2, minSize 5) has a pool with 2 connections that serves jobs, and keeps trying for the rest', async () => {
    await waitFor('LIMITED warmed with 2 connections', async () => (await pools()).get(LIMITED)?.size === 2, 15_000);
    const before = (await pools()).get(LIMITED)!;
    expect(before.min).toBe(5);
    expect(before.connection_errors_total.connect).toBeGreaterThanOrEqual(3); // the 3 refused with 53300
    for (let i = 0; i < 4; i++) {
      const r = await (await enqueue(queue, { tenant: LIMITED, lens: 'test.whoami' })).waitUntilFinished(events, 15_000);
      expect(r.rows[0]).toMatchObject({ db: `lf_${LIMITED}`, yacht_id: LIMITED });
    }
    const after = (await pools()).get(LIMITED)!;
    expect(after.size).toBe(2);
    expect(after.requests_total).toBeGreaterThanOrEqual(4);
    // The refill retries (with backoff) the connections it could not open.
    await waitFor(
      'a refill attempt after the warm-up',
      async () => ((await pools()).get(LIMITED)?.connection_errors_total.connect ?? 0) > before.connection_errors_total.connect!,
      15_000,
    );
    // Only the warm-up of MISSING failed: LIMITED's was accepted.
    expect(await metric('lensfleet_warmup_failures_total')).toBe(1);
  });

  it('no cached failure: a job for the tenant whose warm-up failed fails (retried), then completes once its database exists', async () => {
    const job = await enqueue(queue, { tenant: MISSING, lens: 'test.sleep', params: { seconds: 0 } }, { attempts: 50, backoff: { type: 'fixed', delay: 200 } });
    await waitFor('a failed attempt', async () => ((await queue.getJob(job.id!))?.attemptsMade ?? 0) >= 1, 15_000);
    expect((await queue.getJob(job.id!))!.failedReason).toMatch(/^CONNECTION_FAILED: .*3D000/);
    await admin((c) => c.query(`CREATE DATABASE "${missingDb}"`));
    const r = await job.waitUntilFinished(events, 20_000);
    expect(r.rows[0]).toMatchObject({ db: missingDb });
    // The pool is kept once one connection is open; the rest of minSize follows in the background.
    await waitFor('MISSING warmed to 5', async () => (await pools()).get(MISSING)?.size === 5, 15_000);
  });
});

/**
 * End to end: producer → Redis → worker → tenant pools → results, on real Redis and Postgres.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLensQueueEvents, enqueue, enqueueMany, run } from '../queues/producer.js';
import { createTenants, redisUrl, ROOT, sleep, startTestWorker, uniqueId, waitFor, type TestWorker } from './support/harness.js';

const TENANTS = [uniqueId('yA'), uniqueId('yB'), uniqueId('yC')];
const LENSES: [string, Record<string, unknown>][] = [
  ['receiving.recent', { limit: 10 }],
  ['equipment.search', { q: 'engine', limit: 10 }],
  ['work_orders.open', { limit: 10 }],
];

describe('end to end', () => {
  let tenants: Awaited<ReturnType<typeof createTenants>>;
  let w: TestWorker;

  beforeAll(async () => {
    tenants = await createTenants(TENANTS);
    w = await startTestWorker({ env: tenants.env, concurrency: 8 });
  });
  afterAll(async () => {
    await w?.close();
    await tenants?.drop();
  });

  it('runs 3 tenants × 3 lenses, each job seeing only its own tenant’s rows', async () => {
    const reqs = TENANTS.flatMap((tenant) => LENSES.map(([lens, params]) => ({ tenant, lens, params })));
    const jobs = await enqueueMany(w.queue, [...reqs, ...reqs, ...reqs]);
    const results = await Promise.all(jobs.map((j) => j.waitUntilFinished(w.events, 30_000)));
    expect(results).toHaveLength(27);
    for (const [i, r] of results.entries()) {
      const req = jobs[i]!.data;
      expect(r.tenant).toBe(req.tenant);
      expect(r.lens).toBe(req.lens);
      expect(r.rowCount).toBeGreaterThan(0);
      expect(r.rows).toHaveLength(r.rowCount);
      expect(typeof r.durationMs).toBe('number');
      for (const row of r.rows) expect(row.yacht_id).toBe(req.tenant);
    }
    // one pool per tenant, keyed by the tenant id
    expect(w.service.registry.keys().sort()).toEqual(TENANTS.map((t) => `${t}:service`).sort());
  });

  it('runs a lens in a read-only session as the tenant’s own role', async () => {
    const tenant = TENANTS[1]!;
    const r = await run(w.queue, w.events, { tenant, lens: 'test.whoami' });
    expect(r.rows[0]).toMatchObject({ db: `lf_${tenant}`, usr: `lf_${tenant}_reader`, yacht_id: tenant, read_only: 'on' });
  });

  it('40 concurrent run() calls each get their own result, without a MaxListenersExceededWarning', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
    process.on('warning', onWarning);
    try {
      const reqs = Array.from({ length: 40 }, (_, i) => ({ tenant: TENANTS[i % TENANTS.length]!, lens: 'receiving.recent', params: { limit: 1 + (i % 5) } }));
      const results = await Promise.all(reqs.map((req) => run(w.queue, w.events, req)));
      results.forEach((r, i) => {
        expect(r.tenant).toBe(reqs[i]!.tenant);
        expect(r.rowCount).toBe(reqs[i]!.params.limit);
      });
      await new Promise((resolve) => setImmediate(resolve)); // warnings are emitted on the next tick
      expect(warnings.filter((m) => m.startsWith('MaxListenersExceededWarning'))).toEqual([]);
      expect(w.queue.listenerCount('closing')).toBe(0);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('accepts the same job from a plain BullMQ producer (the contract is the data)', async () => {
    const plain = new Queue(w.queueName, { connection: { url: redisUrl() } });
    try {
      const job = await plain.add('anything', { v: 1, tenant: TENANTS[2], lens: 'work_orders.open', params: { priority: 'critical', limit: 5 } });
      const r = (await job.waitUntilFinished(w.events, 30_000)) as { rows: { priority: string; yacht_id: string }[] };
      expect(r.rows.length).toBeGreaterThan(0);
      for (const row of r.rows) {
        expect(row.priority).toBe('critical');
        expect(row.yacht_id).toBe(TENANTS[2]);
      }
    } finally {
      await plain.close();
    }
  });

  it('createLensQueueEvents: a job that finished before the events reader started is still seen (BullMQ\'s default "$" misses it)', async () => {
    const events = await createLensQueueEvents(w.queue, { url: redisUrl() }, { autorun: false });
    try {
      const job = await enqueue(w.queue, { tenant: TENANTS[0]!, lens: 'receiving.recent', params: { limit: 2 } });
      await waitFor('the job completed', async () => (await job.isCompleted()) || undefined);
      const seen = new Promise<'seen'>((resolve) => events.on('completed', ({ jobId }) => jobId === job.id && resolve('seen')));
      events.run().catch(() => {});
      expect(await Promise.race([seen, sleep(5000).then(() => 'missed' as const)])).toBe('seen');
    } finally {
      await events.close();
    }
  });

  it('CLI: lensfleet enqueue --wait prints the result; bad params exit 2 with a message', async () => {
    const cli = path.join(ROOT, 'dist/cli/lensfleet.js');
    const env = { ...process.env, REDIS_URL: redisUrl(), LENSFLEET_QUEUE: w.queueName };
    const tenant = TENANTS[0]!;
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [cli, 'enqueue', '--tenant', tenant, '--lens', 'receiving.recent', '--params', '{"limit":3}', '--wait'],
      { env },
    );
    const out = JSON.parse(stdout) as { rowCount: number; tenant: string; rows: { yacht_id: string }[] };
    expect(out.tenant).toBe(tenant);
    expect(out.rowCount).toBe(3);
    expect(out.rows.every((r) => r.yacht_id === tenant)).toBe(true);
    const bad = await promisify(execFile)(process.execPath, [cli, 'enqueue', '--tenant', 'not valid!', '--lens', 'receiving.recent'], { env }).catch(
      (e: { code: number; stderr: string }) => e,
    );
    expect((bad as { code: number }).code).toBe(2);
    expect((bad as { stderr: string }).stderr).toContain('INVALID_JOB');
  });
});

/**
 * A producer in another language: examples/python/lensfleet_producer.py (Debian's python3 with
 * python3-redis, python3-msgpack, python3-jsonschema) validates against the published schema and
 * adds the job with BullMQ's own add scripts (standard, prioritized, delayed) from the installed bullmq package; a
 * real lensfleet worker completes it. (The `bullmq` package from PyPI runs the same scripts; PyPI
 * is not reachable from CI, Debian's archive is.)
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLensQueue, enqueue, idempotentJobId } from '../queues/producer.js';
import { createTenants, redisUrl, ROOT, startTestWorker, type TestWorker, uniqueId } from './support/harness.js';
import { python } from './support/python.js';

const SCRIPT = path.join(ROOT, 'examples/python/lensfleet_producer.py');
const TENANT = uniqueId('yPy');

let tenants: Awaited<ReturnType<typeof createTenants>>;
let w: TestWorker;

beforeAll(async () => {
  tenants = await createTenants([TENANT], 30);
  w = await startTestWorker({ env: tenants.env, concurrency: 2 });
});
afterAll(async () => {
  await w?.close();
  await tenants?.drop();
});

const produce = (args: string[]) => python([SCRIPT, '--redis', redisUrl(), '--queue', w.queueName, '--tenant', TENANT, ...args]);

describe('the Python producer', () => {
  it('adds a job that a lensfleet worker completes with the tenant’s rows', async () => {
    const r = await produce(['--lens', 'work_orders.open', '--params', '{"priority": "critical", "limit": 3}']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const id = r.stdout.trim();
    const job = (await w.queue.getJob(id))!;
    expect(job.name).toBe('work_orders.open');
    expect(job.data).toEqual({ v: 1, tenant: TENANT, lens: 'work_orders.open', params: { priority: 'critical', limit: 3 } });
    expect(job.opts).toMatchObject({ attempts: 5, backoff: { type: 'exponential', delay: 500 }, removeOnComplete: { age: 3600, count: 10_000 } });
    const result = await job.waitUntilFinished(w.events, 30_000);
    expect(result).toMatchObject({ tenant: TENANT, lens: 'work_orders.open' });
    expect(result.rowCount).toBeGreaterThan(0);
    expect(result.rowCount).toBeLessThanOrEqual(3);
    for (const row of result.rows) expect(row).toMatchObject({ yacht_id: TENANT, priority: 'critical' });
  });

  it('an invalid job is never added: exit 2 with the schema’s errors', async () => {
    const before = await w.queue.getJobCounts();
    const bad = await produce(['--lens', 'receiving.recent', '--params', '{"limit": "5", "limt": 1}']);
    expect(bad.code).toBe(2);
    expect(bad.stdout).toBe('');
    expect(bad.stderr).toContain("invalid job: params.limit: '5' is not of type 'integer'");
    expect(bad.stderr).toContain("Additional properties are not allowed ('limt' was unexpected)");
    const badTenant = await python([SCRIPT, '--redis', redisUrl(), '--queue', w.queueName, '--tenant', 'not a tenant', '--lens', 'receiving.recent']);
    expect(badTenant.code).toBe(2);
    expect(badTenant.stderr).toMatch(/^invalid job: tenant: 'not a tenant' does not match/m);
    const tooBig = await produce(['--lens', 'receiving.recent', '--params', JSON.stringify({ blob: 'x'.repeat(70_000) })]);
    expect(tooBig.code).toBe(2);
    expect(tooBig.stderr).toContain('more than the limit of 65536');
    expect(await w.queue.getJobCounts()).toEqual(before);
  });

  it('an idempotency key gives the SDK’s job id: the same request again, from Python or the SDK, returns the same job; another one is a conflict', async () => {
    const key = uniqueId('order');
    const first = await produce(['--lens', 'receiving.recent', '--params', '{"limit": 2, "status": "pending"}', '--idempotency-key', key]);
    expect(first.code).toBe(0);
    expect(first.stdout.trim()).toBe(idempotentJobId(TENANT, key));
    // the same params in another key order: the same request
    const second = await produce(['--lens', 'receiving.recent', '--params', '{"status": "pending", "limit": 2}', '--idempotency-key', key]);
    expect(second.code).toBe(0);
    expect(second.stdout.trim()).toBe(first.stdout.trim());
    const fromSdk = await enqueue(w.queue, { tenant: TENANT, lens: 'receiving.recent', params: { status: 'pending', limit: 2 } }, { idempotencyKey: key });
    expect(fromSdk.id).toBe(first.stdout.trim());
    // another request under the key: exit 3 from Python, IDEMPOTENCY_CONFLICT from the SDK; nothing added
    const counts = await w.queue.getJobCounts();
    const other = await produce(['--lens', 'receiving.recent', '--params', '{"limit": 9}', '--idempotency-key', key]);
    expect(other.code).toBe(3);
    expect(other.stdout).toBe('');
    expect(other.stderr).toContain(`idempotency conflict: job ${first.stdout.trim()} already holds a different request`);
    await expect(enqueue(w.queue, { tenant: TENANT, lens: 'receiving.recent', params: { limit: 7 } }, { idempotencyKey: key })).rejects.toMatchObject({
      code: 'IDEMPOTENCY_CONFLICT',
    });
    expect(Object.values(await w.queue.getJobCounts()).reduce((a, b) => a + b, 0)).toBe(Object.values(counts).reduce((a, b) => a + b, 0));
    expect((await fromSdk.waitUntilFinished(w.events, 30_000)).rowCount).toBeLessThanOrEqual(2);
  });

  it('--priority and --delay-ms add the job as BullMQ’s Queue.add would (prioritized, delayed), and the worker runs it', async () => {
    const prio = await produce(['--lens', 'receiving.recent', '--params', '{"limit": 1}', '--priority', '3']);
    expect(prio.code, prio.stderr).toBe(0);
    const p = (await w.queue.getJob(prio.stdout.trim()))!;
    expect(p.opts.priority).toBe(3);
    const delayed = await produce(['--lens', 'receiving.recent', '--params', '{"limit": 1}', '--delay-ms', '1500']);
    expect(delayed.code, delayed.stderr).toBe(0);
    const d = (await w.queue.getJob(delayed.stdout.trim()))!;
    expect(d.opts.delay).toBe(1500);
    expect(await d.getState()).toBe('delayed');
    const started = Date.now();
    await expect(d.waitUntilFinished(w.events, 30_000)).resolves.toMatchObject({ rowCount: 1 });
    expect((await w.queue.getJob(d.id!))!.processedOn! - d.timestamp).toBeGreaterThanOrEqual(1500);
    expect(Date.now() - started).toBeLessThan(15_000);
    await expect(p.waitUntilFinished(w.events, 30_000)).resolves.toMatchObject({ rowCount: 1 });
    // the same scripts as BullMQ's Queue: a prioritized job sits in BullMQ's prioritized set until taken
    const paused = uniqueId('qPyPrio');
    const r = await python([SCRIPT, '--redis', redisUrl(), '--queue', paused, '--tenant', TENANT, '--lens', 'receiving.recent', '--priority', '1']);
    expect(r.code, r.stderr).toBe(0);
    const q = createLensQueue({ connection: { url: redisUrl() }, name: paused });
    try {
      expect(await q.getJobState(r.stdout.trim())).toBe('prioritized');
      expect(await q.getJobCounts('prioritized', 'wait')).toEqual({ prioritized: 1, wait: 0 });
    } finally {
      await q.obliterate({ force: true });
      await q.close();
    }
    for (const bad of [
      ['--priority', '0'],
      ['--priority', String(2 ** 21 + 1)],
      ['--delay-ms', '-1'],
    ]) {
      const refused = await produce(['--lens', 'receiving.recent', ...bad]);
      expect(refused.code).toBe(2);
      expect(refused.stderr).toMatch(/^invalid job: --(priority|delay-ms) must be/m);
    }
  });

  it('expands addStandardJob’s includes as BullMQ’s build does (the same functions, in the same order)', async () => {
    const r = await python([SCRIPT, '--tenant', 'x', '--lens', 'x', '--print-script']);
    expect(r.code).toBe(0);
    const built = readFileSync(path.join(ROOT, 'node_modules/bullmq/dist/cjs/scripts/addStandardJob-9.js'), 'utf8');
    const functions = (lua: string) => [...lua.matchAll(/^local function (\w+)/gm)].map((m) => m[1]);
    expect(functions(r.stdout).length).toBeGreaterThan(10);
    expect(functions(r.stdout)).toEqual(functions(built));
    expect(r.stdout).not.toContain('@include');
  });
});

/**
 * The worker bounds every job, whatever its producer sent: a plain BullMQ producer
 * (`new Queue(…).add(…)`, no lensfleet SDK) gets its finished jobs removed by the worker's
 * retention (BullMQ would keep them forever), its attempts capped at LENSFLEET_MAX_ATTEMPTS, and
 * its retries spaced by the worker's backoff (BullMQ would retry at once); a statement timeout
 * is retried according to LENSFLEET_RETRY_QUERY_TIMEOUT.
 */
import { Queue, type Job } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { enqueue } from '../queues/producer.js';
import { freePort } from '../dev/local/servers.js';
import { createTenants, redisUrl, startTestWorker, uniqueId, waitFor, type TestWorker } from './support/harness.js';

const TENANT = uniqueId('yKeep');

describe('retention and attempts, whatever the producer sent', () => {
  let tenants: Awaited<ReturnType<typeof createTenants>>;
  let deadPort: number;
  beforeAll(async () => {
    tenants = await createTenants([TENANT], 5);
    deadPort = await freePort(); // nothing listens there: connections are refused (CONNECTION_FAILED, retried)
  });
  afterAll(async () => {
    await tenants?.drop();
  });

  async function workerWith(settings: Record<string, string>): Promise<{ w: TestWorker; plain: Queue }> {
    const env = { ...tenants.env, LENSFLEET_TENANTS: `${TENANT},yDead`, yDead_DATABASE_URL: `postgres://u:p@127.0.0.1:${deadPort}/none` };
    const w = await startTestWorker({ env, concurrency: 2, settings });
    const plain = new Queue(w.queueName, { connection: { url: redisUrl() } });
    onTestFinished(async () => {
      await plain.close();
      await w.close();
    });
    return { w, plain };
  }
  const data = (tenant: string, lens = 'receiving.recent') => ({ v: 1, tenant, lens, params: { limit: 1 } });

  it('completed jobs: at most LENSFLEET_KEEP_COMPLETED_COUNT are kept, also of jobs that asked to be kept forever', async () => {
    const { w, plain } = await workerWith({ LENSFLEET_KEEP_COMPLETED_COUNT: '3' });
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) {
      // half bring no retention (BullMQ default: keep), half say removeOnComplete: false (keep)
      const job = await plain.add('x', data(TENANT), i % 2 === 0 ? {} : { removeOnComplete: false });
      await job.waitUntilFinished(w.events, 20_000);
      ids.push(job.id!);
    }
    expect(await plain.getCompletedCount()).toBe(3);
    const kept = (await plain.getCompleted()).map((j) => j.id).sort();
    expect(kept).toEqual(ids.slice(3).sort());
  });

  it('completed jobs older than LENSFLEET_KEEP_COMPLETED_SECONDS go when the next job finishes, though both asked for a day', async () => {
    const { w, plain } = await workerWith({ LENSFLEET_KEEP_COMPLETED_SECONDS: '1' });
    const first = await plain.add('x', data(TENANT), { removeOnComplete: { age: 86_400 } });
    await first.waitUntilFinished(w.events, 20_000);
    const finishedOn = (await plain.getJob(first.id!))!.finishedOn!;
    await waitFor('the first job to be older than 1 s', () => Date.now() > finishedOn + 1500, 10_000, 50);
    const second = await plain.add('x', data(TENANT), { removeOnComplete: { age: 86_400 } });
    await second.waitUntilFinished(w.events, 20_000);
    expect(await plain.getJob(first.id!)).toBeUndefined();
    expect((await plain.getCompleted()).map((j) => j.id)).toEqual([second.id]);
  });

  it('failed jobs: at most LENSFLEET_KEEP_FAILED_COUNT are kept', async () => {
    const { w, plain } = await workerWith({ LENSFLEET_KEEP_FAILED_COUNT: '2' });
    for (let i = 0; i < 4; i++) {
      const job = await plain.add('x', data('yNO_SUCH_TENANT'), { removeOnFail: false });
      await expect(job.waitUntilFinished(w.events, 20_000)).rejects.toThrow(/^TENANT_NOT_FOUND:/);
    }
    expect(await plain.getFailedCount()).toBe(2);
  });

  it('attempts: a job asking for 1,000 fails for good at LENSFLEET_MAX_ATTEMPTS', async () => {
    const { w, plain } = await workerWith({ LENSFLEET_MAX_ATTEMPTS: '3', LENSFLEET_RETRY_BACKOFF_MS: '10' });
    const job = await plain.add('x', data('yDead'), { attempts: 1000, backoff: { type: 'fixed', delay: 10 } });
    await expect(job.waitUntilFinished(w.events, 30_000)).rejects.toThrow(/^CONNECTION_FAILED:/);
    const stored = (await plain.getJob(job.id!)) as Job;
    expect(await stored.getState()).toBe('failed');
    expect(stored.attemptsMade).toBe(3);
    // the stored options are the producer's: the cap lives in the worker
    expect(stored.opts.attempts).toBe(1000);
  });

  it('a retried job without a backoff of its own waits the worker’s doubling backoff (BullMQ would retry at once)', async () => {
    const { w, plain } = await workerWith({ LENSFLEET_MAX_ATTEMPTS: '3', LENSFLEET_RETRY_BACKOFF_MS: '400' });
    const job = await plain.add('x', data('yDead'), { attempts: 3 });
    await expect(job.waitUntilFinished(w.events, 30_000)).rejects.toThrow(/^CONNECTION_FAILED:/);
    const stored = (await plain.getJob(job.id!)) as Job;
    expect(stored.attemptsMade).toBe(3);
    // two waits: 400 ms, then 800 ms
    expect(stored.finishedOn! - stored.timestamp).toBeGreaterThanOrEqual(1200);
  });
});

describe('retry policy of a statement timeout (QUERY_TIMEOUT)', () => {
  let tenants: Awaited<ReturnType<typeof createTenants>>;
  beforeAll(async () => {
    tenants = await createTenants([uniqueId('yTmo')], 5);
  });
  afterAll(async () => {
    await tenants?.drop();
  });
  const tenant = () => tenants.dbs[0]!.tenant;

  async function timedOutJob(settings: Record<string, string>): Promise<Job> {
    const w = await startTestWorker({ env: tenants.env, concurrency: 2, settings });
    onTestFinished(() => w.close());
    // the SDK's defaults: 5 attempts, exponential backoff from 500 ms
    const job = await enqueue(w.queue, { tenant: tenant(), lens: 'test.timeout' });
    await expect(job.waitUntilFinished(w.events, 30_000)).rejects.toThrow(/^QUERY_TIMEOUT:/);
    return (await w.queue.getJob(job.id!)) as Job;
  }

  it('off: one run, no retry', async () => {
    const job = await timedOutJob({ LENSFLEET_RETRY_QUERY_TIMEOUT: 'off' });
    expect(job.attemptsMade).toBe(1);
  });

  it('once (the default): two runs, the second after LENSFLEET_RETRY_QUERY_TIMEOUT_DELAY_MS (not the job’s 500 ms)', async () => {
    const job = await timedOutJob({ LENSFLEET_RETRY_QUERY_TIMEOUT_DELAY_MS: '1500' });
    expect(job.attemptsMade).toBe(2);
    // two runs of ≥ 200 ms each and one wait of 1,500 ms
    expect(job.finishedOn! - job.timestamp).toBeGreaterThanOrEqual(1900);
  });
});

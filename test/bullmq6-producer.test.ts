/**
 * lensfleet's workers stay on BullMQ 5 (README, "BullMQ 5 or 6"), while BullMQ 6 is the current
 * major a producer may well use: a plain BullMQ 6 `Queue.add` with contract-v1 job data must be
 * served by a lensfleet worker like a job from lensfleet's own producer — result and failure
 * reason included. (`bullmq6` is the dev dependency alias `npm:bullmq@^6`.)
 */
import { createRequire } from 'node:module';
import { Queue as Queue6, QueueEvents as QueueEvents6 } from 'bullmq6';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { DEFAULT_JOB_OPTIONS } from '../queues/contract.js';
import { createTenants, redisUrl, startTestWorker, uniqueId } from './support/harness.js';

const require = createRequire(import.meta.url);
const T = uniqueId('yBmq6');
let tenants: Awaited<ReturnType<typeof createTenants>>;

beforeAll(async () => {
  tenants = await createTenants([T], 5);
});
afterAll(async () => {
  await tenants?.drop();
});

describe('a BullMQ 6 producer against a lensfleet worker on BullMQ 5', () => {
  it('completes a job added with BullMQ 6 Queue.add (contract v1 data, the default job options) and stores its result; a job with bad params fails once with INVALID_PARAMS', async () => {
    const w = await startTestWorker({ env: tenants.env, concurrency: 2, http: false });
    const connection = { url: redisUrl() };
    const queue6 = new Queue6(w.queueName, { connection, prefix: w.queue.opts.prefix, defaultJobOptions: { ...DEFAULT_JOB_OPTIONS } });
    const events6 = new QueueEvents6(w.queueName, { connection, prefix: w.queue.opts.prefix });
    onTestFinished(async () => {
      await events6.close();
      await queue6.close();
      await w.close();
    });
    await events6.waitUntilReady();
    // The worker really is on 5 and the producer on 6 (the test would prove nothing otherwise).
    expect(require('bullmq/package.json').version).toMatch(/^5\./);
    expect(require('bullmq6/package.json').version).toMatch(/^6\./);

    const job = await queue6.add('receiving.recent', { v: 1, tenant: T, lens: 'receiving.recent', params: { limit: 3 } });
    const result = (await job.waitUntilFinished(events6, 30_000)) as { rows: unknown[]; rowCount: number; lens: string; tenant: string };
    expect(result).toMatchObject({ lens: 'receiving.recent', tenant: T, rowCount: 3 });
    expect(result.rows).toHaveLength(3);
    const stored = await queue6.getJob(job.id!);
    expect(await stored!.getState()).toBe('completed');
    expect(stored!.returnvalue).toEqual(result);

    const bad = await queue6.add('receiving.recent', { v: 1, tenant: T, lens: 'receiving.recent', params: { limit: 'three' } });
    await expect(bad.waitUntilFinished(events6, 30_000)).rejects.toThrow(/^INVALID_PARAMS: /);
    const failed = await queue6.getJob(bad.id!);
    expect(await failed!.getState()).toBe('failed');
    expect(failed!.attemptsMade).toBe(1);
  });
});

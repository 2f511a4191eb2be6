/**
 * Bad input gets a clear, typed error, fails once (no retries), and harms nothing else: the
 * worker keeps serving valid jobs, and the producer refuses bad requests before touching Redis.
 */
import { Queue, type Job } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enqueue, enqueueMany, type LensQueue } from '../queues/producer.js';
import { LensfleetError } from '../src/errors.js';
import { createTenants, redisUrl, startTestWorker, uniqueId, type TestWorker } from './support/harness.js';

const TENANT = uniqueId('yBad');
const RETRY = { attempts: 5, backoff: { type: 'fixed', delay: 100 } } as const;

describe('bad input', () => {
  let tenants: Awaited<ReturnType<typeof createTenants>>;
  let w: TestWorker;
  let plain: Queue;

  beforeAll(async () => {
    tenants = await createTenants([TENANT], 10);
    w = await startTestWorker({ env: tenants.env, concurrency: 4 });
    plain = new Queue(w.queueName, { connection: { url: redisUrl() } });
  });
  afterAll(async () => {
    await plain?.close();
    await w?.close();
    await tenants?.drop();
  });

  /** Wait for a job to fail for good; return its stored state. */
  async function expectFailedOnce(job: Job, codePrefix: string): Promise<Job> {
    await expect(job.waitUntilFinished(w.events, 10_000)).rejects.toThrow(new RegExp(`^${codePrefix}:`));
    const stored = await w.queue.getJob(job.id!);
    expect(stored).toBeDefined();
    expect(await stored!.getState()).toBe('failed');
    // Non-retryable: one attempt although 5 were allowed.
    expect(stored!.attemptsMade).toBe(1);
    expect(stored!.failedReason.startsWith(`${codePrefix}:`)).toBe(true);
    return stored!;
  }

  it('fails a job for an unknown tenant once with TENANT_NOT_FOUND', async () => {
    const job = await enqueue(w.queue, { tenant: 'yNO_SUCH_TENANT', lens: 'receiving.recent', params: {} }, RETRY);
    const stored = await expectFailedOnce(job, 'TENANT_NOT_FOUND');
    expect(stored.failedReason).toContain('yNO_SUCH_TENANT');
  });

  it('fails a job for an unknown lens once with UNKNOWN_LENS', async () => {
    const job = await enqueue(w.queue, { tenant: TENANT, lens: 'no_such.lens', params: {} }, RETRY);
    const stored = await expectFailedOnce(job, 'UNKNOWN_LENS');
    expect(stored.failedReason).toContain('no_such.lens');
  });

  it('fails a job whose params fail the lens schema once with INVALID_PARAMS naming the params', async () => {
    const job = await enqueue(w.queue, { tenant: TENANT, lens: 'receiving.recent', params: { limit: 'x', bogusKey: 1 } }, RETRY);
    const stored = await expectFailedOnce(job, 'INVALID_PARAMS');
    expect(stored.failedReason).toContain('receiving.recent');
    expect(stored.failedReason).toContain('limit');
    expect(stored.failedReason).toContain('bogusKey');
  });

  it('fails a job with a 20 KB unknown params key once with INVALID_PARAMS, quoting the key clipped', async () => {
    const job = await enqueue(w.queue, { tenant: TENANT, lens: 'receiving.recent', params: { ['k'.repeat(20_000)]: 1 } }, RETRY);
    const stored = await expectFailedOnce(job, 'INVALID_PARAMS');
    expect(stored.failedReason.length).toBeLessThan(1000);
    expect(stored.failedReason).toMatch(/Unrecognized key: "k+…\(\d+ characters\)/);
  });

  it.each([
    ['string', 'just a string'],
    ['number', 42],
    ['null', null],
    ['array', [1, 2, 3]],
  ])('fails non-object job data (%s) from a plain producer once with INVALID_JOB', async (kind, data) => {
    const job = await plain.add('receiving.recent', data, RETRY);
    const stored = await expectFailedOnce(job, 'INVALID_JOB');
    expect(stored.failedReason).toContain('must be an object');
    expect(stored.failedReason).toContain(kind);
  });

  it('fails a 1 MB payload from a plain producer once with PAYLOAD_TOO_LARGE', async () => {
    const job = await plain.add('receiving.recent', { v: 1, tenant: TENANT, lens: 'receiving.recent', params: { blob: 'x'.repeat(1024 * 1024) } }, RETRY);
    const stored = await expectFailedOnce(job, 'PAYLOAD_TOO_LARGE');
    // The reason says what was wrong, without echoing the payload.
    expect(stored.failedReason).toMatch(/bytes/);
    expect(stored.failedReason.length).toBeLessThan(1000);
  });

  it('fails a job with the wrong version once with INVALID_JOB', async () => {
    const job = await plain.add('receiving.recent', { v: 2, tenant: TENANT, lens: 'receiving.recent', params: {} }, RETRY);
    const stored = await expectFailedOnce(job, 'INVALID_JOB');
    expect(stored.failedReason).toMatch(/\bv\b/);
  });

  it('after all the bad jobs, opened no pool and still completes a valid job; the worker stays ready', async () => {
    // No bad job got as far as a tenant pool.
    expect(w.service.registry.created).toBe(0);
    expect(w.service.registry.size).toBe(0);
    const job = await enqueue(w.queue, { tenant: TENANT, lens: 'receiving.recent', params: { limit: 3 } }, RETRY);
    const r = await job.waitUntilFinished(w.events, 10_000);
    expect(r.tenant).toBe(TENANT);
    expect(r.rowCount).toBe(3);
    for (const row of r.rows) expect(row.yacht_id).toBe(TENANT);
    expect(await w.service.ready()).toEqual({ ready: true, reasons: [] });
    expect(w.service.worker.isRunning()).toBe(true);
  });

  describe('producer-side enqueue()', () => {
    // enqueue() is typed as returning a Promise; wrap the call so a synchronous throw and a
    // rejection are both observed as a rejection.
    const attempt = (queue: LensQueue, req: unknown) => (async () => enqueue(queue, req as Parameters<typeof enqueue>[1]))();

    async function expectRefused(p: Promise<unknown>, code: string): Promise<void> {
      const err = await p.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(LensfleetError);
      expect((err as LensfleetError).code).toBe(code);
      expect((err as LensfleetError).retryable).toBe(false);
    }

    it('refuses invalid requests with a typed LensfleetError and adds nothing to Redis', async () => {
      const before = await w.queue.count();
      const ids = await w.queue.getJobCounts();
      await expectRefused(attempt(w.queue, null), 'INVALID_JOB');
      await expectRefused(attempt(w.queue, 'receiving.recent'), 'INVALID_JOB');
      await expectRefused(attempt(w.queue, { tenant: 'bad tenant!', lens: 'receiving.recent' }), 'INVALID_JOB');
      await expectRefused(attempt(w.queue, { tenant: TENANT, lens: 'Not A Lens' }), 'INVALID_JOB');
      await expectRefused(attempt(w.queue, { tenant: TENANT, lens: 'receiving.recent', params: [1, 2] }), 'INVALID_JOB');
      await expectRefused(attempt(w.queue, { tenant: TENANT, lens: 'receiving.recent', params: { blob: 'x'.repeat(1024 * 1024) } }), 'PAYLOAD_TOO_LARGE');
      // enqueueMany validates all before adding any: one bad request, nothing added.
      await expectRefused(
        enqueueMany(w.queue, [
          { tenant: TENANT, lens: 'receiving.recent', params: { limit: 1 } },
          { tenant: TENANT, lens: 'receiving.recent', params: { blob: 'x'.repeat(1024 * 1024) } },
        ]),
        'PAYLOAD_TOO_LARGE',
      );
      expect(await w.queue.count()).toBe(before);
      expect(await w.queue.getJobCounts()).toEqual(ids);
    });
  });
});

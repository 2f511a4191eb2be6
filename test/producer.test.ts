/**
 * The producer SDK on real Redis and a real worker: enqueueMany through addBulk, idempotency keys
 * (a second add of the same request returns the job already there, no second run; a different
 * request under the key is IDEMPOTENCY_CONFLICT), priority and delay passed through
 * to BullMQ, and `run`'s timeout saying where the job is (RUN_TIMEOUT with its state).
 */
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from 'vitest';
import type { MaritimeCatalog } from '../src/lenses/maritime.js';
import { LensfleetError } from '../src/errors.js';
import { createLensQueue, createLensQueueEvents, enqueue, enqueueMany, type LensQueue, RunTimeoutError, run, idempotentJobId } from '../queues/producer.js';
import { createTenants, redisUrl, startTestWorker, type TestWorker, uniqueId, waitFor } from './support/harness.js';

const UP = uniqueId('yProdUp');
/** A configured tenant whose database refuses connections (nothing listens on port 1). */
const DOWN = uniqueId('yProdDown');

let tenants: Awaited<ReturnType<typeof createTenants>>;
let w: TestWorker;
/** The worker's queue, typed with the built-in lenses (the test lenses go through `w.queue`). */
let typed: LensQueue<MaritimeCatalog>;

beforeAll(async () => {
  tenants = await createTenants([UP], 30);
  w = await startTestWorker({
    env: { ...tenants.env, LENSFLEET_TENANTS: `${UP},${DOWN}`, [`${DOWN}_DATABASE_URL`]: 'postgres://nobody@127.0.0.1:1/none' },
    concurrency: 4,
  });
  typed = w.queue as LensQueue<MaritimeCatalog>;
});
afterAll(async () => {
  await w?.close();
  await tenants?.drop();
});

/** The rejection of `p` (fails the test when it resolves). */
async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    (v) => {
      throw new Error(`expected a rejection, got ${JSON.stringify(v)}`);
    },
    (err: unknown) => err,
  );
}

/** A queue no worker takes from, with an events reader; removed after the test. */
async function idleQueue(): Promise<{ queue: LensQueue<MaritimeCatalog>; events: Awaited<ReturnType<typeof createLensQueueEvents>> }> {
  const connection = { url: redisUrl() };
  const queue = createLensQueue<MaritimeCatalog>({ connection, name: uniqueId('qIdle') });
  const events = await createLensQueueEvents(queue, connection);
  onTestFinished(async () => {
    await events.close();
    await queue.obliterate({ force: true });
    await queue.close();
  });
  return { queue, events };
}

describe('enqueueMany', () => {
  it('adds through addBulk, one call per batch, and returns the jobs in request order, each named after its lens', async () => {
    const addBulk = vi.spyOn(w.queue, 'addBulk');
    onTestFinished(() => addBulk.mockRestore());
    const reqs = [1, 2, 3, 4, 5].map((limit) => ({ tenant: UP, lens: limit % 2 ? 'receiving.recent' : 'work_orders.open', params: { limit } }));
    const jobs = await enqueueMany(typed, reqs as Parameters<typeof enqueueMany<MaritimeCatalog>>[1], undefined, 2);
    expect(addBulk).toHaveBeenCalledTimes(3);
    expect(addBulk.mock.calls.map(([batch]) => batch.length)).toEqual([2, 2, 1]);
    expect(jobs.map((j) => [j.name, j.data.params.limit])).toEqual(reqs.map((r) => [r.lens, r.params.limit]));
    const results = await Promise.all(jobs.map((j) => j.waitUntilFinished(w.events, 30_000)));
    expect(results.map((r) => r.rowCount)).toEqual([1, 2, 3, 4, 5]);
  });
});

describe('idempotency key', () => {
  it('maps to the job id idem-<tenant>-<key>; keys BullMQ would refuse as ids are refused before Redis', () => {
    expect(idempotentJobId(UP, 'order-42')).toBe(`idem-${UP}-order-42`);
    expect(idempotentJobId(UP, '42')).toBe(`idem-${UP}-42`); // an all-digit key is fine: the id is not an integer
    for (const bad of ['', 'a:b', 'with space', 'x'.repeat(129)]) {
      expect(() => idempotentJobId(UP, bad)).toThrow(expect.objectContaining({ code: 'INVALID_JOB' }));
    }
  });

  it('a second add of the same request with the same key returns the job already there and runs nothing twice', async () => {
    const key = uniqueId('k');
    const first = await enqueue(typed, { tenant: UP, lens: 'receiving.recent', params: { limit: 2 } }, { idempotencyKey: key });
    const second = await enqueue(typed, { tenant: UP, lens: 'receiving.recent', params: { limit: 2 } }, { idempotencyKey: key });
    expect(second.id).toBe(first.id);
    expect(second.id).toBe(idempotentJobId(UP, key));
    expect(second.data.params).toEqual({ limit: 2 });

    // run() with the same key, before and after the job completed: both get the first job's result
    const [a, b] = await Promise.all([
      run(typed, w.events, { tenant: UP, lens: 'receiving.recent', params: { limit: 2 } }, { idempotencyKey: key }),
      first.waitUntilFinished(w.events, 30_000),
    ]);
    const c = await run(typed, w.events, { tenant: UP, lens: 'receiving.recent', params: { limit: 2 } }, { idempotencyKey: key });
    expect(a.rowCount).toBe(2);
    expect(c).toEqual(a);
    expect(b).toEqual(a);
    const done = await w.queue.getJob(first.id!);
    expect(done?.attemptsMade).toBe(1); // ran once
    expect((await w.queue.getJobs(['completed', 'waiting', 'active', 'delayed', 'prioritized'])).filter((j) => j.id === first.id)).toHaveLength(1);

    // the same key for another tenant is another job
    const other = await enqueue(typed, { tenant: DOWN, lens: 'receiving.recent' }, { idempotencyKey: key, attempts: 1 });
    expect(other.id).not.toBe(first.id);

    // once the job is removed (retention, or by hand), the key adds a new job
    await done!.remove();
    const again = await enqueue(typed, { tenant: UP, lens: 'receiving.recent', params: { limit: 3 } }, { idempotencyKey: key });
    expect(again.id).toBe(first.id);
    expect(again.data.params).toEqual({ limit: 3 });
    expect((await again.waitUntilFinished(w.events, 30_000)).rowCount).toBe(3);
  });

  it('a different request under a key already taken fails with IDEMPOTENCY_CONFLICT and adds nothing; a fresh token is the same request', async () => {
    const key = uniqueId('kc');
    const first = await enqueue(typed, { tenant: UP, lens: 'receiving.recent', params: { limit: 2 } }, { idempotencyKey: key });
    const total = async () => Object.values(await w.queue.getJobCounts()).reduce((a, b) => a + b, 0);
    const before = await total();
    const others = [
      { tenant: UP, lens: 'receiving.recent', params: { limit: 7 } },
      { tenant: UP, lens: 'work_orders.open', params: { limit: 2 } },
    ] as const;
    for (const other of others) {
      const err = await rejection(enqueue(typed, other, { idempotencyKey: key }));
      expect(err).toMatchObject({ code: 'IDEMPOTENCY_CONFLICT', details: { jobId: first.id } });
      expect((err as Error).message).toContain('give a new request a new key');
      expect((err as Error).message).not.toContain('limit'); // says what differs in kind, never the values
      await expect(run(typed, w.events, other, { idempotencyKey: key })).rejects.toMatchObject({ code: 'IDEMPOTENCY_CONFLICT' });
    }
    expect(await total()).toBe(before);
    // a retry with a (new) token is the same request: the job already there
    const withToken = await enqueue(
      typed,
      { tenant: UP, lens: 'receiving.recent', params: { limit: 2 }, auth: { jwt: 'aaa.bbb.ccc' } },
      { idempotencyKey: key },
    );
    expect(withToken.id).toBe(first.id);
    expect(await total()).toBe(before);
    expect((await w.queue.getJob(first.id!))!.data.params).toEqual({ limit: 2 });
    // params compare as values: another key order is the same request
    const reordered = await enqueue(typed, { tenant: UP, lens: 'equipment.search', params: { q: 'pump', limit: 5 } }, { idempotencyKey: `${key}-o` });
    const again = await enqueue(typed, { tenant: UP, lens: 'equipment.search', params: { limit: 5, q: 'pump' } }, { idempotencyKey: `${key}-o` });
    expect(again.id).toBe(reordered.id);
  });

  it('enqueueMany: each request has its own key; a repeated request in one batch adds one job, a conflicting one is reported', async () => {
    const key = uniqueId('kb');
    const jobs = await enqueueMany(typed, [
      { tenant: UP, lens: 'receiving.recent', params: { limit: 1 }, idempotencyKey: key },
      { tenant: UP, lens: 'receiving.recent', params: { limit: 1 }, idempotencyKey: key },
      { tenant: UP, lens: 'receiving.recent', params: { limit: 5 } },
    ]);
    expect(jobs[1]!.id).toBe(jobs[0]!.id);
    expect(jobs[2]!.id).not.toBe(jobs[0]!.id);
    expect((await jobs[1]!.waitUntilFinished(w.events, 30_000)).rowCount).toBe(1);
    const conflict = await rejection(
      enqueueMany(typed, [
        { tenant: UP, lens: 'receiving.recent', params: { limit: 4 }, idempotencyKey: key },
        { tenant: UP, lens: 'receiving.recent', params: { limit: 6 } },
      ]),
    );
    expect(conflict).toMatchObject({ code: 'IDEMPOTENCY_CONFLICT', details: { conflicts: [{ index: 0, jobId: jobs[0]!.id }] } });
    expect((conflict as Error).message).toContain('the other 1 were');
    const added = (conflict as { details: { added: string[] } }).details.added;
    expect(added).toHaveLength(1);
    expect((await w.queue.getJob(added[0]!))!.data.params).toEqual({ limit: 6 });
    // a key in the options of all is refused, as is a key with an explicit jobId
    const refused = await rejection(enqueueMany(typed, [{ tenant: UP, lens: 'receiving.recent' }], { idempotencyKey: 'x' } as never));
    expect(refused).toMatchObject({ code: 'INVALID_JOB' });
    const both = await rejection(enqueue(typed, { tenant: UP, lens: 'receiving.recent' }, { idempotencyKey: 'x', jobId: 'y' }));
    expect(both).toMatchObject({ code: 'INVALID_JOB' });
  });
});

describe('priority and delay pass through to BullMQ', () => {
  it('a higher-priority job goes first (1 is the highest)', async () => {
    const queueName = uniqueId('qPrio');
    const queue = createLensQueue<MaritimeCatalog>({ connection: { url: redisUrl() }, name: queueName });
    onTestFinished(() => queue.close());
    // added before any worker runs, lowest priority first
    const low = await enqueue(queue, { tenant: UP, lens: 'receiving.recent', params: { limit: 1 } }, { priority: 10 });
    const mid = await enqueue(queue, { tenant: UP, lens: 'receiving.recent', params: { limit: 1 } }, { priority: 5 });
    const high = await enqueue(queue, { tenant: UP, lens: 'receiving.recent', params: { limit: 1 } }, { priority: 1 });
    expect(await high.getState()).toBe('prioritized');
    const one = await startTestWorker({ env: tenants.env, concurrency: 1, queueName });
    onTestFinished(() => one.close());
    await Promise.all([low, mid, high].map((j) => j.waitUntilFinished(one.events, 30_000)));
    const processedOn = await Promise.all([high, mid, low].map(async (j) => (await queue.getJob(j.id!))!.processedOn!));
    expect(processedOn[0]).toBeLessThanOrEqual(processedOn[1]!);
    expect(processedOn[1]).toBeLessThanOrEqual(processedOn[2]!);
    const finishedOn = await Promise.all([high, mid, low].map(async (j) => (await queue.getJob(j.id!))!.finishedOn!));
    expect(finishedOn[0]).toBeLessThanOrEqual(processedOn[1]!); // concurrency 1: one after the other
    expect(finishedOn[1]).toBeLessThanOrEqual(processedOn[2]!);
  });

  it('a delayed job is not taken before its delay', async () => {
    const delay = 1500;
    const job = await enqueue(typed, { tenant: UP, lens: 'receiving.recent', params: { limit: 1 } }, { delay });
    expect(await job.getState()).toBe('delayed');
    expect((await job.waitUntilFinished(w.events, 30_000)).rowCount).toBe(1);
    const done = (await w.queue.getJob(job.id!))!;
    expect(done.processedOn! - done.timestamp).toBeGreaterThanOrEqual(delay);
  });
});

describe('run() timeout says where the job is (RUN_TIMEOUT)', () => {
  function expectTimeout(err: unknown, state: RunTimeoutError['state']): RunTimeoutError {
    expect(err).toBeInstanceOf(RunTimeoutError);
    expect(err).toBeInstanceOf(LensfleetError);
    const e = err as RunTimeoutError;
    expect(e.code).toBe('RUN_TIMEOUT');
    expect(e.retryable).toBe(false);
    expect(e.state).toBe(state);
    expect(e.details).toMatchObject({ jobId: e.jobId, state });
    return e;
  }

  it('waiting: no worker takes from the queue', async () => {
    const { queue, events } = await idleQueue();
    const err = expectTimeout(await rejection(run(queue, events, { tenant: UP, lens: 'receiving.recent' }, { waitTimeoutMs: 300 })), 'waiting');
    expect(err.message).toBe(`no result within 300 ms: job ${err.jobId} is still waiting (no worker took it)`);
    expect(err.failedCode).toBeUndefined();
    expect(await (await queue.getJob(err.jobId))!.getState()).toBe('waiting'); // the job goes on
    // a prioritized job is waiting too
    expectTimeout(await rejection(run(queue, events, { tenant: UP, lens: 'receiving.recent' }, { waitTimeoutMs: 200, priority: 3 })), 'waiting');
  });

  it('delayed: its delay has not passed', async () => {
    const err = expectTimeout(
      await rejection(run(typed, w.events, { tenant: UP, lens: 'receiving.recent' }, { waitTimeoutMs: 300, delay: 60_000 })),
      'delayed',
    );
    expect(err.message).toBe(`no result within 300 ms: job ${err.jobId} is delayed (its delay or a retry backoff)`);
    await (await w.queue.getJob(err.jobId))!.remove();
  });

  it('delayed after a failed attempt: the error names the attempt and its code', async () => {
    const key = uniqueId('kDown');
    const req = { tenant: DOWN, lens: 'receiving.recent' } as const;
    const job = await enqueue(typed, req, { idempotencyKey: key, attempts: 3, backoff: { type: 'fixed', delay: 60_000 } });
    await waitFor('the first attempt failed and the job waits for its retry', async () => {
      const j = await w.queue.getJob(job.id!);
      return j !== undefined && j.attemptsMade === 1 && (await j.getState()) === 'delayed';
    });
    const err = expectTimeout(await rejection(run(typed, w.events, req, { idempotencyKey: key, waitTimeoutMs: 300 })), 'delayed');
    expect(err.jobId).toBe(job.id);
    expect(err.failedCode).toBe('CONNECTION_FAILED');
    expect(err.attemptsMade).toBe(1);
    expect(err.message).toBe(`no result within 300 ms: job ${job.id} is delayed (its delay or a retry backoff); attempt 1 failed with CONNECTION_FAILED`);
    await (await w.queue.getJob(job.id!))!.remove();
  });

  it('active: a worker is running it', async () => {
    const key = uniqueId('kSleep');
    const req = { tenant: UP, lens: 'test.sleep', params: { seconds: 8 } };
    const job = await enqueue(w.queue, req, { idempotencyKey: key });
    await waitFor('the job is active', async () => (await job.getState()) === 'active');
    const err = expectTimeout(await rejection(run(w.queue, w.events, req, { idempotencyKey: key, waitTimeoutMs: 300 })), 'active');
    expect(err.message).toBe(`no result within 300 ms: job ${job.id} is active (a worker is running it)`);
  });

  it('failed: the job failed for good but its failure event never reached the waiter; the code says why', async () => {
    // An events reader that never reads: the failure is seen only by looking at the job.
    const deaf = await createLensQueueEvents(w.queue, { url: redisUrl() }, { autorun: false });
    onTestFinished(() => deaf.close());
    // The delay keeps the job unfinished while run() checks whether it already finished.
    const err = expectTimeout(
      await rejection(run(w.queue, deaf, { tenant: 'yNO_SUCH_TENANT', lens: 'receiving.recent' }, { delay: 2000, waitTimeoutMs: 8000 })),
      'failed',
    );
    expect(err.failedCode).toBe('TENANT_NOT_FOUND');
    expect(err.message).toBe(`no result within 8000 ms: job ${err.jobId} is failed; attempt 1 failed with TENANT_NOT_FOUND`);
  });

  it('a job that completed but whose completion event never reached the waiter: its result, not RUN_TIMEOUT', async () => {
    const deaf = await createLensQueueEvents(w.queue, { url: redisUrl() }, { autorun: false });
    onTestFinished(() => deaf.close());
    const r = await run(w.queue, deaf, { tenant: UP, lens: 'receiving.recent', params: { limit: 4 } }, { delay: 1000, waitTimeoutMs: 6000 });
    expect(r).toMatchObject({ tenant: UP, lens: 'receiving.recent', rowCount: 4 });
  });

  it('a job that fails for good before the timeout rejects with its failure reason, not RUN_TIMEOUT', async () => {
    const err = await rejection(run(w.queue, w.events, { tenant: UP, lens: 'receiving.recent', params: { limit: 'x' } }, { waitTimeoutMs: 30_000 }));
    expect(err).not.toBeInstanceOf(RunTimeoutError);
    expect((err as Error).message).toMatch(/^INVALID_PARAMS: params of lens receiving\.recent are invalid/);
  });
});

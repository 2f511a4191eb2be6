/**
 * The worker service's lifecycle, in process: how long a drain may take (the shutdown timeout),
 * readiness as Redis comes and goes, and the outcome of every job attempt in the metrics.
 */
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { enqueue } from '../queues/producer.js';
import { createTenants, startTestWorker, uniqueId, waitFor } from './support/harness.js';

const T = uniqueId('ySvc');
let tenants: Awaited<ReturnType<typeof createTenants>>;

beforeAll(async () => {
  tenants = await createTenants([T], 5);
});
afterAll(async () => {
  await tenants?.drop();
});

describe('shutdown timeout', () => {
  it('close() waits at most shutdownTimeoutMs (500) for an active job, then ends its connection and closes; the job is retried', async () => {
    const w = await startTestWorker({ env: tenants.env, concurrency: 2, extra: { shutdownTimeoutMs: 500 } });
    onTestFinished(() => w.close());
    const job = await enqueue(w.queue, { tenant: T, lens: 'test.sleep', params: { seconds: 30 } }, { attempts: 2 });
    await waitFor('the job to be active', () => w.service.activeJobs() === 1, 10_000, 10);
    const started = performance.now();
    await w.service.close();
    const took = performance.now() - started;
    // Waited for the job first …
    expect(took).toBeGreaterThanOrEqual(480);
    // … but not for its 30 s (20 s of margin for a loaded machine).
    expect(took).toBeLessThan(10_000);
    expect(w.logs.find((e) => typeof e.msg === 'string' && e.msg.startsWith('shutdown timeout reached'))).toMatchObject([{ timeoutMs: 500 }]);
    // Its connection was ended: the attempt failed as a lost connection and waits for its retry.
    const stored = (await w.queue.getJob(job.id!))!;
    expect(['delayed', 'waiting']).toContain(await stored.getState());
    expect(stored.attemptsMade).toBe(1);
    expect(stored.failedReason).toMatch(/^QUERY_FAILED_TRANSIENT: /);
  });
});

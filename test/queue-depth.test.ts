/**
 * Queue depth in /metrics counts jobs added with a priority: BullMQ keeps them in `prioritized`,
 * apart from `waiting`, so a gauge of `waiting` alone would show an empty queue while they wait.
 */
import { Queue } from 'bullmq';
import { afterAll, describe, expect, it } from 'vitest';
import { LensfleetMetrics, QUEUE_STATES, type ProcessSnapshot } from '../src/metrics.js';
import { redisUrl, uniqueId } from './support/harness.js';

const proc: ProcessSnapshot = { pools: 0, connections: 0, maxConnections: 16, concurrency: 8, activeJobs: 0, pooling: true, ready: true };

describe('lensfleet_queue_jobs', () => {
  const queue = new Queue(uniqueId('depth'), { connection: { url: redisUrl() } });
  afterAll(async () => {
    await queue.obliterate({ force: true });
    await queue.close();
  });

  it('shows prioritized jobs as state="prioritized", beside waiting and delayed', async () => {
    const data = { v: 1, tenant: 'yA', lens: 'receiving.recent', params: {} };
    await queue.add('receiving.recent', data);
    await queue.add('receiving.recent', data, { priority: 3 });
    await queue.add('receiving.recent', data, { priority: 1 });
    await queue.add('receiving.recent', data, { delay: 60_000 });
    // As the worker reads them (workers/service.ts).
    const metrics = new LensfleetMetrics(
      { poolStats: () => [], processStats: () => proc, queueName: queue.name, queueCounts: () => queue.getJobCounts(...QUEUE_STATES) },
      { defaultMetrics: false },
    );
    const text = await metrics.registry.metrics();
    const depth = Object.fromEntries([...text.matchAll(/^lensfleet_queue_jobs\{queue="[^"]+",state="([^"]+)"\} (\d+)$/gm)].map((m) => [m[1], Number(m[2])]));
    expect(depth).toEqual({ waiting: 1, prioritized: 2, active: 0, delayed: 1, failed: 0 });
  });
});

/**
 * SIGTERM drains a real worker process: it stops taking jobs, reports not-ready while it finishes
 * the active ones, completes them, closes every tenant connection and exits 0. A job enqueued
 * during the drain is left for another worker, which completes it: nothing is lost.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLensQueue, enqueue, enqueueMany, QueueEvents, type LensJob, type LensQueue } from '../queues/producer.js';
import { countConnections, createTenants, redisUrl, sleep, spawnWorker, uniqueId, waitFor, type ChildWorker, killWorker } from './support/harness.js';

const TENANT = uniqueId('yShut');
const QUEUE = uniqueId('q_shut');

describe('graceful shutdown of a worker process', () => {
  let tenants: Awaited<ReturnType<typeof createTenants>>;
  let queue: LensQueue;
  let events: QueueEvents;
  const children: ChildWorker[] = [];
  let env: Record<string, string>;

  // Shared between the tests below (they run in order, as one scenario).
  let first: ChildWorker;
  let sleepers: LensJob[] = [];
  let late: LensJob | undefined;
  const readyDuringDrain: (number | string)[] = [];
  let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;

  beforeAll(async () => {
    tenants = await createTenants([TENANT], 10);
    env = { ...tenants.env, LENSFLEET_QUEUE: QUEUE, LENSFLEET_CONCURRENCY: '4' };
    queue = createLensQueue({ connection: { url: redisUrl() }, name: QUEUE });
    events = new QueueEvents(QUEUE, { connection: { url: redisUrl() } });
    await events.waitUntilReady();
    first = await spawnWorker(env);
    children.push(first);
  });
  afterAll(async () => {
    for (const c of children) await killWorker(c);
    await events?.close();
    await queue?.obliterate({ force: true }).catch(() => {});
    await queue?.close();
    await tenants?.drop();
  });

  it('on SIGTERM with 4 active jobs: stops taking jobs, finishes all 4, and exits 0', async () => {
    sleepers = await enqueueMany(
      queue,
      Array.from({ length: 4 }, () => ({ tenant: TENANT, lens: 'test.sleep', params: { seconds: 1.5 } })),
      { attempts: 3, backoff: { type: 'fixed', delay: 100 } },
    );
    await waitFor('4 active jobs', async () => (await queue.getActiveCount()) === 4, 10_000, 20);
    const metrics = await (await fetch(`http://127.0.0.1:${first.port}/metrics`)).text();
    expect(metrics).toMatch(/^lensfleet_worker_active_jobs 4$/m);

    first.proc.kill('SIGTERM');
    // The signal is handled asynchronously: poll once the worker says it is draining.
    await waitFor('the worker to start draining', () => first.output().includes('draining: no new jobs'), 5000, 5);
    // Poll /ready while the worker drains, until the process is gone.
    const poller = (async () => {
      while (first.proc.exitCode === null && first.proc.signalCode === null) {
        try {
          const r = await fetch(`http://127.0.0.1:${first.port}/ready`, { signal: AbortSignal.timeout(500) });
          readyDuringDrain.push(r.status);
        } catch (err) {
          readyDuringDrain.push(String((err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name));
        }
        await sleep(50);
      }
    })();
    // Enqueued during the drain: must not be taken by the draining worker.
    await sleep(100);
    late = await enqueue(queue, { tenant: TENANT, lens: 'test.whoami' }, { attempts: 3, backoff: { type: 'fixed', delay: 100 } });

    exit = await first.exited;
    await poller;
    expect(exit).toEqual({ code: 0, signal: null });

    for (const j of sleepers) {
      const stored = await queue.getJob(j.id!);
      expect(await stored!.getState()).toBe('completed');
      expect(stored!.attemptsMade).toBe(1);
      expect(stored!.returnvalue.rows[0]).toMatchObject({ db: tenants.dbs[0]!.database });
    }
    expect(await queue.getJobState(late.id!)).toBe('waiting');
    expect((await queue.getJob(late.id!))!.attemptsMade).toBe(0);
  });

  it('answers /ready with 503 while draining (the HTTP server stays up until the end)', () => {
    expect(exit).toBeDefined();
    expect(readyDuringDrain.length).toBeGreaterThan(0);
    // The drain lasts ~1.5 s; the poller must have seen "not ready" answers, not refused connections.
    expect(readyDuringDrain).toContain(503);
    expect(readyDuringDrain).not.toContain(200);
  });

  it('leaves no connection open to the tenant database after exit', async () => {
    expect(exit).toBeDefined();
    const database = tenants.dbs[0]!.database;
    await waitFor('the tenant backends to exit', async () => (await countConnections(database)) === 0, 2000, 50);
    expect(await countConnections(database)).toBe(0);
  });

  it('a job enqueued during the drain is completed by a worker started afterwards (nothing lost)', async () => {
    expect(late).toBeDefined();
    const second = await spawnWorker(env);
    children.push(second);
    const r = await late!.waitUntilFinished(events, 10_000);
    expect(r.rows[0]).toMatchObject({ db: tenants.dbs[0]!.database });
    expect(await queue.getJobState(late!.id!)).toBe('completed');
    second.proc.kill('SIGTERM');
    expect(await second.exited).toEqual({ code: 0, signal: null });
  });
});

/**
 * The worker service's lifecycle, in process: how long a drain may take (the shutdown timeout),
 * readiness as Redis comes and goes, and the outcome of every job attempt in the metrics.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { enqueue } from '../queues/producer.js';
import { createTenants, redisUrl, startTestWorker, uniqueId, waitFor, type TestWorker } from './support/harness.js';

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
    const base = `http://127.0.0.1:${w.service.port}`;
    expect(await (await fetch(`${base}/metrics`)).text()).toMatch(/^lensfleet_worker_active_jobs 1$/m);
    const started = performance.now();
    const closing = w.service.close();
    // Draining: not ready, and the HTTP endpoints (closed last) still answer.
    expect(w.service.draining).toBe(true);
    const ready = await fetch(`${base}/ready`);
    expect(ready.status).toBe(503);
    expect(((await ready.json()) as { reasons: string[] }).reasons).toContain('draining');
    expect(((await (await fetch(`${base}/health`)).json()) as { draining: boolean }).draining).toBe(true);
    await closing;
    const took = performance.now() - started;
    expect(w.service.activeJobs()).toBe(0);
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

describe('readiness follows Redis', () => {
  it('/ready is 503 naming Redis while Redis is unreachable, and 200 again once it is back', async () => {
    const gate = await RedisGate.start(redisUrl());
    const w = await startTestWorker({ env: tenants.env, concurrency: 1, settings: { REDIS_URL: gate.url } }).catch(async (err: unknown) => {
      await gate.close();
      throw err;
    });
    onTestFinished(async () => {
      gate.open();
      await w.close();
      await gate.close();
    });
    const ready = async () => {
      const r = await fetch(`http://127.0.0.1:${w.service.port}/ready`);
      return { status: r.status, body: (await r.json()) as { ready: boolean; reasons: string[] } };
    };
    expect(await ready()).toEqual({ status: 200, body: { ready: true, reasons: [] } });

    gate.shut();
    const down = await waitFor('/ready to say Redis is gone', async () => {
      const r = await ready();
      return r.status === 503 ? r : undefined;
    });
    expect(down.body.ready).toBe(false);
    expect(down.body.reasons).toEqual([expect.stringMatching(/^redis (connecting|reconnecting|close|end)$/)]);
    expect((await fetch(`http://127.0.0.1:${w.service.port}/health`)).status).toBe(200); // alive all the same

    gate.open();
    await waitFor('/ready to be 200 again', async () => (await ready()).status === 200, 30_000, 100);
  });
});

describe('closing', () => {
  it('close() leaves no Redis connection open (every client the service made is closed)', async () => {
    const gate = await RedisGate.start(redisUrl());
    onTestFinished(() => gate.close());
    const w = await startTestWorker({ env: tenants.env, concurrency: 1, settings: { REDIS_URL: gate.url } });
    expect(gate.connections).toBeGreaterThanOrEqual(2); // the worker's (and its blocking one) and the monitor's
    await w.close();
    await waitFor('every Redis connection through the gate to close', () => gate.connections === 0, 5000, 20);
  });
});

describe('job outcomes in lensfleet_jobs_total', () => {
  const DOWN = uniqueId('ySvcDown');
  let w: TestWorker;
  beforeAll(async () => {
    // port 1: connection refused, a transient failure (retried)
    w = await startTestWorker({
      env: { ...tenants.env, LENSFLEET_TENANTS: `${T},${DOWN}`, [`${DOWN}_DATABASE_URL`]: 'postgres://u:p@127.0.0.1:1/x' },
      concurrency: 2,
      settings: { LENSFLEET_METRICS_QUEUE_CACHE_MS: '0' },
    });
  });
  afterAll(async () => {
    await w?.close();
  });
  const outcomes = async (tenant: string, lens: string) => {
    const text = await (await fetch(`http://127.0.0.1:${w.service.port}/metrics`)).text();
    const out: Record<string, number> = {};
    for (const m of text.matchAll(/^lensfleet_jobs_total\{lens="([^"]*)",tenant="([^"]*)",outcome="([^"]*)"\} (\d+)$/gm)) {
      if (m[1] === lens && m[2] === tenant) out[m[3]!] = Number(m[4]);
    }
    return out;
  };
  const retry = { attempts: 2, backoff: { type: 'fixed', delay: 50 } } as const;

  it('a transient failure with attempts left is "retried", at the last attempt "failed"', async () => {
    const job = await enqueue(w.queue, { tenant: DOWN, lens: 'receiving.recent' }, retry);
    await expect(job.waitUntilFinished(w.events, 20_000)).rejects.toThrow(/^CONNECTION_FAILED: /);
    expect((await w.queue.getJob(job.id!))!.attemptsMade).toBe(2);
    expect(await outcomes(DOWN, 'receiving.recent')).toEqual({ retried: 1, failed: 1 });
    // logged with its code: a warning while attempts remain, an error at the last
    const lines = w.logs.find((e) => e.jobId === job.id && e.code === 'CONNECTION_FAILED');
    expect(lines.map((e) => [e.level, e.attempt, e.final, e.retryable, e.tenant, e.lens])).toEqual([
      [40, 1, false, true, DOWN, 'receiving.recent'],
      [50, 2, true, true, DOWN, 'receiving.recent'],
    ]);
  });

  it('a failure no retry fixes (RESULT_TOO_LARGE) is "failed" at once, with attempts left', async () => {
    const job = await enqueue(w.queue, { tenant: T, lens: 'test.series', params: { rows: 50 } }, { ...retry, attempts: 3 });
    await expect(job.waitUntilFinished(w.events, 20_000)).rejects.toThrow(/^RESULT_TOO_LARGE: /);
    expect((await w.queue.getJob(job.id!))!.attemptsMade).toBe(1);
    expect(await outcomes(T, 'test.series')).toEqual({ failed: 1 });
  });

  it('a job that succeeds is "completed", its result timed in ms to the µs', async () => {
    const started = performance.now();
    const job = await enqueue(w.queue, { tenant: T, lens: 'test.whoami' }, retry);
    const r = await job.waitUntilFinished(w.events, 20_000);
    const elapsedMs = performance.now() - started;
    expect(await outcomes(T, 'test.whoami')).toEqual({ completed: 1 });
    expect(r).toMatchObject({ lens: 'test.whoami', tenant: T, rowCount: 1 });
    expect(r.durationMs).toBeGreaterThan(0);
    expect(r.durationMs).toBeLessThan(elapsedMs);
    expect(Math.round(r.durationMs * 1000)).toBeCloseTo(r.durationMs * 1000, 6);
  });

  it('queue depth by state in /metrics (read at each scrape with LENSFLEET_METRICS_QUEUE_CACHE_MS 0); nothing left active', async () => {
    const text = await (await fetch(`http://127.0.0.1:${w.service.port}/metrics`)).text();
    const depth = Object.fromEntries(
      [...text.matchAll(/^lensfleet_queue_jobs\{queue="([^"]+)",state="([^"]+)"\} (\d+)$/gm)].map((m) => [`${m[1]}/${m[2]}`, Number(m[3])]),
    );
    expect(depth).toEqual({
      [`${w.queueName}/waiting`]: 0,
      [`${w.queueName}/prioritized`]: 0,
      [`${w.queueName}/active`]: 0,
      [`${w.queueName}/delayed`]: 0,
      [`${w.queueName}/failed`]: 2,
    });
    expect(w.service.activeJobs()).toBe(0);
  });
});

/**
 * A TCP gate in front of Redis: shut, it drops every connection and refuses new ones (a Redis that
 * went away); open, it forwards again.
 */
class RedisGate {
  readonly #server: net.Server;
  readonly #links = new Set<net.Socket>();
  #shut = false;

  private constructor(server: net.Server) {
    this.#server = server;
  }

  static async start(target: string): Promise<RedisGate> {
    const t = new URL(target);
    const server = net.createServer();
    const gate = new RedisGate(server);
    server.on('connection', (client) => {
      if (gate.#shut) return void client.destroy();
      const upstream = net.connect(Number(t.port), t.hostname);
      gate.#links.add(client).add(upstream);
      for (const s of [client, upstream]) {
        s.on('error', () => {});
        s.on('close', () => {
          gate.#links.delete(s);
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return gate;
  }

  get url(): string {
    return `redis://127.0.0.1:${(this.#server.address() as net.AddressInfo).port}`;
  }

  /** Connections open through the gate now. */
  get connections(): number {
    return this.#links.size / 2;
  }

  shut(): void {
    this.#shut = true;
    for (const s of this.#links) s.destroy();
  }

  open(): void {
    this.#shut = false;
  }

  async close(): Promise<void> {
    this.shut();
    await new Promise<void>((r) => this.#server.close(() => r()));
  }
}

describe('start-up options', () => {
  it('http: false serves no endpoint (port undefined); the worker still runs jobs', async () => {
    const w = await startTestWorker({ env: tenants.env, concurrency: 1, http: false });
    onTestFinished(() => w.close());
    expect(w.service.port).toBeUndefined();
    expect((await (await enqueue(w.queue, { tenant: T, lens: 'test.whoami' })).waitUntilFinished(w.events, 20_000)).rowCount).toBe(1);
  });

  it('LENSFLEET_WARM_TENANTS=*: every tenant’s pool is created at start, before any job; /health reports the process', async () => {
    const w = await startTestWorker({ env: tenants.env, concurrency: 2, pool: { minSize: 1 }, settings: { LENSFLEET_WARM_TENANTS: '*' } });
    onTestFinished(() => w.close());
    await waitFor('the warm pool', () => w.service.registry.keys().includes(`${T}:service`), 10_000, 10);
    expect(w.service.tenants().ids()).toEqual([T]);
    const health = (await (await fetch(`http://127.0.0.1:${w.service.port}/health`)).json()) as Record<string, unknown>;
    expect(health).toMatchObject({
      status: 'healthy',
      pid: process.pid,
      queue: w.queueName,
      concurrency: 2,
      pooling: true,
      tenants: 1,
      draining: false,
      connection_pools: { active_pools: 1, pool_keys: [`${T}:service`] },
    });
  });
});

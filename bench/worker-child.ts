/**
 * A worker child process for the benchmarks, forked by bench/lib/worker-handle.ts.
 *
 * `BENCH_MODE` picks the worker (see WorkerMode); everything else comes from the environment,
 * exactly as the production entry point reads it (REDIS_URL, LENSFLEET_*, <ID>_DATABASE_URL).
 * Workers run as child processes so that their CPU can be read from /proc apart from the
 * producer, and so that a profile (`--cpu-prof`) covers the worker alone.
 */
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import { Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { loadWorkerConfig } from '../src/config.js';
import { LensCatalog, loadLensModules } from '../src/lens.js';
import { maritimeLenses } from '../src/lenses/maritime.js';
import { createLogger } from '../src/logger.js';
import { loadTenantDirectory } from '../src/tenants.js';
import { startWorkerService, type WorkerService } from '../workers/service.js';
import { bareLensRunner } from './lib/bare-lens.js';
import type { ChildMessage, ParentMessage, WorkerMode } from './lib/protocol.js';

const MAX_SAMPLES = 500_000;

function send(message: ChildMessage): void {
  process.send?.(message);
}

/**
 * Where a worker's time went while jobs waited: how late its event loop ran callbacks (a 1 ms
 * resolution histogram) and its garbage collector's pauses, since the last `arm`.
 */
class Pauses {
  readonly #loop = monitorEventLoopDelay({ resolution: 1 });
  #gcMaxMs = 0;
  #gcTotalMs = 0;

  constructor() {
    this.#loop.enable();
    new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) {
        this.#gcMaxMs = Math.max(this.#gcMaxMs, entry.duration);
        this.#gcTotalMs += entry.duration;
      }
    }).observe({ entryTypes: ['gc'] });
  }

  reset(): void {
    this.#loop.reset();
    this.#gcMaxMs = 0;
    this.#gcTotalMs = 0;
  }

  read(): { loopDelayP99Ms: number; loopDelayMaxMs: number; gcMaxMs: number; gcTotalMs: number } {
    // The histogram is in ns and includes the 1 ms sampling interval itself.
    const ms = (ns: number) => Math.max(0, ns / 1e6 - 1);
    return { loopDelayP99Ms: ms(this.#loop.percentile(99)), loopDelayMaxMs: ms(this.#loop.max), gcMaxMs: this.#gcMaxMs, gcTotalMs: this.#gcTotalMs };
  }
}

/** Records finished jobs and reports when the armed count is reached. */
class Recorder {
  #target = Number.POSITIVE_INFINITY;
  #completed = 0;
  #failed = 0;
  #firstFailure: string | undefined;
  #firstProcessedOn = Number.POSITIVE_INFINITY;
  #lastFinishedOn = 0;
  #e2e: number[] = [];
  #service: number[] = [];
  readonly #pauses = new Pauses();

  arm(count: number): void {
    this.#pauses.reset();
    this.#target = count;
    this.#completed = 0;
    this.#failed = 0;
    this.#firstFailure = undefined;
    this.#firstProcessedOn = Number.POSITIVE_INFINITY;
    this.#lastFinishedOn = 0;
    this.#e2e = [];
    this.#service = [];
    this.#check();
  }

  get finished(): number {
    return this.#completed + this.#failed;
  }

  completed(job: Job): void {
    const finishedOn = job.finishedOn ?? Date.now();
    const processedOn = job.processedOn ?? finishedOn;
    this.#completed++;
    this.#firstProcessedOn = Math.min(this.#firstProcessedOn, processedOn);
    this.#lastFinishedOn = Math.max(this.#lastFinishedOn, finishedOn);
    if (this.#e2e.length < MAX_SAMPLES) {
      this.#e2e.push(finishedOn - job.timestamp);
      this.#service.push(finishedOn - processedOn);
    }
    this.#check();
  }

  failed(job: Job | undefined, err: Error): void {
    this.#failed++;
    this.#firstFailure ??= err.message.slice(0, 300);
    // A retried job will finish again later: only a final failure counts towards the target.
    const final = job === undefined || job.attemptsMade >= (job.opts.attempts ?? 1) || err.name === 'UnrecoverableError';
    if (!final) this.#target++;
    this.#check();
  }

  #check(): void {
    if (this.finished >= this.#target) this.flush();
  }

  flush(): void {
    send({
      t: 'done',
      completed: this.#completed,
      failed: this.#failed,
      firstFailure: this.#firstFailure,
      firstProcessedOn: this.#firstProcessedOn,
      lastFinishedOn: this.#lastFinishedOn,
      e2eMs: this.#e2e,
      serviceMs: this.#service,
      ...this.#pauses.read(),
    });
    this.#target = Number.POSITIVE_INFINITY;
  }
}

interface Running {
  readonly worker: Worker;
  readonly service?: WorkerService;
  close(): Promise<void>;
}

async function startLensfleet(): Promise<Running> {
  const config = loadWorkerConfig(process.env);
  const tenants = loadTenantDirectory(config, process.env);
  const catalog = new LensCatalog(maritimeLenses);
  // A workload's own lenses (the fairness workload's slow one), as an operator's module is loaded.
  await loadLensModules(catalog, config.lensModules);
  const logger = createLogger({ level: config.logLevel });
  const service = await startWorkerService({ config, tenants, catalog, logger, http: false });
  return { worker: service.worker, service, close: () => service.close() };
}

/** The hand-written worker: a plain BullMQ Worker running jobs through bareLensRunner. */
async function startBaseline(mode: Exclude<WorkerMode, 'lensfleet'>): Promise<Running> {
  const env = process.env;
  const concurrency = Number(env.LENSFLEET_CONCURRENCY ?? 8);
  const noop = mode === 'noop';
  const bare = bareLensRunner(env, concurrency, mode === 'baseline-named');
  const processor: (job: Job) => Promise<unknown> = noop
    ? async () => undefined
    : async (job: Job<{ tenant: string; lens: string; params: Record<string, unknown> }>) => {
        const { tenant, lens, params } = job.data;
        const res = await bare.run(tenant, lens, params);
        return { rows: res.rows, rowCount: res.rowCount, lens, tenant };
      };
  const worker = new Worker(env.LENSFLEET_QUEUE ?? 'lens-queries', processor, {
    connection: new Redis(env.REDIS_URL ?? 'redis://127.0.0.1:6379', { maxRetriesPerRequest: null }),
    concurrency,
  });
  worker.on('error', () => {});
  await worker.waitUntilReady();
  return {
    worker,
    close: async () => {
      await worker.close();
      await bare.close();
    },
  };
}

async function main(): Promise<void> {
  const mode = process.env.BENCH_MODE as WorkerMode;
  // A -bmq6 variant must really run on BullMQ 6 (bench/lib/bullmq6-loader.ts), and the others on 5.
  const bullmqPath = import.meta.resolve('bullmq');
  if ((process.env.BENCH_BULLMQ === '6') !== bullmqPath.includes('/node_modules/bullmq6/'))
    throw new Error(`BENCH_BULLMQ=${process.env.BENCH_BULLMQ ?? '5'} but bullmq resolves to ${bullmqPath}`);
  const running = mode === 'lensfleet' ? await startLensfleet() : await startBaseline(mode);
  const recorder = new Recorder();
  running.worker.on('completed', (job) => recorder.completed(job));
  running.worker.on('failed', (job, err) => recorder.failed(job, err));
  setInterval(() => send({ t: 'progress', finished: recorder.finished }), 500).unref();

  let stopping: Promise<void> | undefined;
  const stop = (code: number): Promise<void> =>
    (stopping ??= running
      .close()
      .catch(() => {})
      .finally(() => process.exit(code)));
  process.on('message', (message: ParentMessage) => {
    if (message.t === 'arm') recorder.arm(message.count);
    else if (message.t === 'flush') recorder.flush();
    else if (message.t === 'stop') void stop(0);
    else if (message.t === 'info') {
      if (message.gc) (globalThis as { gc?: () => void }).gc?.();
      const registry = running.service?.registry;
      // Read without depending on it at compile time: the budget is new in the registry.
      const budget = (registry as { processMaxConnections?: unknown } | undefined)?.processMaxConnections;
      let connectionsOpened = 0;
      let maxTenantConnections = 0;
      let minTenantCeiling = Number.POSITIVE_INFINITY;
      const connectionsClosed: Record<string, number> = {};
      for (const st of registry?.stats() ?? []) {
        connectionsOpened += st.connections_opened_total;
        maxTenantConnections = Math.max(maxTenantConnections, st.size + st.opening);
        minTenantCeiling = Math.min(minTenantCeiling, st.max);
        for (const [reason, n] of Object.entries(st.connections_closed_total)) connectionsClosed[reason] = (connectionsClosed[reason] ?? 0) + n;
      }
      send({
        t: 'info',
        connectionsOpened,
        connectionsClosed,
        rssBytes: process.memoryUsage.rss(),
        heapUsedBytes: process.memoryUsage().heapUsed,
        pools: registry?.size ?? 0,
        connections: registry?.connections() ?? 0,
        budget: typeof budget === 'number' && Number.isFinite(budget) ? budget : undefined,
        maxTenantConnections,
        tenantCeiling: Number.isFinite(minTenantCeiling) ? minTenantCeiling : undefined,
      });
    }
  });
  // The parent is gone (crash, Ctrl-C): do not outlive it.
  process.on('disconnect', () => void stop(1));
  process.on('SIGINT', () => void stop(130));
  process.on('SIGTERM', () => void stop(143));
  send({ t: 'ready' });
}

main().catch((err: unknown) => {
  send({ t: 'fatal', message: (err as Error)?.stack ?? String(err) });
  setTimeout(() => process.exit(1), 100);
});

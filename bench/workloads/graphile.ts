/**
 * The `graphile-16` variant of the local workload: the same lens jobs through graphile-worker
 * (jobs in Postgres, LISTEN/NOTIFY, concurrency 16), the Postgres-backed alternative to a Redis
 * queue. Drain only: the queue is pre-filled while the runner is stopped, then the runner starts
 * and the clock runs until the last job finishes. CPU per job is the runner process plus
 * Postgres, which here also does the queue's work (Redis is idle and still counted, as for the
 * other variants).
 */
import { fork, type ChildProcess } from 'node:child_process';
import pg from 'pg';
import { makeWorkerUtils, Logger } from 'graphile-worker';
import type { GraphileMessage, GraphileRequest } from '../graphile-child.js';
import { benchScript } from '../lib/code.js';
import type { BenchEnv } from '../lib/env.js';
import { jobMaker, type DrainResult } from '../lib/jobs.js';
import type { Plan } from '../lib/plan.js';
import { cpuPerJob, sampleCpu } from '../lib/procstat.js';
import type { Progress } from '../lib/progress.js';

const QUEUE_DATABASE = 'bench_graphile_queue';

/** graphile-worker's throughput settings (worker.graphile.org/docs/performance#batching). */
export interface GraphileSettings {
  readonly concurrency: number;
  /** `localQueue.size`: jobs fetched and locked per query (-1: off, each job fetched alone). */
  readonly localQueueSize: number;
  /** `completeJobBatchDelay` and `failJobBatchDelay`, ms (-1: off, each completion its own statement). */
  readonly batchDelayMs: number;
  /** The task runs its lens SQL as a named (prepared) statement, as lensfleet does. */
  readonly named: boolean;
}

export interface GraphileOptions {
  readonly env: BenchEnv;
  readonly plan: Plan;
  readonly progress: Progress;
  readonly tenant: { readonly id: string; readonly url: string };
  readonly settings: GraphileSettings;
  /** Job payloads (the workload's job data); default: the maritime lens mix. */
  readonly make?: (i: number) => unknown;
  /** Lens modules the child loads (none: the built-in lenses). */
  readonly childEnv?: Record<string, string>;
}

/** A fresh queue database with graphile-worker's schema; returns its URL. */
async function freshQueueDatabase(env: BenchEnv): Promise<string> {
  await env.admin(`DROP DATABASE IF EXISTS ${QUEUE_DATABASE} WITH (FORCE)`);
  await env.admin(`CREATE DATABASE ${QUEUE_DATABASE}`);
  const url = env.postgres.adminUrl(QUEUE_DATABASE);
  const utils = await makeWorkerUtils({ connectionString: url, logger: new Logger(() => () => {}) });
  try {
    await utils.migrate();
  } finally {
    await utils.release();
  }
  return url;
}

/** The runner child, with one request/answer at a time and bounded waits. */
class GraphileChild {
  readonly #child: ChildProcess;
  readonly #exited: Promise<number | null>;
  #finished = 0;
  #waiter: { want: GraphileMessage['t']; resolve: (m: GraphileMessage) => void; reject: (e: Error) => void } | undefined;

  constructor(env: Record<string, string>) {
    this.#child = fork(benchScript('graphile-child.js'), [], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.#exited = new Promise((resolve) => this.#child.once('exit', (code) => resolve(code)));
    void this.#exited.then((code) => this.#fail(new Error(`graphile-worker child exited with code ${code}`)));
    this.#child.on('error', (err) => this.#fail(err));
    this.#child.on('message', (m: GraphileMessage) => {
      if (m.t === 'progress') this.#finished = m.finished;
      const w = this.#waiter;
      if (w !== undefined && w.want === m.t) {
        this.#waiter = undefined;
        w.resolve(m);
      }
    });
  }

  get pid(): number {
    return this.#child.pid ?? 0;
  }

  get finished(): number {
    return this.#finished;
  }

  #fail(err: Error): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.reject(err);
  }

  /** Wait for the next message of type `want` (after sending `request`), at most `timeoutMs`; undefined on timeout. */
  async next(want: GraphileMessage['t'], timeoutMs: number, request?: GraphileRequest): Promise<GraphileMessage | undefined> {
    let timer: NodeJS.Timeout | undefined;
    const answer = new Promise<GraphileMessage>((resolve, reject) => {
      this.#waiter = { want, resolve, reject };
    });
    if (request !== undefined) this.#child.send(request);
    const timeout = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), timeoutMs)));
    try {
      return await Promise.race([answer, timeout]);
    } finally {
      clearTimeout(timer);
      this.#waiter = undefined;
    }
  }

  async must(want: GraphileMessage['t'], timeoutMs: number, request?: GraphileRequest): Promise<GraphileMessage> {
    const m = await this.next(want, timeoutMs, request);
    if (m === undefined) throw new Error(`graphile-worker child: no "${want}" within ${timeoutMs} ms`);
    return m;
  }

  send(request: GraphileRequest): void {
    this.#child.send(request);
  }

  async stop(): Promise<void> {
    if (this.#child.connected) this.#child.send({ t: 'stop' } satisfies GraphileRequest);
    const timer = setTimeout(() => this.#child.kill('SIGKILL'), 10_000);
    await this.#exited;
    clearTimeout(timer);
  }
}

/** Add `count` lens jobs (the benchmark's job mix) to graphile-worker's queue, 1,000 per `add_jobs` call. */
async function addJobs(client: pg.Client, make: (i: number) => unknown, from: number, count: number, progress?: (done: number) => void): Promise<void> {
  for (let i = 0; i < count; i += 1000) {
    const payloads = Array.from({ length: Math.min(1000, count - i) }, (_, k) => make(from + i + k));
    await client.query(
      `SELECT count(*) FROM graphile_worker.add_jobs(ARRAY(
         SELECT ROW('lens', p, NULL, NULL, NULL, NULL, NULL, NULL)::graphile_worker.job_spec FROM json_array_elements($1::json) AS p))`,
      [JSON.stringify(payloads)],
    );
    progress?.(Math.min(count, i + 1000));
  }
}

export async function runGraphileDrain(opts: GraphileOptions): Promise<DrainResult> {
  const { env, plan, progress, tenant, settings } = opts;
  progress.update('queue database');
  const queueUrl = await freshQueueDatabase(env);
  const db = new pg.Client({ connectionString: queueUrl });
  await db.connect();
  const child = new GraphileChild({
    GRAPHILE_URL: queueUrl,
    [`${tenant.id}_DATABASE_URL`]: tenant.url,
    LENSFLEET_CONCURRENCY: String(settings.concurrency),
    GRAPHILE_LOCAL_QUEUE_SIZE: String(settings.localQueueSize),
    GRAPHILE_BATCH_DELAY_MS: String(settings.batchDelayMs),
    GRAPHILE_NAMED: settings.named ? '1' : '0',
    ...opts.childEnv,
  });
  const make = opts.make ?? jobMaker([tenant.id]);
  try {
    progress.update('starting runner');
    await child.must('ready', 60_000);
    await child.must('started', 60_000, { t: 'start' });
    // Warm-up with the runner going, as the other variants are warmed up.
    progress.update('warm-up');
    child.send({ t: 'arm', count: plan.local.warmUpJobs });
    const warmed = child.next('done', 60_000);
    await addJobs(db, make, 0, plan.local.warmUpJobs);
    if ((await warmed) === undefined) throw new Error('graphile-worker: warm-up did not finish within 60 s');
    await child.must('paused', 30_000, { t: 'pause' });

    const jobs = plan.local.drainJobs;
    await addJobs(db, make, plan.local.warmUpJobs, jobs, (n) => progress.update(`pre-filling ${n}/${jobs}`));
    child.send({ t: 'arm', count: jobs });
    const cpu = { workerPid: child.pid, redisPid: env.redisPid, postmasterPid: env.postmasterPid };
    const cpu0 = sampleCpu(cpu);
    const t0 = Date.now();
    const ticker = setInterval(() => progress.update(`draining ${child.finished}/${jobs}`), 500);
    let done: GraphileMessage | undefined;
    try {
      // The runner answers 'started' first; this waits for 'done', within the cap. The
      // runner's start-up (its pool, the migration check) is inside the measurement.
      done = await child.next('done', plan.local.drainCapSeconds * 1000, { t: 'start' });
    } finally {
      clearInterval(ticker);
    }
    const cpu1 = sampleCpu(cpu);
    const capped = done === undefined || done.t !== 'done';
    const completed = !capped && done?.t === 'done' ? done.completed : child.finished;
    const failed = !capped && done?.t === 'done' ? done.failed : 0;
    const end = !capped && done?.t === 'done' ? done.lastFinishedOn : Date.now();
    const seconds = Math.max(0.001, (end - t0) / 1000);
    return {
      jobs,
      connectsPer1000: Number.NaN,
      closedByReason: {},
      completed,
      failed,
      capped,
      seconds,
      jobsPerSecond: completed / seconds,
      cpuMsPerJob: cpuPerJob(cpu0, cpu1, completed),
      firstFailure: !capped && done?.t === 'done' ? done.firstFailure : undefined,
    };
  } finally {
    await child.stop();
    await db.end().catch(() => {});
  }
}

/**
 * One measured session: a fresh worker child on a fresh queue, driven by a workload, then
 * stopped and its queue removed, whatever happened.
 */
import type { LensJobData } from '../../queues/contract.js';
import type { BenchEnv } from './env.js';
import { benchQueue, jobMaker, type Driver } from './jobs.js';
import type { Progress } from './progress.js';
import type { WorkerMode } from './protocol.js';
import { WorkerHandle } from './worker-handle.js';

export interface SessionOptions {
  readonly env: BenchEnv;
  readonly mode: WorkerMode;
  readonly label: string;
  readonly queueName: string;
  /** Tenant ids jobs go to (round-robin). */
  readonly tenants: readonly string[];
  /** Worker environment: LENSFLEET_* settings and `<ID>_DATABASE_URL`s. */
  readonly workerEnv: Record<string, string>;
  readonly progress: Progress;
  readonly execArgv?: readonly string[];
  /** The worker child of another build (see WorkerHandleOptions.codeDir). */
  readonly codeDir?: string;
  /** Job data per index; default: the lens mix round-robin over `tenants` (jobMaker). */
  readonly make?: (i: number) => LensJobData;
  /** The PostgREST stand-in the worker's Supabase tenant goes through: its CPU is charged to the jobs. */
  readonly standInPid?: number;
}

export async function withSession<T>(opts: SessionOptions, fn: (d: Driver) => Promise<T>): Promise<T> {
  const queue = benchQueue(opts.env.redis.url, opts.queueName);
  await queue.obliterate({ force: true }).catch(() => {});
  let worker: WorkerHandle | undefined;
  try {
    opts.progress.update('starting worker');
    worker = await WorkerHandle.start({
      mode: opts.mode,
      label: opts.label,
      env: { REDIS_URL: opts.env.redis.url, LENSFLEET_QUEUE: opts.queueName, ...opts.workerEnv },
      ...(opts.execArgv ? { execArgv: opts.execArgv } : {}),
      ...(opts.codeDir ? { codeDir: opts.codeDir } : {}),
    });
    const cpu = {
      workerPid: worker.pid,
      redisPid: opts.env.redisPid,
      postmasterPid: opts.env.postmasterPid,
      ...(opts.standInPid === undefined ? {} : { standInPid: opts.standInPid }),
    };
    return await fn({ queue, worker, make: opts.make ?? jobMaker(opts.tenants), cpu, progress: opts.progress });
  } finally {
    opts.progress.update('stopping worker');
    await worker?.stop();
    await queue.obliterate({ force: true }).catch(() => {});
    await queue.close();
  }
}

/** The environment that points a worker at these tenants. */
export function tenantEnv(urls: Readonly<Record<string, string>>): Record<string, string> {
  const env: Record<string, string> = { LENSFLEET_TENANTS: Object.keys(urls).join(',') };
  for (const [id, url] of Object.entries(urls)) env[`${id}_DATABASE_URL`] = url;
  return env;
}

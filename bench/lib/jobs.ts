/**
 * How a workload drives a worker child: the job mix, a warm-up, an open loop at a fixed arrival
 * rate, a drain of a pre-filled queue, and a sequence of single jobs. Each returns plain numbers;
 * every wait is bounded.
 */
import type { JobsOptions } from 'bullmq';
import type { LensJobData } from '../../queues/contract.js';
import { createLensQueue, toJobData, type LensQueue } from '../../queues/producer.js';
import { cpuPerJob, sampleCpu, type CpuSources } from './procstat.js';
import type { FinishedReport } from './protocol.js';
import { percentile } from './stats.js';
import type { WorkerHandle } from './worker-handle.js';
import type { Progress } from './progress.js';

/** The lens calls jobs cycle through (three lenses; all params explicit, so no defaults apply). */
const LENS_MIX = [
  { lens: 'receiving.recent', params: { limit: 10 } },
  { lens: 'equipment.search', params: { q: 'pump', limit: 10 } },
  { lens: 'work_orders.open', params: { limit: 10 } },
  { lens: 'work_orders.open', params: { priority: 'critical', limit: 5 } },
] as const;

/** Job data for the i-th job over these tenants (round-robin), validated once per shape. */
export function jobMaker(tenants: readonly string[]): (i: number) => LensJobData {
  const cache = new Map<string, LensJobData>();
  return (i) => {
    const tenant = tenants[i % tenants.length]!;
    const mix = LENS_MIX[Math.floor(i / tenants.length) % LENS_MIX.length]!;
    const key = `${tenant}\u0000${i % LENS_MIX.length}`;
    let data = cache.get(key);
    if (data === undefined) {
      data = toJobData({ tenant, lens: mix.lens, params: { ...mix.params } });
      cache.set(key, data);
    }
    return data;
  };
}

/**
 * Job data for the primary-key workload: bench.account with an aid in 1..`accounts`, spread
 * pseudo-randomly (a multiplicative hash of the index) so that every variant gets the same sequence.
 */
export function pkJobMaker(tenant: string, accounts: number): (i: number) => LensJobData {
  return (i) => toJobData({ tenant, lens: 'bench.account', params: { aid: 1 + ((Math.imul(i + 1, 2654435761) >>> 0) % accounts) } });
}

/** A fresh queue with the product's default job options, on the benchmark's Redis. */
export function benchQueue(redisUrl: string, name: string): LensQueue {
  return createLensQueue({ connection: { url: redisUrl }, name });
}

async function addJobs(queue: LensQueue, make: (i: number) => LensJobData, from: number, count: number, opts?: JobsOptions): Promise<void> {
  const batch = Array.from({ length: count }, (_, k) => {
    const data = make(from + k);
    return opts ? { name: data.lens, data, opts } : { name: data.lens, data };
  });
  await queue.addBulk(batch);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Wait for an armed report, at most `timeoutMs`; on timeout ask for what finished so far. */
async function awaitReport(worker: WorkerHandle, done: Promise<FinishedReport>, timeoutMs: number): Promise<{ report: FinishedReport; capped: boolean }> {
  let timer: NodeJS.Timeout | undefined;
  const capped = new Promise<'capped'>((resolve) => {
    timer = setTimeout(() => resolve('capped'), timeoutMs);
  });
  const first = await Promise.race([done, capped]);
  clearTimeout(timer);
  if (first !== 'capped') return { report: first, capped: false };
  worker.flush();
  let flushTimer: NodeJS.Timeout | undefined;
  const report = await Promise.race([
    done,
    new Promise<never>((_, reject) => {
      flushTimer = setTimeout(() => reject(new Error(`${worker.label}: no report after flush`)), 10_000);
    }),
  ]);
  clearTimeout(flushTimer);
  return { report, capped: true };
}

export interface Driver {
  readonly queue: LensQueue;
  readonly worker: WorkerHandle;
  readonly make: (i: number) => LensJobData;
  readonly cpu: CpuSources;
  readonly progress: Progress;
}

/** Run `count` jobs through the worker, unmeasured (JIT, connections, prepared statements). */
export async function warmUp(d: Driver, count: number, timeoutMs = 60_000): Promise<void> {
  const done = d.worker.arm(count);
  for (let i = 0; i < count; i += 500) await addJobs(d.queue, d.make, i, Math.min(500, count - i));
  const { report, capped } = await awaitReport(d.worker, done, timeoutMs);
  if (capped) throw new Error(`${d.worker.label}: warm-up of ${count} jobs did not finish within ${timeoutMs} ms (${report.completed} done)`);
  if (report.failed > 0) throw new Error(`${d.worker.label}: warm-up jobs failed: ${report.firstFailure}`);
}

export interface DrainResult {
  readonly jobs: number;
  /** lensfleet workers: connections the pools opened per 1,000 completed jobs (NaN otherwise). */
  readonly connectsPer1000: number;
  /** lensfleet workers: connections closed during the drain, by reason. */
  readonly closedByReason: Readonly<Record<string, number>>;
  readonly completed: number;
  readonly failed: number;
  readonly capped: boolean;
  readonly seconds: number;
  readonly jobsPerSecond: number;
  readonly cpuMsPerJob: { worker: number; redis: number; postgres: number; standIn: number; total: number; producer: number };
  readonly firstFailure: string | undefined;
}

/**
 * Pre-fill the (paused) queue with `jobs` jobs, then resume it and time the worker until all
 * are finished, or for at most `capSeconds` (slow variants). The producer's work happens before
 * the clock and the CPU counters start.
 */
export async function drain(d: Driver, jobs: number, capSeconds: number): Promise<DrainResult> {
  await d.queue.pause();
  const poolsBefore = await d.worker.info(false);
  for (let i = 0; i < jobs; i += 1000) {
    await addJobs(d.queue, d.make, i, Math.min(1000, jobs - i));
    d.progress.update(`pre-filling ${Math.min(jobs, i + 1000)}/${jobs}`);
  }
  const done = d.worker.arm(jobs);
  const cpu0 = sampleCpu(d.cpu);
  const t0 = Date.now();
  await d.queue.resume();
  const ticker = setInterval(() => d.progress.update(`draining ${d.worker.finished}/${jobs}`), 500);
  try {
    const { report, capped } = await awaitReport(d.worker, done, capSeconds * 1000);
    const cpu1 = sampleCpu(d.cpu);
    const end = capped ? Date.now() : report.lastFinishedOn;
    const seconds = Math.max(0.001, (end - t0) / 1000);
    const poolsAfter = await d.worker.info(false);
    const opened = poolsAfter.connectionsOpened - poolsBefore.connectionsOpened;
    const closedByReason = Object.fromEntries(
      Object.entries(poolsAfter.connectionsClosed)
        .map(([k, n]) => [k, n - (poolsBefore.connectionsClosed[k] ?? 0)] as const)
        .filter(([, n]) => n > 0),
    );
    return {
      jobs,
      connectsPer1000: d.worker.mode === 'lensfleet' ? (opened * 1000) / Math.max(1, report.completed) : Number.NaN,
      closedByReason,
      completed: report.completed,
      failed: report.failed,
      capped,
      seconds,
      jobsPerSecond: report.completed / seconds,
      cpuMsPerJob: cpuPerJob(cpu0, cpu1, report.completed),
      firstFailure: report.firstFailure,
    };
  } finally {
    clearInterval(ticker);
    // A capped drain leaves jobs behind: stop the worker taking them.
    await d.queue.pause();
  }
}

export interface OpenLoopResult {
  readonly ratePerSecond: number;
  readonly seconds: number;
  readonly sent: number;
  readonly completed: number;
  readonly failed: number;
  /** Jobs finished per second while arriving (below the rate = the worker fell behind). */
  readonly achievedPerSecond: number;
  readonly e2eP50Ms: number;
  readonly e2eP99Ms: number;
  readonly serviceP50Ms: number;
  readonly serviceP99Ms: number;
  /** The worker's own pauses during the run (bench/worker-child.ts). */
  readonly loopDelayP99Ms: number;
  readonly loopDelayMaxMs: number;
  readonly gcMaxMs: number;
  readonly gcTotalMs: number;
  readonly cpuMsPerJob: { worker: number; redis: number; postgres: number; standIn: number; total: number; producer: number };
  readonly capped: boolean;
}

/**
 * Jobs arrive at a fixed rate for `seconds` (added every ~2 ms in small batches, so job.timestamp
 * is the arrival time); end-to-end latency is finishedOn − timestamp of each job.
 */
export async function openLoop(d: Driver, ratePerSecond: number, seconds: number, graceSeconds = 20): Promise<OpenLoopResult> {
  const total = Math.round(ratePerSecond * seconds);
  await d.queue.resume();
  const done = d.worker.arm(total);
  const cpu0 = sampleCpu(d.cpu);
  const t0 = performance.now();
  let sent = 0;
  let lastShown = 0;
  while (sent < total) {
    const due = Math.min(total, Math.floor(((performance.now() - t0) / 1000) * ratePerSecond));
    if (due > sent) {
      const n = due - sent;
      await addJobs(d.queue, d.make, sent, n);
      sent += n;
    } else {
      await sleep(2);
    }
    if (performance.now() - lastShown > 500) {
      lastShown = performance.now();
      d.progress.update(`open loop ${ratePerSecond}/s: sent ${sent}/${total}, finished ${d.worker.finished}`);
    }
  }
  const sendSeconds = (performance.now() - t0) / 1000;
  const { report, capped } = await awaitReport(d.worker, done, graceSeconds * 1000);
  const cpu1 = sampleCpu(d.cpu);
  const wall = Math.max(sendSeconds, (performance.now() - t0) / 1000);
  if (capped) {
    // The worker fell behind: drop the backlog so it does not leak into the next measurement.
    d.progress.update(`open loop ${ratePerSecond}/s: dropping the backlog`);
    await d.queue.pause();
    await d.queue.drain(true);
    await sleep(1000);
    await d.queue.resume();
  }
  return {
    ratePerSecond,
    seconds,
    sent,
    completed: report.completed,
    failed: report.failed,
    achievedPerSecond: report.completed / wall,
    e2eP50Ms: percentile(report.e2eMs, 50),
    e2eP99Ms: percentile(report.e2eMs, 99),
    serviceP50Ms: percentile(report.serviceMs, 50),
    serviceP99Ms: percentile(report.serviceMs, 99),
    loopDelayP99Ms: report.loopDelayP99Ms,
    loopDelayMaxMs: report.loopDelayMaxMs,
    gcMaxMs: report.gcMaxMs,
    gcTotalMs: report.gcTotalMs,
    cpuMsPerJob: cpuPerJob(cpu0, cpu1, report.completed),
    capped,
  };
}

/** `count` jobs one after another (each waits for the previous); service time of each, ms. */
export async function sequence(d: Driver, count: number, timeoutMs = 30_000): Promise<number[]> {
  await d.queue.resume();
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    const done = d.worker.arm(1);
    await addJobs(d.queue, d.make, i, 1);
    const { report, capped } = await awaitReport(d.worker, done, timeoutMs);
    if (capped || report.completed !== 1) throw new Error(`${d.worker.label}: single job ${i + 1} did not complete: ${report.firstFailure ?? 'timeout'}`);
    times.push(report.serviceMs[0]!);
  }
  return times;
}

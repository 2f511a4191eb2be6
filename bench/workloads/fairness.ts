/**
 * Workload — noisy neighbour (issue 13 §4): tenant A floods slow jobs (`bench.sleep`, 20 ms, into a
 * pool of max 4 on a worker of concurrency 16) while tenant B sends quick ones spread over the
 * flood. B's latency (enqueue → finished) is measured five times, each on a fresh worker child:
 *
 * - `B alone`: B's jobs at the same times, no flood (the reference);
 * - `deferral on`: A's flood arrives at 2× what its pool drains; a job whose tenant's pool
 *   cannot serve it now goes back to the queue (LENSFLEET_DEFER_WHEN_BUSY=on, the default), so
 *   A's flood holds few worker slots;
 * - `deferral off`: the same flood; every job waits for its connection in its slot, A's backlog
 *   fills every slot and B's jobs wait behind it;
 * - `on5`, `burst`: deferral on, A's flood arriving at 5× its pool's rate, or added at once
 *   before B's first job (see `Mode`).
 *
 * Target: B's p99 with A's flood (deferral on) within 2× of B alone. Also reported: A's drain
 * (its cost: deferred jobs come back later than a waiting job would get its connection), and
 * failed jobs (none expected: a deferral uses no attempt).
 */
import type { LensJobData } from '../../queues/contract.js';
import { toJobData } from '../../queues/producer.js';
import { benchScript } from '../lib/code.js';
import type { BenchEnv } from '../lib/env.js';
import type { Driver } from '../lib/jobs.js';
import type { Plan } from '../lib/plan.js';
import type { Progress } from '../lib/progress.js';
import type { FinishedReport } from '../lib/protocol.js';
import { num, type TargetResult, type WorkloadReport } from '../lib/report.js';
import { tenantEnv, withSession } from '../lib/session.js';
import { percentile } from '../lib/stats.js';

export interface FairnessOptions {
  readonly env: BenchEnv;
  readonly plan: Plan;
  readonly progress: Progress;
  /** A's and B's databases. */
  readonly a: { readonly id: string; readonly url: string };
  readonly b: { readonly id: string; readonly url: string };
}

const CONCURRENCY = 16;
const A_POOL_MAX = 4;
const A_SECONDS = 0.02;

/**
 * `alone`: B only. `on`/`off`: A's flood arrives at 2× what its pool can drain (the producer adds
 * batches of 50), deferral on or off. `on5`: at 5×, deferral on. `burst`: deferral on, A's whole
 * flood added at once before B's first job. B's jobs wait behind those of A's jobs that are in the
 * queue ahead of them: BullMQ takes jobs in order, and putting one back costs two Redis round
 * trips, so deferral keeps B quick only while the workers put A's jobs back faster than A adds
 * them (and they come back).
 */
type Mode = 'alone' | 'on' | 'off' | 'on5' | 'burst' | 'burstNoPark';
/** A's arrival rate in the paced runs, as a multiple of its pool's rate. */
const ARRIVAL_FACTOR: Record<Mode, number> = { alone: 0, on: 2, off: 2, on5: 5, burst: Number.POSITIVE_INFINITY, burstNoPark: Number.POSITIVE_INFINITY };
const isBurst = (mode: Mode): boolean => mode === 'burst' || mode === 'burstNoPark';

interface ModeResult {
  readonly mode: Mode;
  readonly bLatencies: number[];
  readonly aDrainSeconds: number;
  readonly completed: number;
  readonly failed: number;
  readonly firstFailure: string | undefined;
  readonly capped: boolean;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function runFairness(opts: FairnessOptions): Promise<WorkloadReport> {
  const { plan } = opts;
  const f = plan.fairness;
  // B's jobs are spread over most of the time A's flood needs at best (its pool's rate).
  const floodMs = (f.aJobs * A_SECONDS * 1000) / A_POOL_MAX;
  const spreadMs = floodMs * 0.8;
  const results: ModeResult[] = [];
  for (const mode of ['alone', 'on', 'off', 'on5', 'burst', 'burstNoPark'] as const) {
    opts.progress.phase(`fairness: ${mode}`);
    results.push(await runMode(opts, mode, spreadMs, floodMs));
  }
  const [alone, on, off, on5, burst, burstNoPark] = results as [ModeResult, ModeResult, ModeResult, ModeResult, ModeResult, ModeResult];
  const p99 = (r: ModeResult) => percentile(r.bLatencies, 99);
  const p50 = (r: ModeResult) => percentile(r.bLatencies, 50);
  const ratio = (r: ModeResult) => p99(r) / Math.max(1, p99(alone));
  const label: Record<Mode, string> = {
    alone: 'B alone',
    on: `B with A's flood (${ARRIVAL_FACTOR.on}× its pool's rate), deferral on`,
    off: `B with A's flood (${ARRIVAL_FACTOR.off}× its pool's rate), deferral off (LENSFLEET_DEFER_WHEN_BUSY=off)`,
    on5: `B with A's flood (${ARRIVAL_FACTOR.on5}× its pool's rate), deferral on`,
    burst: "B with A's flood added at once, deferral on (parking on)",
    burstNoPark: "B with A's flood added at once, deferral on, parking off (LENSFLEET_DEFER_PARK=off)",
  };
  const targets: TargetResult[] = [
    {
      target: `noisy neighbour: B's p99 with A's flood (deferral on) ≤ 2× B alone`,
      measured: `${num(p99(on))} ms vs ${num(p99(alone))} ms = ${num(ratio(on), 2)}× (deferral off: ${num(p99(off))} ms = ${num(ratio(off), 1)}×)`,
      met: ratio(on) <= 2 && !on.capped,
    },
    {
      target: `noisy neighbour, A's flood at ${ARRIVAL_FACTOR.on5}× its pool's rate: B's p99 ≤ 2× B alone (deferral on)`,
      measured: `${num(p99(on5))} ms vs ${num(p99(alone))} ms = ${num(ratio(on5), 2)}×; B's p50 ${num(p50(on5))} ms`,
      met: ratio(on5) <= 2 && !on5.capped,
      note: "B's jobs wait behind A's jobs the workers have not yet put back",
    },
    {
      target: `noisy neighbour, A's flood added at once before B's first job: B's p99 ≤ 2× B alone (deferral on)`,
      measured: `${num(p99(burst))} ms vs ${num(p99(alone))} ms = ${num(ratio(burst), 2)}×; B's p50 ${num(p50(burst))} ms (parking off: ${num(p99(burstNoPark))} ms = ${num(ratio(burstNoPark), 1)}×)`,
      met: ratio(burst) <= 2 && !burst.capped,
      note: "without parking, B's first jobs wait until every A job ahead of them in the queue has been taken and put back",
    },
    {
      target: 'noisy neighbour: no job failed (a deferral uses no attempt)',
      measured: results.map((r) => `${label[r.mode]}: ${r.failed}`).join('; '),
      met: results.every((r) => r.failed === 0 && !r.capped),
    },
  ];
  return {
    name: 'fairness',
    title: `Noisy neighbour: ${f.aJobs.toLocaleString('en-US')} slow jobs of tenant A (${A_SECONDS * 1000} ms, pool max ${A_POOL_MAX}) and ${f.bJobs} quick jobs of tenant B over ${num(spreadMs / 1000, 1)} s, concurrency ${CONCURRENCY}`,
    tables: [
      {
        title: "B's latency (enqueue → finished) and A's drain, each on a fresh worker",
        headers: ['run', 'B p50 ms', 'B p99 ms', 'B max ms', 'B p99 ÷ B alone', 'A drain s', 'completed', 'failed'],
        rows: results.map((r) => [
          label[r.mode],
          num(p50(r)),
          num(p99(r)),
          num(Math.max(...r.bLatencies)),
          r.mode === 'alone' ? '–' : `${num(ratio(r), 2)}×`,
          r.mode === 'alone' ? '–' : num(r.aDrainSeconds, 1),
          num(r.completed),
          num(r.failed),
        ]),
      },
    ],
    targets,
    notes: [
      `A's drain with deferral is its cost: a deferred job comes back at its scheduled time, not the moment a connection frees (half the pool's max may wait in slots to keep the pool busy). First failure: ${results.find((r) => r.firstFailure)?.firstFailure ?? 'none'}.`,
    ],
    raw: results.map((r) => ({ ...r, bP50: p50(r), bP99: p99(r) })),
  };
}

async function runMode(opts: FairnessOptions, mode: Mode, spreadMs: number, floodMs: number): Promise<ModeResult> {
  const { plan, a, b } = opts;
  const f = plan.fairness;
  const workerEnv = {
    ...tenantEnv({ [a.id]: a.url, [b.id]: b.url }),
    LENSFLEET_CONCURRENCY: String(CONCURRENCY),
    LENSFLEET_POOL_MAX_SIZE: String(A_POOL_MAX),
    LENSFLEET_POOL_MAX_OVERFLOW: '0',
    LENSFLEET_POOL_MIN_SIZE: '1',
    // Without deferral A's jobs wait in their slots: far longer than the default 10 s.
    LENSFLEET_POOL_ACQUIRE_TIMEOUT_MS: '120000',
    LENSFLEET_DEFER_WHEN_BUSY: mode === 'off' ? 'off' : 'on',
    LENSFLEET_DEFER_PARK: mode === 'burstNoPark' ? 'off' : 'on',
    LENSFLEET_LENS_MODULES: benchScript('lib/slow-lens.js'),
    LOG_LEVEL: 'warn',
  };
  const aData: LensJobData = toJobData({ tenant: a.id, lens: 'bench.sleep', params: { seconds: A_SECONDS } });
  const bData: LensJobData = toJobData({ tenant: b.id, lens: 'work_orders.open', params: { limit: 10 } });
  return withSession(
    { env: opts.env, mode: 'lensfleet', label: `fairness-${mode}`, queueName: `bench-fair-${mode}`, tenants: [a.id, b.id], workerEnv, progress: opts.progress },
    async (d: Driver) => {
      const once = { attempts: 1 };
      // Both pools warm first (their first connections are not the point).
      const warm = d.worker.arm(20);
      await d.queue.addBulk(Array.from({ length: 20 }, (_, i) => ({ name: 'warm', data: i % 2 ? aData : bData, opts: once })));
      await warm;
      const total = (mode === 'alone' ? 0 : f.aJobs) + f.bJobs;
      const done = d.worker.arm(total);
      const t0 = Date.now();
      /** Wait until `at` (ms after t0): on a schedule, whatever the adds cost. */
      const until = async (at: number, from = t0) => {
        const wait = from + at - Date.now();
        if (wait > 0) await sleep(wait);
      };
      const addA = (n: number) => d.queue.addBulk(Array.from({ length: n }, () => ({ name: aData.lens, data: aData, opts: once })));
      const flood = (async () => {
        if (mode === 'alone') return;
        if (isBurst(mode)) {
          for (let i = 0; i < f.aJobs; i += 1000) await addA(Math.min(1000, f.aJobs - i));
          return;
        }
        const batch = 50;
        const arrivalMs = floodMs / ARRIVAL_FACTOR[mode];
        for (let i = 0; i < f.aJobs; i += batch) {
          await until((i * arrivalMs) / f.aJobs);
          await addA(Math.min(batch, f.aJobs - i));
        }
      })();
      // In the burst run, B's first job comes after the whole flood is in the queue, and B's jobs
      // then come at the pace they come alone (not all those due while A's were added at once: B's
      // own burst would be more than B's pool takes, and B's jobs would wait for B).
      if (isBurst(mode)) await flood;
      const bStart = Date.now();
      const bIds: string[] = [];
      for (let i = 0; i < f.bJobs; i++) {
        await until((i * spreadMs) / f.bJobs, bStart);
        const job = await d.queue.add(bData.lens, bData, once);
        bIds.push(job.id!);
        d.progress.update(`B ${i + 1}/${f.bJobs}, finished ${d.worker.finished}/${total}`);
      }
      await flood;
      const ticker = setInterval(() => d.progress.update(`finished ${d.worker.finished}/${total}`), 500);
      let capped = false;
      let report: FinishedReport;
      try {
        const timer = new Promise<'capped'>((r) => setTimeout(() => r('capped'), f.capSeconds * 1000).unref());
        const first = await Promise.race([done, timer]);
        if (first === 'capped') {
          capped = true;
          d.worker.flush();
          report = await done;
        } else report = first;
      } finally {
        clearInterval(ticker);
      }
      const bJobs = await Promise.all(bIds.map((id) => d.queue.getJob(id)));
      const bLatencies = bJobs.filter((j) => j?.finishedOn !== undefined).map((j) => j!.finishedOn! - j!.timestamp);
      return {
        mode,
        bLatencies,
        aDrainSeconds: mode === 'alone' ? Number.NaN : (report.lastFinishedOn - t0) / 1000,
        completed: report.completed,
        failed: report.failed,
        firstFailure: report.firstFailure,
        capped,
      };
    },
  );
}

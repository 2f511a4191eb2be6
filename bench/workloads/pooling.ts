/**
 * Workloads 3 and 4 — pooled vs pooling off (the guide's rollback plan: a fresh connection per
 * job), on loopback and on a "remote" database (through the delay proxy, with TLS). lensfleet at
 * concurrency 16 in both variants. Each session, on a fresh worker:
 * 1. single jobs one after another: the first pays for the pool (or, pooling off, every one
 *    pays for its connection) — the shape of the guide's table, with real figures;
 * 2. an open loop at a low rate (pooling off is CPU-bound on connection set-up);
 * 3. a drain of a pre-filled queue, capped in time (pooling off is slow by design).
 */
import type { BenchEnv } from '../lib/env.js';
import { drain, openLoop, sequence, warmUp, type DrainResult, type OpenLoopResult } from '../lib/jobs.js';
import type { Plan } from '../lib/plan.js';
import type { Progress } from '../lib/progress.js';
import { interleaved, med, num, ratios, ratioTarget, type TargetResult, type WorkloadReport } from '../lib/report.js';
import { tenantEnv, withSession } from '../lib/session.js';
import { summarize } from '../lib/stats.js';

type Variant = 'pooled' | 'off';

interface PoolingRun {
  readonly firstJobsMs: number[];
  readonly open: OpenLoopResult;
  readonly drain: DrainResult;
}

export interface PoolingOptions {
  readonly env: BenchEnv;
  readonly plan: Plan;
  readonly progress: Progress;
  readonly where: 'local' | 'remote';
  /** Short description of the path to the database, for the report. */
  readonly path: string;
  readonly tenant: { readonly id: string; readonly url: string };
}

export async function runPooling(opts: PoolingOptions): Promise<WorkloadReport> {
  const { plan, env, where } = opts;
  const p = plan.pooling;
  const rate = where === 'remote' ? plan.remote.lowRate : p.lowRate;
  const rateSeconds = where === 'remote' ? plan.remote.lowRateSeconds : p.lowRateSeconds;
  const cap = where === 'remote' ? plan.remote.drainCapSeconds : p.drainCapSeconds;
  let n = 0;
  const runs = await interleaved<Variant, PoolingRun>(['pooled', 'off'], plan.reps, async (variant, rep) => {
    const progress = opts.progress.phase(`${where} pooling ${++n}/${2 * plan.reps} ${variant} rep ${rep + 1}`);
    const result = await withSession(
      {
        env,
        mode: 'lensfleet',
        label: `${where}-${variant}`,
        queueName: `bench-${where}-${variant}-r${rep}`,
        tenants: [opts.tenant.id],
        workerEnv: {
          ...tenantEnv({ [opts.tenant.id]: opts.tenant.url }),
          LENSFLEET_CONCURRENCY: '16',
          LENSFLEET_POOLING: variant === 'pooled' ? 'on' : 'off',
        },
        progress,
      },
      async (d): Promise<PoolingRun> => {
        progress.update('single jobs');
        const firstJobsMs = await sequence(d, p.firstJobs);
        progress.update('warm-up');
        await warmUp(d, variant === 'pooled' ? p.warmUpJobs : Math.ceil(p.warmUpJobs / 4), 120_000);
        const open = await openLoop(d, rate, rateSeconds, 20);
        const drained = await drain(d, p.drainJobs, cap);
        return { firstJobsMs, open, drain: drained };
      },
    );
    progress.line(
      `first job ${result.firstJobsMs[0]} ms, next ${summarize(result.firstJobsMs.slice(1)).median} ms; ` +
        `${rate}/s p50 ${result.open.e2eP50Ms} ms; drain ${Math.round(result.drain.jobsPerSecond)} jobs/s` +
        (result.drain.capped ? ` (capped at ${cap} s, ${result.drain.completed} jobs)` : ''),
    );
    return result;
  });

  const pick = (v: Variant, f: (r: PoolingRun) => number): number[] => runs[v].map(f);
  const throughput = ratios(
    pick('pooled', (r) => r.drain.jobsPerSecond),
    pick('off', (r) => r.drain.jobsPerSecond),
  );
  // Job latency = service time of single jobs run one after another (no queueing), as in the
  // guide's table; the first job (pool creation) is left out.
  const nextJobs = (r: PoolingRun) => summarize(r.firstJobsMs.slice(1)).median;
  const p50Reduction = ratios(pick('pooled', nextJobs), pick('off', nextJobs)).map((x) => 1 - x);
  const rows = (['pooled', 'off'] as const).map((v) => [
    v === 'pooled' ? 'pooled' : 'pooling off',
    med(pick(v, (r) => r.firstJobsMs[0]!)),
    med(pick(v, nextJobs)),
    med(pick(v, (r) => r.open.e2eP50Ms)),
    med(pick(v, (r) => r.open.e2eP99Ms)),
    med(pick(v, (r) => r.open.serviceP50Ms)),
    med(pick(v, (r) => r.drain.jobsPerSecond)),
    med(
      pick(v, (r) => r.drain.cpuMsPerJob.total),
      3,
    ),
    med(
      pick(v, (r) => r.drain.cpuMsPerJob.postgres),
      3,
    ),
    med(
      pick(v, (r) => r.drain.connectsPer1000),
      1,
    ),
    String(pick(v, (r) => r.drain.failed + r.open.failed).reduce((a, b) => a + b, 0)),
  ]);
  const reduction = summarize(p50Reduction);
  const targets: TargetResult[] = [
    ratioTarget(`${where}: pooled ≥ 20× pooling-off drain throughput`, throughput, 20, true),
    {
      target: `${where}: pooled p50 job latency (single jobs in sequence) ≥ 90 % lower than pooling off`,
      measured: reduction.n ? `${num(reduction.median * 100)} % lower (${num(reduction.min * 100)}–${num(reduction.max * 100)})` : 'not measured',
      met: reduction.n ? reduction.median >= 0.9 : undefined,
      ...(reduction.n && reduction.median < 0.9 ? { note: `${num((0.9 - reduction.median) * 100)} points short` } : {}),
    },
  ];
  const capped = [...runs.pooled, ...runs.off].some((r) => r.drain.capped);
  return {
    name: `pooling-${where}`,
    title: `Pooled vs pooling off, ${opts.path}`,
    tables: [
      {
        title: `lensfleet, concurrency 16: ${p.firstJobs} single jobs on a fresh worker, open loop at ${rate} jobs/s for ${rateSeconds} s, drain of up to ${p.drainJobs.toLocaleString('en-US')} pre-filled jobs (capped at ${cap} s)`,
        headers: [
          'variant',
          'first job ms',
          'next jobs ms (p50)',
          `e2e p50 ms @${rate}/s`,
          'e2e p99 ms',
          'service p50 ms',
          'drain jobs/s',
          'CPU ms/job',
          'of which Postgres',
          'connections opened per 1k jobs',
          'failed',
        ],
        rows,
      },
      {
        title: 'Ratios, per repetition pair',
        headers: ['pair', 'drain throughput', 'p50 latency reduction'],
        rows: [['pooled ÷ off', med(throughput, 1, '×'), reduction.n ? `${num(reduction.median * 100)} %` : '–']],
      },
    ],
    targets,
    notes: capped ? [`Drains marked capped stop after ${cap} s; their throughput is the jobs completed within the cap divided by the time.`] : [],
    raw: runs,
  };
}

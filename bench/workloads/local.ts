/**
 * Workloads 1 and 2 — the ceiling and lensfleet pooled, interleaved in one loop so that every
 * ratio compares runs made minutes apart on the same machine:
 * - `noop-16`: BullMQ worker whose processor does nothing (the queue's own ceiling);
 * - `baseline-16`/`baseline-64`: hand-written BullMQ worker + bare pg.Pool(max = concurrency);
 * - `lensfleet-16`/`lensfleet-64`: the product, production defaults, pooling on;
 * - `graphile-16`: graphile-worker, a Postgres-backed queue, on the same job (drain only; see
 *   ./graphile.ts).
 * Each session: warm-up, then (BullMQ variants) open loops at fixed arrival rates, then a drain
 * of a pre-filled queue.
 */
import type { BenchEnv } from '../lib/env.js';
import { drain, openLoop, warmUp, type DrainResult, type OpenLoopResult } from '../lib/jobs.js';
import type { Plan } from '../lib/plan.js';
import type { Progress } from '../lib/progress.js';
import type { WorkerMode } from '../lib/protocol.js';
import { runGraphileDrain } from './graphile.js';
import { interleaved, maxTarget, med, ratios, ratioTarget, type TargetResult, type WorkloadReport } from '../lib/report.js';
import { tenantEnv, withSession } from '../lib/session.js';

export type LocalVariant = 'noop-16' | 'baseline-16' | 'lensfleet-16' | 'baseline-64' | 'lensfleet-64' | 'graphile-16';

const MODE: Record<Exclude<LocalVariant, 'graphile-16'>, WorkerMode> = {
  'noop-16': 'noop',
  'baseline-16': 'baseline',
  'lensfleet-16': 'lensfleet',
  'baseline-64': 'baseline',
  'lensfleet-64': 'lensfleet',
};

export interface LocalRun {
  /** One per rate of plan.local.openRates; empty for graphile-16. */
  readonly open: OpenLoopResult[];
  readonly drain: DrainResult;
}

/** The issue's open-loop target is set at this arrival rate. */
const TARGET_RATE = 2500;

/** Every BullMQ variant runs the open loops too (the issue: each workload as a drain and as an open loop); graphile-worker drains only. */
const hasOpenLoop = (v: LocalVariant): boolean => v !== 'graphile-16';

export interface LocalOptions {
  readonly env: BenchEnv;
  readonly plan: Plan;
  readonly progress: Progress;
  readonly tenant: { readonly id: string; readonly url: string };
  readonly variants: readonly LocalVariant[];
  readonly execArgv?: (variant: LocalVariant, rep: number) => readonly string[] | undefined;
}

export async function runLocal(opts: LocalOptions): Promise<WorkloadReport> {
  const { plan, env } = opts;
  const total = opts.variants.length * plan.reps;
  let n = 0;
  const runs = await interleaved(opts.variants, plan.reps, async (variant, rep) => {
    const progress = opts.progress.phase(`local ${++n}/${total} ${variant} rep ${rep + 1}`);
    const concurrency = variant.endsWith('-64') ? 64 : 16;
    const execArgv = opts.execArgv?.(variant, rep);
    const result =
      variant === 'graphile-16'
        ? { open: [], drain: await runGraphileDrain({ env, plan, progress, tenant: opts.tenant }) }
        : await withSession(
            {
              env,
              mode: MODE[variant as Exclude<LocalVariant, 'graphile-16'>],
              label: variant,
              queueName: `bench-local-${variant}-r${rep}`,
              tenants: [opts.tenant.id],
              workerEnv: { ...tenantEnv({ [opts.tenant.id]: opts.tenant.url }), LENSFLEET_CONCURRENCY: String(concurrency) },
              progress,
              ...(execArgv ? { execArgv } : {}),
            },
            async (d): Promise<LocalRun> => {
              progress.update('warm-up');
              await warmUp(d, plan.local.warmUpJobs);
              const open: OpenLoopResult[] = [];
              if (hasOpenLoop(variant))
                for (const rate of plan.local.openRates) open.push(await openLoop(d, rate, plan.local.openSeconds, plan.local.openGraceSeconds));
              const drained = await drain(d, plan.local.drainJobs, plan.local.drainCapSeconds);
              return { open, drain: drained };
            },
          );
    const failed = result.drain.failed + result.open.reduce((a, o) => a + o.failed, 0);
    progress.line(
      `drain ${Math.round(result.drain.jobsPerSecond)} jobs/s${result.drain.capped ? ` (capped, ${result.drain.completed} jobs)` : ''}, ` +
        `${result.drain.cpuMsPerJob.total.toFixed(3)} CPU ms/job` +
        (Number.isFinite(result.drain.connectsPer1000)
          ? `, ${result.drain.connectsPer1000.toFixed(1)} connects/1k jobs ${JSON.stringify(result.drain.closedByReason)}`
          : '') +
        result.open.map((o) => `; ${o.ratePerSecond}/s: p50 ${o.e2eP50Ms} ms p99 ${o.e2eP99Ms} ms`).join('') +
        (failed > 0 ? `; ${failed} failed attempts (${result.drain.firstFailure ?? ''})` : ''),
    );
    return result;
  });
  return report(opts, runs);
}

function report(opts: LocalOptions, runs: Record<LocalVariant, LocalRun[]>): WorkloadReport {
  const { plan } = opts;
  const pick = (v: LocalVariant, f: (r: LocalRun) => number): number[] => (runs[v] ?? []).map(f);
  const tput = (v: LocalVariant) => pick(v, (r) => r.drain.jobsPerSecond);
  const cpu = (v: LocalVariant) => pick(v, (r) => r.drain.cpuMsPerJob.total);
  const has = (v: LocalVariant) => opts.variants.includes(v);
  const rows = opts.variants.map((v) => [
    v,
    med(tput(v)),
    med(
      pick(v, (r) => r.drain.cpuMsPerJob.total),
      3,
    ),
    med(
      pick(v, (r) => r.drain.cpuMsPerJob.worker),
      3,
    ),
    med(
      pick(v, (r) => r.drain.cpuMsPerJob.redis),
      3,
    ),
    med(
      pick(v, (r) => r.drain.cpuMsPerJob.postgres),
      3,
    ),
    v.startsWith('lensfleet')
      ? med(
          pick(v, (r) => r.drain.connectsPer1000),
          1,
        )
      : 'n/a',
    String(pick(v, (r) => r.drain.failed).reduce((a, b) => a + b, 0)),
  ]);
  const rates = plan.local.openRates;
  const openAt = (v: LocalVariant, i: number, f: (o: OpenLoopResult) => number): number[] => pick(v, (r) => (r.open[i] ? f(r.open[i]) : Number.NaN));
  // One row per variant and rate: where each variant's knee is.
  const openRows = opts.variants.filter(hasOpenLoop).flatMap((v) =>
    rates.map((rate, i) => [
      v,
      rate.toLocaleString('en-US'),
      med(openAt(v, i, (o) => o.achievedPerSecond)),
      med(openAt(v, i, (o) => o.e2eP50Ms)),
      med(openAt(v, i, (o) => o.e2eP99Ms)),
      med(
        openAt(v, i, (o) => o.cpuMsPerJob.total),
        3,
      ),
      med(
        openAt(v, i, (o) => o.cpuMsPerJob.producer),
        3,
      ),
    ]),
  );
  const ratioRows: string[][] = [];
  const targets: TargetResult[] = [];
  for (const c of ['16', '64'] as const) {
    const lf = `lensfleet-${c}` as LocalVariant;
    const base = `baseline-${c}` as LocalVariant;
    if (!has(lf) || !has(base)) continue;
    const t = ratios(tput(lf), tput(base));
    const u = ratios(cpu(lf), cpu(base));
    ratioRows.push([`lensfleet-${c} ÷ baseline-${c}`, med(t, 2, '×'), med(u, 2, '×')]);
    targets.push(ratioTarget(`pooled drain ≥ 1.10× baseline (concurrency ${c})`, t, 1.1, true));
    targets.push(ratioTarget(`CPU/job (worker+Redis+Postgres) ≤ 0.9× baseline (concurrency ${c})`, u, 0.9, false));
  }
  if (has('graphile-16') && has('lensfleet-16')) {
    const t = ratios(tput('lensfleet-16'), tput('graphile-16'));
    const u = ratios(cpu('lensfleet-16'), cpu('graphile-16'));
    ratioRows.push(['lensfleet-16 ÷ graphile-16', med(t, 2, '×'), med(u, 2, '×')]);
    // The issue asks for "faster than the best Postgres-backed job queue on the same job"; no figure.
    targets.push(ratioTarget('pooled drain faster than graphile-worker, a Postgres-backed queue (concurrency 16): > 1×', t, 1, true));
  }
  if (has('noop-16') && has('lensfleet-16')) {
    ratioRows.push([
      'lensfleet-16 ÷ noop-16',
      med(ratios(tput('lensfleet-16'), tput('noop-16')), 2, '×'),
      med(ratios(cpu('lensfleet-16'), cpu('noop-16')), 2, '×'),
    ]);
  }
  if (has('baseline-16') && has('noop-16')) {
    ratioRows.push([
      'baseline-16 ÷ noop-16',
      med(ratios(tput('baseline-16'), tput('noop-16')), 2, '×'),
      med(ratios(cpu('baseline-16'), cpu('noop-16')), 2, '×'),
    ]);
  }
  const targetRate = rates.indexOf(TARGET_RATE);
  if (has('lensfleet-16') && targetRate >= 0) {
    const v = 'lensfleet-16';
    targets.push(
      maxTarget(
        `open loop ${TARGET_RATE}/s, ${v}: e2e p50 ≤ 5 ms`,
        openAt(v, targetRate, (o) => o.e2eP50Ms),
        5,
        0,
        ' ms',
      ),
    );
    targets.push(
      maxTarget(
        `open loop ${TARGET_RATE}/s, ${v}: e2e p99 ≤ 30 ms`,
        openAt(v, targetRate, (o) => o.e2eP99Ms),
        30,
        0,
        ' ms',
      ),
    );
  }
  return {
    name: 'local',
    title: 'Ceiling and lensfleet pooled (loopback, one tenant)',
    tables: [
      {
        title: `Drain of ${plan.local.drainJobs.toLocaleString('en-US')} pre-filled jobs (CPU ms per job from /proc: worker process, redis-server, postmaster and backends)`,
        headers: ['variant', 'drain jobs/s', 'CPU ms/job total', 'worker', 'Redis', 'Postgres', 'connections opened per 1k jobs', 'failed'],
        rows,
      },
      {
        title: `Open loop, ${plan.local.openSeconds} s at each fixed arrival rate; e2e = finishedOn − job.timestamp`,
        headers: ['variant', 'arrivals/s', 'achieved/s', 'e2e p50 ms', 'e2e p99 ms', 'CPU ms/job (worker+Redis+Postgres)', 'producer CPU ms/job'],
        rows: openRows,
      },
      { title: 'Ratios, computed per repetition pair', headers: ['pair', 'drain throughput', 'CPU/job'], rows: ratioRows },
    ],
    targets,
    notes: [],
    raw: runs,
  };
}

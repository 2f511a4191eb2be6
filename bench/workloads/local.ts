/**
 * The `local` (maritime lens mix) and `pk` (primary-key lookup, issue 15) workloads: the ceiling
 * and lensfleet pooled against every peer, interleaved in one loop so that every ratio compares
 * runs made minutes apart on the same machine:
 * - `noop-16`: BullMQ worker whose processor does nothing (the queue's own ceiling);
 * - `baseline-16`/`baseline-64`: hand-written BullMQ worker + bare pg.Pool(max = concurrency);
 *   `baseline-named-16`: the same with named (prepared) statements;
 * - `lensfleet-16`/`lensfleet-64`: the product, production defaults, pooling on;
 * - `…-bmq6`: the same worker on BullMQ 6 (the `bullmq6` alias, resolved by a module hook);
 * - `graphile-…`: graphile-worker, a Postgres-backed queue, on the same job, with its batching
 *   settings in the name (drain only; see ./graphile.ts).
 * Each session: warm-up, then (BullMQ variants) open loops at fixed arrival rates, then a drain
 * of a pre-filled queue.
 */
import type { LensJobData } from '../../queues/contract.js';
import type { BenchEnv } from '../lib/env.js';
import { benchScript } from '../lib/code.js';
import { drain, openLoop, warmUp, type DrainResult, type OpenLoopResult } from '../lib/jobs.js';
import type { Plan } from '../lib/plan.js';
import type { Progress } from '../lib/progress.js';
import type { WorkerMode } from '../lib/protocol.js';
import { runGraphileDrain, type GraphileSettings } from './graphile.js';
import { interleaved, maxTarget, med, ratios, ratioTarget, type TargetResult, type WorkloadReport } from '../lib/report.js';
import { tenantEnv, withSession } from '../lib/session.js';

/**
 * A variant's name says what runs: `<worker>-<concurrency>[-bmq6]` for the BullMQ workers
 * (`noop`, `baseline` = hand-written with unnamed statements, `baseline-named` = the same with
 * named statements, `lensfleet`; `-bmq6` = on BullMQ 6 instead of 5; `lensfleet-…-raw` = with
 * LENSFLEET_POOL_HYGIENE=off; `-before` = the build in the directory BENCH_BEFORE), and
 * `graphile-<concurrency>[-q<localQueue.size>-d<batch delay ms>][-named]` for graphile-worker
 * (`graphile-16` alone = q17, d250: its documented starting point).
 */
export type LocalVariant = string;

export interface VariantSpec {
  readonly name: LocalVariant;
  readonly kind: WorkerMode | 'graphile';
  readonly concurrency: number;
  readonly bullmq: 5 | 6;
  /** lensfleet with LENSFLEET_POOL_HYGIENE=off (the lens alone, no transaction or check): what hygiene costs. */
  readonly raw?: boolean;
  /**
   * The worker of another build: the directory in BENCH_BEFORE (a checkout of an earlier commit,
   * built), so one run compares a change with what it changed, interleaved.
   */
  readonly before?: boolean;
  readonly graphile?: GraphileSettings;
}

const BULLMQ_VARIANT = /^(noop|baseline|baseline-named|lensfleet)-(\d+)(-bmq6)?(-raw)?(-before)?$/;
const GRAPHILE_VARIANT = /^graphile-(\d+)(?:-q(-?\d+)-d(-?\d+))?(-named)?$/;

/** The variant's spec, or undefined for a name that is not one. */
export function parseVariant(name: string): VariantSpec | undefined {
  const b = BULLMQ_VARIANT.exec(name);
  if (b && (b[4] === undefined || b[1] === 'lensfleet'))
    return { name, kind: b[1] as WorkerMode, concurrency: Number(b[2]), bullmq: b[3] ? 6 : 5, raw: b[4] !== undefined, before: b[5] !== undefined };
  const g = GRAPHILE_VARIANT.exec(name);
  if (g) {
    const concurrency = Number(g[1]);
    return {
      name,
      kind: 'graphile',
      concurrency,
      bullmq: 5,
      graphile: {
        concurrency,
        localQueueSize: g[2] === undefined ? concurrency + 1 : Number(g[2]),
        batchDelayMs: g[3] === undefined ? 250 : Number(g[3]),
        named: g[4] !== undefined,
      },
    };
  }
  return undefined;
}

function beforeDir(): string {
  const dir = process.env.BENCH_BEFORE;
  if (!dir)
    throw new Error('a -before variant needs BENCH_BEFORE: the directory of an earlier build (git archive <commit> | tar -x, node_modules linked, tsc)');
  return dir;
}

const spec = (v: LocalVariant): VariantSpec => {
  const s = parseVariant(v);
  if (s === undefined) throw new Error(`unknown variant ${v}`);
  return s;
};

/**
 * What the jobs ask: the maritime lens mix (`local`), or the primary-key lookup (`pk`:
 * bench.account with a pseudo-random aid in 1..100,000, the same sequence for every variant).
 */
export type LocalWorkload = 'local' | 'pk';

export interface LocalRun {
  /** One per rate of plan.local.openRates; empty for graphile. */
  readonly open: OpenLoopResult[];
  readonly drain: DrainResult;
}

/** The issue's open-loop target is set at this arrival rate. */
const TARGET_RATE = 2500;

/** Every BullMQ variant runs the open loops too (the issue: each workload as a drain and as an open loop); graphile-worker drains only. */
const hasOpenLoop = (v: LocalVariant): boolean => spec(v).kind !== 'graphile';

export interface LocalOptions {
  readonly env: BenchEnv;
  readonly plan: Plan;
  readonly progress: Progress;
  readonly workload: LocalWorkload;
  readonly tenant: { readonly id: string; readonly url: string };
  readonly variants: readonly LocalVariant[];
  /** Job data per index (the workload's); default: the maritime lens mix. */
  readonly make?: (i: number) => LensJobData;
  readonly execArgv?: (variant: LocalVariant, rep: number) => readonly string[] | undefined;
}

export async function runLocal(opts: LocalOptions): Promise<WorkloadReport> {
  const { plan, env } = opts;
  const total = opts.variants.length * plan.reps;
  let n = 0;
  // The pk lens is a lens module, loaded as an operator's would be (harmless for the other lenses).
  const lensEnv: Record<string, string> = opts.workload === 'pk' ? { LENSFLEET_LENS_MODULES: benchScript('lib/pk-lens.js') } : {};
  const runs = await interleaved(opts.variants, plan.reps, async (variant, rep): Promise<LocalRun> => {
    const progress = opts.progress.phase(`${opts.workload} ${++n}/${total} ${variant} rep ${rep + 1}`);
    const s = spec(variant);
    const execArgv = [...(s.bullmq === 6 ? ['--import', benchScript('lib/bullmq6-register.js')] : []), ...(opts.execArgv?.(variant, rep) ?? [])];
    const result: LocalRun =
      s.kind === 'graphile'
        ? {
            open: [],
            drain: await runGraphileDrain({
              env,
              plan,
              progress,
              tenant: opts.tenant,
              settings: s.graphile!,
              ...(opts.make ? { make: opts.make } : {}),
            }),
          }
        : await withSession(
            {
              env,
              mode: s.kind,
              label: variant,
              queueName: `bench-${opts.workload}-${variant}-r${rep}`,
              tenants: [opts.tenant.id],
              workerEnv: {
                ...tenantEnv({ [opts.tenant.id]: opts.tenant.url }),
                ...lensEnv,
                LENSFLEET_CONCURRENCY: String(s.concurrency),
                BENCH_BULLMQ: String(s.bullmq),
                ...(s.raw ? { LENSFLEET_POOL_HYGIENE: 'off' } : {}),
              },
              progress,
              ...(execArgv.length > 0 ? { execArgv } : {}),
              ...(s.before ? { codeDir: beforeDir() } : {}),
              ...(opts.make ? { make: opts.make } : {}),
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
        `${result.drain.cpuMsPerJob.total.toFixed(3)} CPU ms/job (worker ${result.drain.cpuMsPerJob.worker.toFixed(3)})` +
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
    spec(v).kind === 'lensfleet'
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
      med(openAt(v, i, (o) => o.serviceP99Ms)),
      med(openAt(v, i, (o) => o.loopDelayP99Ms)),
      med(openAt(v, i, (o) => o.loopDelayMaxMs)),
      med(openAt(v, i, (o) => o.gcMaxMs)),
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
  const workerCpu = (v: LocalVariant) => pick(v, (r) => r.drain.cpuMsPerJob.worker);
  const pair = (a: LocalVariant, b: LocalVariant): { t: number[]; u: number[] } => {
    const t = ratios(tput(a), tput(b));
    const u = ratios(cpu(a), cpu(b));
    ratioRows.push([`${a} ÷ ${b}`, med(t, 2, '×'), med(u, 2, '×'), med(ratios(workerCpu(a), workerCpu(b)), 2, '×')]);
    return { t, u };
  };
  const w = opts.workload;
  // graphile-worker at its strongest: the graphile variant with the highest median drain.
  const graphiles = opts.variants.filter((v) => spec(v).kind === 'graphile');
  const medianOf = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor((xs.length - 1) / 2)] ?? 0;
  const bestGraphile = graphiles.reduce<LocalVariant | undefined>(
    (best, v) => (best === undefined || medianOf(tput(v)) > medianOf(tput(best)) ? v : best),
    undefined,
  );
  for (const lf of opts.variants.filter((v) => spec(v).kind === 'lensfleet' && !spec(v).before && !spec(v).raw)) {
    const { concurrency: c, bullmq } = spec(lf);
    const suffix = bullmq === 6 ? '-bmq6' : '';
    const on = bullmq === 6 ? ', both on BullMQ 6' : '';
    const base = `baseline-${c}${suffix}`;
    const named = `baseline-named-${c}${suffix}`;
    if (has(base)) {
      const { t, u } = pair(lf, base);
      targets.push(ratioTarget(`${w}: drain ≥ 1.10× hand-written, unnamed statements (concurrency ${c}${on})`, t, 1.1, true));
      targets.push(ratioTarget(`${w}: CPU/job (worker+Redis+Postgres) ≤ 0.9× hand-written, unnamed (concurrency ${c}${on})`, u, 0.9, false));
    }
    if (has(named)) {
      const { t, u } = pair(lf, named);
      targets.push(ratioTarget(`${w}: drain ≥ 1.10× hand-written with named statements (concurrency ${c}${on})`, t, 1.1, true));
      targets.push(ratioTarget(`${w}: CPU/job (worker+Redis+Postgres) ≤ 0.9× hand-written with named statements (concurrency ${c}${on})`, u, 0.9, false));
      targets.push(
        ratioTarget(
          `${w}: worker CPU/job ≤ 0.9× the hand-written worker's, named statements (concurrency ${c}${on})`,
          ratios(workerCpu(lf), workerCpu(named)),
          0.9,
          false,
        ),
      );
    }
    if (bestGraphile !== undefined && c === spec(bestGraphile).concurrency) {
      const { t } = pair(lf, bestGraphile);
      targets.push(ratioTarget(`${w}: drain ≥ 1.0× graphile-worker at its strongest here (${bestGraphile})`, t, 1, true));
    }
    if (bullmq === 6 && has(`lensfleet-${c}`)) pair(lf, `lensfleet-${c}`);
  }
  for (const v of opts.variants.filter((x) => spec(x).bullmq === 6 && spec(x).kind !== 'lensfleet')) {
    const on5 = v.replace(/-bmq6$/, '');
    if (has(on5)) pair(v, on5);
  }
  // A build, or a setting, against the same worker without it.
  for (const v of opts.variants.filter((x) => spec(x).before || spec(x).raw)) {
    const plain = v.replace(/-before$/, '').replace(/-raw$/, '');
    if (has(plain)) pair(plain, v);
  }
  for (const g of graphiles) if (g !== bestGraphile && bestGraphile !== undefined) pair(g, bestGraphile);
  if (has('noop-16') && has('lensfleet-16')) pair('lensfleet-16', 'noop-16');
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
    name: opts.workload,
    title:
      opts.workload === 'pk'
        ? 'Primary-key lens (bench.account on pgbench_accounts, loopback, one tenant)'
        : 'Ceiling and lensfleet pooled (loopback, one tenant, maritime lens mix)',
    tables: [
      {
        title: `Drain of ${plan.local.drainJobs.toLocaleString('en-US')} pre-filled jobs (CPU ms per job from /proc: worker process, redis-server, postmaster and backends)`,
        headers: ['variant', 'drain jobs/s', 'CPU ms/job total', 'worker', 'Redis', 'Postgres', 'connections opened per 1k jobs', 'failed'],
        rows,
      },
      {
        title: `Open loop, ${plan.local.openSeconds} s at each fixed arrival rate; e2e = finishedOn − job.timestamp, service = finishedOn − processedOn; the worker's event-loop delay and GC pauses during the run`,
        headers: [
          'variant',
          'arrivals/s',
          'achieved/s',
          'e2e p50 ms',
          'e2e p99 ms',
          'service p99 ms',
          'loop delay p99 ms',
          'loop delay max ms',
          'GC pause max ms',
          'CPU ms/job (worker+Redis+Postgres)',
          'producer CPU ms/job',
        ],
        rows: openRows,
      },
      { title: 'Ratios, computed per repetition pair', headers: ['pair', 'drain throughput', 'CPU/job', 'worker CPU/job'], rows: ratioRows },
    ],
    targets,
    notes: [],
    raw: runs,
  };
}

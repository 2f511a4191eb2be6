/**
 * Workload 6 — registry micro-overhead: the same closed loop through lensfleet's registry
 * (`registry.get(tenant)` → `pool.acquire()` → query → `pool.release(client)`) and through a bare
 * `pg.Pool` (`pool.connect()` → query → `client.release()`), each side in a fresh process
 * (bench/micro-child.ts), interleaved in pairs. Three loops: with a query (16 concurrent loops, one
 * prepared statement on both sides), acquire/release alone (one loop, no round trip), and the
 * query loop round-robin over 8 tenants (a pool each, on both sides).
 */
import { fork } from 'node:child_process';
import { benchScript } from '../lib/code.js';
import type { Plan } from '../lib/plan.js';
import type { Progress } from '../lib/progress.js';
import { interleaved, med, ratios, ratioTarget, type WorkloadReport } from '../lib/report.js';

export interface LoopResult {
  readonly opsPerSecond: number;
  /** CPU of the child process per operation, µs. */
  readonly cpuUsPerOp: number;
}

export interface MicroResult {
  /** CONCURRENCY concurrent loops of acquire → prepared query → release. */
  readonly query: LoopResult;
  /** One loop of acquire → release (no round trip): the pool's own cost. */
  readonly acquireOnly: LoopResult;
  /** CONCURRENCY loops over TENANTS tenants (a pool each), round-robin, with the query. */
  readonly manyTenants: LoopResult;
}

const CONCURRENCY = 16;
/** Tenants of the many-tenants loop: each its own pool on both sides (same database). */
export const TENANTS = 8;

type Side = 'registry' | 'bare';

function measure(side: Side, url: string, seconds: number): Promise<MicroResult> {
  return new Promise((resolve, reject) => {
    const child = fork(benchScript('micro-child.js'), [side, url, String(seconds), String(CONCURRENCY)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: [] });
    let result: MicroResult | undefined;
    const timer = setTimeout(() => child.kill('SIGKILL'), (seconds * 3 + 30) * 1000);
    child.once('message', (m: MicroResult) => (result = m));
    child.once('exit', (code) => {
      clearTimeout(timer);
      if (result) resolve(result);
      else reject(new Error(`micro-benchmark child (${side}) exited with code ${code} without a result`));
    });
  });
}

export interface MicroOptions {
  readonly plan: Plan;
  readonly progress: Progress;
  readonly tenant: { readonly id: string; readonly url: string };
}

export async function runMicro(opts: MicroOptions): Promise<WorkloadReport> {
  const { plan } = opts;
  const progress = opts.progress.phase('micro');
  let n = 0;
  const runs = await interleaved<Side, MicroResult>(['registry', 'bare'], plan.micro.pairs, async (side) => {
    progress.update(`${++n}/${2 * plan.micro.pairs} (${side})`);
    return measure(side, opts.tenant.url, plan.micro.secondsEach);
  });
  const loop = (side: Side, which: keyof MicroResult): LoopResult[] => runs[side].map((r) => r[which]);
  const ops = (side: Side, which: keyof MicroResult) => loop(side, which).map((x) => x.opsPerSecond);
  const cpu = (side: Side, which: keyof MicroResult) => loop(side, which).map((x) => x.cpuUsPerOp);
  // Time per operation through the registry ÷ through pg.Pool = bare ops/s ÷ registry ops/s.
  const overhead = (which: keyof MicroResult) => ratios(ops('bare', which), ops('registry', which));
  const cpuRatio = (which: keyof MicroResult) => ratios(cpu('registry', which), cpu('bare', which));
  const row = (label: string, which: keyof MicroResult) => [
    label,
    med(ops('registry', which)),
    med(ops('bare', which)),
    med(overhead(which), 3, '×'),
    med(cpu('registry', which), 1),
    med(cpu('bare', which), 1),
    med(cpuRatio(which), 2, '×'),
  ];
  progress.line(`registry ÷ pg.Pool time per op: with query ${med(overhead('query'), 3, '×')}, acquire+release alone ${med(overhead('acquireOnly'), 3, '×')}`);
  return {
    name: 'micro',
    title: 'Registry micro-overhead (closed loop, each side in a fresh process)',
    tables: [
      {
        title: `${plan.micro.pairs} interleaved pairs of ${plan.micro.secondsEach} s per loop`,
        headers: ['loop', 'registry ops/s', 'pg.Pool ops/s', 'time/op registry ÷ pg.Pool', 'CPU µs/op registry', 'CPU µs/op pg.Pool', 'CPU ratio'],
        rows: [
          row(`acquire → prepared query → release, ${CONCURRENCY} loops`, 'query'),
          row('acquire → release, 1 loop (no query)', 'acquireOnly'),
          row(`as the first, ${CONCURRENCY} loops round-robin over ${TENANTS} tenants (a pool each)`, 'manyTenants'),
        ],
      },
    ],
    targets: [
      ratioTarget('registry acquire/release ≤ 1.05× bare pg.Pool (closed loop, same query): time per op', overhead('query'), 1.05, false),
      ratioTarget('registry acquire/release ≤ 1.05× bare pg.Pool (closed loop, same query): CPU per op', cpuRatio('query'), 1.05, false),
    ],
    notes: [],
    raw: runs,
  };
}

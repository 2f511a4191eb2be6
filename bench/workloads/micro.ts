/**
 * Workload 6 — registry micro-overhead: the same closed loop through lensfleet's registry
 * (`registry.current(tenant)` / `registry.get(tenant)` → `pool.acquire()` → query →
 * `pool.release(client)`) and through a bare `pg.Pool` (`pool.connect()` → query →
 * `client.release()`), each side in its own process (bench/micro-child.ts). Three loops: with a
 * query (16 concurrent loops, one prepared statement on both sides), acquire/release alone (one
 * loop, no round trip), and the query loop round-robin over 8 tenants (a pool each, on both sides).
 *
 * The overhead measured is a few per cent at most, and this machine's load swings by more than
 * that within seconds. So both processes stay up and take turns in short slices (A B B A …, only
 * one running at a time); a block of slices is one pair, and the ratios are per block. Each
 * block starts a fresh process per side: a process that runs faster or slower for its whole
 * life (one full run measured its bare side 37 % cheaper than any other run did) moves one
 * block's ratio, not the median.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { benchScript } from '../lib/code.js';
import type { Plan } from '../lib/plan.js';
import type { Progress } from '../lib/progress.js';
import { med, ratios, ratioTarget, type WorkloadReport } from '../lib/report.js';

export interface LoopResult {
  readonly opsPerSecond: number;
  /** CPU of the child process per operation, µs. */
  readonly cpuUsPerOp: number;
}

export type MicroLoop = 'query' | 'acquireOnly' | 'manyTenants';

/** One block of slices per side: */
export interface MicroResult {
  /** CONCURRENCY concurrent loops of acquire → prepared query → release. */
  readonly query: LoopResult;
  /** One loop of acquire → release (no round trip): the pool's own cost. */
  readonly acquireOnly: LoopResult;
  /** CONCURRENCY loops over TENANTS tenants (a pool each), round-robin, with the query. */
  readonly manyTenants: LoopResult;
}

/** Parent → child. */
export type MicroRequest = { readonly t: 'run'; readonly loop: MicroLoop; readonly ms: number } | { readonly t: 'stop' };
/** Child → parent, one per `run`. */
export interface MicroSlice {
  readonly t: 'slice';
  readonly ops: number;
  readonly elapsedMs: number;
  readonly cpuUs: number;
}

const CONCURRENCY = 16;
/** Tenants of the many-tenants loop: each its own pool on both sides (same database). */
export const TENANTS = 8;
/** Length of one turn of one side. */
const SLICE_MS = 100;
const LOOPS: readonly MicroLoop[] = ['query', 'acquireOnly', 'manyTenants'];

type Side = 'registry' | 'bare';

/** A side's process, up until `stop()`; `run` measures one slice. */
interface MicroChild {
  run(loop: MicroLoop, ms: number): Promise<MicroSlice>;
  stop(): Promise<void>;
}

/** Longest wait for a child to connect and warm up, and beyond its length for one slice. */
const START_TIMEOUT_MS = 120_000;
const SLICE_GRACE_MS = 30_000;

/**
 * Fork one side and wait for it to be warm. A child that exits, or stops answering within the
 * timeouts, fails the pending step (and is killed): nothing waits for it forever.
 */
function startChild(side: Side, url: string): Promise<MicroChild> {
  const child: ChildProcess = fork(benchScript('micro-child.js'), [side, url, String(CONCURRENCY)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    execArgv: [],
  });
  const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
  let exitCode: number | null | undefined;
  let pending: { resolve: (m: { t: 'ready' } | MicroSlice) => void; reject: (e: Error) => void; timer: NodeJS.Timeout } | undefined;
  const fail = (err: Error): void => {
    const p = pending;
    pending = undefined;
    if (p === undefined) return;
    clearTimeout(p.timer);
    p.reject(err);
  };
  void exited.then((code) => {
    exitCode = code;
    fail(new Error(`micro-benchmark child (${side}) exited with code ${code}`));
  });
  // A send to a child that is gone emits 'error' on the ChildProcess; without a listener it would crash the run.
  child.on('error', (err) => fail(new Error(`micro-benchmark child (${side}): ${err.message}`)));
  child.on('message', (m: { t: 'ready' } | MicroSlice) => {
    const p = pending;
    pending = undefined;
    if (p === undefined) return;
    clearTimeout(p.timer);
    p.resolve(m);
  });
  const next = (timeoutMs: number, what: string, request?: MicroRequest): Promise<{ t: 'ready' } | MicroSlice> =>
    new Promise((resolve, reject) => {
      if (exitCode !== undefined) return reject(new Error(`micro-benchmark child (${side}) exited with code ${exitCode}`));
      const timer = setTimeout(() => {
        fail(new Error(`micro-benchmark child (${side}) did not ${what} within ${timeoutMs} ms`));
        child.kill('SIGKILL');
      }, timeoutMs);
      pending = { resolve, reject, timer };
      if (request !== undefined) child.send(request);
    });
  const stop = async (): Promise<void> => {
    if (child.connected) child.send({ t: 'stop' } satisfies MicroRequest);
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  };
  return next(START_TIMEOUT_MS, 'warm up').then(
    () => ({
      run: async (loop, ms) => (await next(ms + SLICE_GRACE_MS, `finish a ${ms} ms slice`, { t: 'run', loop, ms })) as MicroSlice,
      stop,
    }),
    async (err: unknown) => {
      await stop();
      throw err;
    },
  );
}

/** Sum of slices → one LoopResult. */
function combine(slices: readonly MicroSlice[]): LoopResult {
  let ops = 0;
  let ms = 0;
  let cpu = 0;
  for (const s of slices) {
    ops += s.ops;
    ms += s.elapsedMs;
    cpu += s.cpuUs;
  }
  return { opsPerSecond: ops / (ms / 1000), cpuUsPerOp: cpu / ops };
}

export interface MicroOptions {
  readonly plan: Plan;
  readonly progress: Progress;
  readonly tenant: { readonly id: string; readonly url: string };
}

/** Both sides up, or neither: a side that started is stopped when the other failed to. */
async function startBoth(url: string): Promise<Record<Side, MicroChild>> {
  const [registry, bare] = await Promise.allSettled([startChild('registry', url), startChild('bare', url)]);
  if (registry.status === 'fulfilled' && bare.status === 'fulfilled') return { registry: registry.value, bare: bare.value };
  await Promise.allSettled([registry, bare].flatMap((s) => (s.status === 'fulfilled' ? [s.value.stop()] : [])));
  throw registry.status === 'rejected' ? registry.reason : (bare as PromiseRejectedResult).reason;
}

export async function runMicro(opts: MicroOptions): Promise<WorkloadReport> {
  const { plan } = opts;
  const progress = opts.progress.phase('micro');
  const runs: Record<Side, MicroResult[]> = { registry: [], bare: [] };
  // Per block, fresh processes; per loop, slices of each side in turn, A B B A …, one side
  // running at a time.
  const slicesPerBlock = Math.max(2, Math.round((plan.micro.secondsEach * 1000) / SLICE_MS));
  for (let b = 0; b < plan.micro.pairs; b++) {
    progress.update(`block ${b + 1}/${plan.micro.pairs}: starting both sides`);
    const children = await startBoth(opts.tenant.url);
    const block: Record<Side, Partial<Record<MicroLoop, LoopResult>>> = { registry: {}, bare: {} };
    try {
      for (const loop of LOOPS) {
        progress.update(`block ${b + 1}/${plan.micro.pairs}: ${loop}`);
        const slices: Record<Side, MicroSlice[]> = { registry: [], bare: [] };
        for (let i = 0; i < slicesPerBlock; i++) {
          const order: Side[] = (i + b) % 2 === 0 ? ['registry', 'bare'] : ['bare', 'registry'];
          for (const side of order) slices[side].push(await children[side].run(loop, SLICE_MS));
        }
        for (const side of ['registry', 'bare'] as const) block[side][loop] = combine(slices[side]);
      }
    } finally {
      await Promise.allSettled([children.registry.stop(), children.bare.stop()]);
    }
    for (const side of ['registry', 'bare'] as const) runs[side].push(block[side] as MicroResult);
  }
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
    title: 'Registry micro-overhead (closed loop, each side in its own process, taking turns)',
    tables: [
      {
        title: `${plan.micro.pairs} blocks, each on a fresh process per side; in a block each side runs each loop ${plan.micro.secondsEach} s in ${SLICE_MS} ms turns (A B B A …, one side at a time); ratios per block`,
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

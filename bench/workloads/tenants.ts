/**
 * Workload 5 — many tenants: 1,000 tenant ids round-robin on one lensfleet worker, against the
 * same worker serving one tenant (the reference of issue 13 §1: ≥ 50 %), in one run. Designs
 * compared, each a fresh worker at concurrency 16 draining the same number of jobs:
 *
 * - `one tenant`: the reference (default settings);
 * - `budget 2 × concurrency`: the process budget sized by concurrency (the old default, 32): the
 *   LRU over 1,000 tenants closes a connection for almost every job;
 * - `default budget, min 5`: the budget sized by descriptors and heap (src/process-limits.ts), with
 *   the guide's minSize 5: each new pool opens five connections (until the budget is full);
 * - `default budget, min 1`: the same budget, pools at minSize 1 (the many-tenants setting the
 *   README recommends): one connection per tenant, kept.
 *
 * Each worker first runs one job per tenant (the cold start: every pool created, its first
 * connections opened; its throughput is reported as "first round"), then the timed drain.
 * Reported per design: drain throughput and its ratio to one tenant, first-round throughput,
 * connections opened per 1,000 jobs, connections seen by Postgres (sampled every 100 ms), the most
 * one tenant held against its ceiling, failed attempts, and memory per idle tenant (RSS and heap
 * after a full GC, before and after the first round, divided by the pools it created).
 *
 * The ids are spread over a few databases (CREATE DATABASE with fsync on costs about a second
 * each) without a role connection limit; every id still gets its own pool, key and connections, as
 * 1,000 databases would.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { makeTempDir } from '../lib/cleanup.js';
import type { BenchEnv } from '../lib/env.js';
import { drain, warmUp, type DrainResult } from '../lib/jobs.js';
import type { Plan } from '../lib/plan.js';
import type { ChildInfo } from '../lib/protocol.js';
import type { Progress } from '../lib/progress.js';
import { num, type TargetResult, type WorkloadReport } from '../lib/report.js';
import { withSession } from '../lib/session.js';

export interface TenantsOptions {
  readonly env: BenchEnv;
  readonly plan: Plan;
  readonly progress: Progress;
  /** Database URLs the tenant ids are spread over. */
  readonly databaseUrls: readonly string[];
}

interface Design {
  readonly label: string;
  readonly tenants: 'one' | 'many';
  readonly env: Readonly<Record<string, string>>;
}

interface DesignResult {
  readonly design: Design;
  readonly drained: DrainResult;
  /** Throughput of the first round (one job per tenant: every pool created, its first connections opened). */
  readonly coldJobsPerSecond: number;
  readonly before: ChildInfo;
  readonly after: ChildInfo;
  readonly maxSeen: number;
  readonly maxTenant: number;
  readonly ceiling: number | undefined;
  readonly budget: number | undefined;
  readonly rssPerPool: number;
  readonly heapPerPool: number;
}

export async function runTenants(opts: TenantsOptions): Promise<WorkloadReport> {
  const { plan } = opts;
  const t = plan.tenants;
  const ids = Array.from({ length: t.count }, (_, i) => `bench_t${String(i).padStart(4, '0')}`);
  const dir = await makeTempDir('lensfleet-bench-tenants-');
  const manyFile = path.join(dir, 'tenants.json');
  const oneFile = path.join(dir, 'one.json');
  await writeFile(
    manyFile,
    JSON.stringify({ tenants: Object.fromEntries(ids.map((id, i) => [id, { databaseUrl: opts.databaseUrls[i % opts.databaseUrls.length]! }])) }),
    {
      mode: 0o600,
    },
  );
  await writeFile(oneFile, JSON.stringify({ tenants: { [ids[0]!]: { databaseUrl: opts.databaseUrls[0]! } } }), { mode: 0o600 });

  const designs: Design[] = [
    { label: 'one tenant', tenants: 'one', env: {} },
    { label: 'budget 2 × concurrency', tenants: 'many', env: { LENSFLEET_PROCESS_MAX_CONNECTIONS: String(2 * t.concurrency) } },
    { label: 'default budget, min 5', tenants: 'many', env: {} },
    { label: 'default budget, min 1', tenants: 'many', env: { LENSFLEET_POOL_MIN_SIZE: '1' } },
  ];
  const results: DesignResult[] = [];
  for (const design of designs) {
    results.push(await runDesign(opts, design, design.tenants === 'one' ? [ids[0]!] : ids, design.tenants === 'one' ? oneFile : manyFile));
  }

  const reference = results[0]!;
  const many = results.slice(1);
  const recommended = results[results.length - 1]!;
  const ratio = (r: DesignResult) => r.drained.jobsPerSecond / Math.max(1e-9, reference.drained.jobsPerSecond);
  const targets: TargetResult[] = [
    {
      target: `${t.count} tenants (default budget, min 1) at ≥ 50 % of one tenant's throughput, same worker, same run`,
      measured: `${num(recommended.drained.jobsPerSecond)} vs ${num(reference.drained.jobsPerSecond)} jobs/s = ${num(ratio(recommended) * 100, 0)} %`,
      met: ratio(recommended) >= 0.5 && !recommended.drained.capped,
    },
    ...many.map(
      (r): TargetResult => ({
        target: `${t.count} tenants (${r.design.label}): no tenant above its pool ceiling, no process above its budget`,
        measured: `one tenant held at most ${r.maxTenant} (ceiling ${r.ceiling ?? '?'}); Postgres saw at most ${r.maxSeen} (budget ${r.budget ?? 'none'})`,
        met: r.ceiling !== undefined && r.maxTenant <= r.ceiling && r.budget !== undefined && r.maxSeen <= r.budget,
      }),
    ),
    {
      target: `${t.count} tenants: no errors`,
      measured: many.map((r) => `${r.design.label}: ${r.drained.failed}`).join('; '),
      met: many.every((r) => r.drained.failed === 0),
    },
    {
      target: `${t.count} tenants (default budget, min 1): RSS per idle tenant, its pool and its connection, ≤ 100 KB`,
      measured: many.map((r) => `${r.design.label}: ${num(r.rssPerPool / 1024, 1)} KB`).join('; '),
      met: recommended.rssPerPool <= 100 * 1024,
    },
  ];
  return {
    name: 'tenants',
    title: `${t.count.toLocaleString('en-US')} tenants round-robin against one tenant (lensfleet, concurrency ${t.concurrency})`,
    tables: [
      {
        title: `Drain of ${t.jobs.toLocaleString('en-US')} jobs per design after a first round of one job per tenant (its throughput: "first round"; memory per idle tenant: over that round) (${t.count} tenant ids over ${opts.databaseUrls.length} databases), capped at ${t.capSeconds} s`,
        headers: [
          'design',
          'jobs/s',
          'of one tenant',
          'first round jobs/s',
          'completed',
          'failed attempts',
          'connections opened per 1k jobs',
          'pools',
          'max connections (Postgres)',
          'max of one tenant / ceiling',
          'budget',
          'RSS before → after',
          'RSS per idle tenant',
          'heap per idle tenant',
        ],
        rows: results.map((r) => [
          r.design.label,
          num(r.drained.jobsPerSecond),
          `${num(ratio(r) * 100, 0)} %`,
          num(r.coldJobsPerSecond),
          num(r.drained.completed),
          num(r.drained.failed),
          num(r.drained.connectsPer1000, 0),
          num(r.after.pools),
          num(r.maxSeen),
          `${r.maxTenant} / ${r.ceiling ?? '?'}`,
          r.budget === undefined ? 'none' : num(r.budget),
          `${num(r.before.rssBytes / 2 ** 20, 1)} → ${num(r.after.rssBytes / 2 ** 20, 1)} MB`,
          r.design.tenants === 'one' ? '–' : `${num(r.rssPerPool / 1024, 1)} KB`,
          r.design.tenants === 'one' ? '–' : `${num(r.heapPerPool / 1024, 1)} KB`,
        ]),
      },
    ],
    targets,
    notes: results
      .filter((r) => r.drained.capped)
      .map((r) => `${r.design.label}: the drain stopped at the ${t.capSeconds} s cap after ${r.drained.completed} jobs.`),
    raw: results.map((r) => ({ ...r, design: r.design.label })),
  };
}

async function runDesign(opts: TenantsOptions, design: Design, ids: readonly string[], file: string): Promise<DesignResult> {
  const { env, plan } = opts;
  const t = plan.tenants;
  const progress = opts.progress.phase(`tenants: ${design.label}`);
  let maxSeen = 0;
  let maxTenant = 0;
  let ceiling: number | undefined;
  const countConnections = async (): Promise<void> => {
    const r = await env.admin<{ n: string }>(
      "SELECT count(*) AS n FROM pg_stat_activity WHERE backend_type = 'client backend' AND application_name = 'lensfleet'",
    );
    maxSeen = Math.max(maxSeen, Number(r.rows[0]?.n ?? 0));
  };
  const result = await withSession(
    {
      env,
      mode: 'lensfleet',
      label: `tenants-${design.tenants}`,
      queueName: 'bench-tenants',
      tenants: ids,
      workerEnv: { LENSFLEET_TENANTS_FILE: file, LENSFLEET_CONCURRENCY: String(t.concurrency), ...design.env },
      progress,
    },
    async (d) => {
      let sampling = true;
      const sampler = (async () => {
        let lastInfo = 0;
        while (sampling) {
          await countConnections().catch(() => {});
          if (Date.now() - lastInfo > 500) {
            lastInfo = Date.now();
            const info = await d.worker.info(false).catch(() => undefined);
            if (info) {
              maxTenant = Math.max(maxTenant, info.maxTenantConnections);
              if (info.tenantCeiling !== undefined) ceiling = Math.min(ceiling ?? Number.POSITIVE_INFINITY, info.tenantCeiling);
            }
          }
          await new Promise((r) => setTimeout(r, 100));
        }
      })();
      try {
        // A short warm-up compiles the hot path; then the first round — one job for every tenant,
        // so each pool is created and opens its first connections — is timed on its own (the cold
        // start of a worker), and the memory delta over it is that of those pools, idle after it.
        progress.update('warm-up');
        await warmUp(d, 100, 120_000);
        const before = await d.worker.info(true);
        const firstRound = Math.max(1000, ids.length);
        progress.update(`first round: ${firstRound} jobs`);
        const t0 = Date.now();
        await warmUp(d, firstRound, t.capSeconds * 1000);
        const coldJobsPerSecond = firstRound / Math.max(0.001, (Date.now() - t0) / 1000);
        await new Promise((r) => setTimeout(r, 1000));
        const after = await d.worker.info(true);
        const drained = await drain(d, t.jobs, t.capSeconds);
        return { before, after, drained, coldJobsPerSecond };
      } finally {
        sampling = false;
        await sampler;
      }
    },
  );
  const { before, after, drained, coldJobsPerSecond } = result;
  const pools = Math.max(1, after.pools - before.pools);
  const r: DesignResult = {
    design,
    drained,
    coldJobsPerSecond,
    before,
    after,
    maxSeen,
    maxTenant,
    ceiling,
    budget: after.budget,
    rssPerPool: (after.rssBytes - before.rssBytes) / pools,
    heapPerPool: (after.heapUsedBytes - before.heapUsedBytes) / pools,
  };
  progress.line(
    `${num(drained.jobsPerSecond)} jobs/s, ${after.pools} pools, ${num(drained.connectsPer1000, 0)} connections opened per 1k jobs, max ${maxSeen} seen ` +
      `(budget ${r.budget ?? 'none'}), one tenant ≤ ${maxTenant}/${ceiling ?? '?'}, ${drained.failed} failed attempts` +
      (design.tenants === 'many' ? `, RSS +${num(r.rssPerPool / 1024, 1)} KB per pool` : ''),
  );
  return r;
}

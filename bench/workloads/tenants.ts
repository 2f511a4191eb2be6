/**
 * Workload 5 — many tenants: 1,000 tenant ids round-robin on one lensfleet worker with the
 * process connection budget. Throughput, connections seen by Postgres (sampled every 100 ms),
 * failed attempts, and memory per idle tenant pool (RSS and heap after a full GC, after the
 * warm-up and after the drain, divided by the number of pools created in between).
 *
 * The ids are spread over a few tenant databases (CREATE DATABASE with fsync on costs about a
 * second each); every id still gets its own pool, key and connections, as 1,000 databases would.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { makeTempDir } from '../lib/cleanup.js';
import type { BenchEnv } from '../lib/env.js';
import { drain, warmUp } from '../lib/jobs.js';
import type { Plan } from '../lib/plan.js';
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

export async function runTenants(opts: TenantsOptions): Promise<WorkloadReport> {
  const { plan, env } = opts;
  const t = plan.tenants;
  const progress = opts.progress.phase(`tenants ${t.count}`);
  const ids = Array.from({ length: t.count }, (_, i) => `bench_t${String(i).padStart(4, '0')}`);
  const file = path.join(await makeTempDir('lensfleet-bench-tenants-'), 'tenants.json');
  const entries = Object.fromEntries(ids.map((id, i) => [id, { databaseUrl: opts.databaseUrls[i % opts.databaseUrls.length]! }]));
  await writeFile(file, JSON.stringify({ tenants: entries }), { mode: 0o600 });

  let maxSeen = 0;
  let maxRegistry = 0;
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
      label: 'tenants',
      queueName: 'bench-tenants',
      tenants: ids,
      workerEnv: { LENSFLEET_TENANTS_FILE: file, LENSFLEET_CONCURRENCY: String(t.concurrency) },
      progress,
    },
    async (d) => {
      let sampling = true;
      const sampler = (async () => {
        let lastInfo = 0;
        while (sampling) {
          await countConnections().catch(() => {});
          if (Date.now() - lastInfo > 1000) {
            lastInfo = Date.now();
            const info = await d.worker.info(false).catch(() => undefined);
            if (info) maxRegistry = Math.max(maxRegistry, info.connections);
          }
          await new Promise((r) => setTimeout(r, 100));
        }
      })();
      try {
        // The warm-up compiles the hot path on the first 5 % of the tenants; the memory delta
        // below is that of the pools created after it.
        progress.update('warm-up');
        await warmUp(d, Math.max(1, Math.floor(t.count / 20)), 120_000);
        const before = await d.worker.info(true);
        const drained = await drain(d, t.jobs, t.capSeconds);
        await new Promise((r) => setTimeout(r, 1000));
        const after = await d.worker.info(true);
        return { before, after, drained };
      } finally {
        sampling = false;
        await sampler;
      }
    },
  );

  const { before, after, drained } = result;
  const pools = Math.max(1, after.pools - before.pools);
  const rssPerPool = (after.rssBytes - before.rssBytes) / pools;
  const heapPerPool = (after.heapUsedBytes - before.heapUsedBytes) / pools;
  const budget = after.budget;
  progress.line(
    `${num(drained.jobsPerSecond)} jobs/s, ${after.pools} pools, max ${maxSeen} connections seen (budget ${budget ?? 'none'}), ` +
      `${drained.failed} failed attempts, RSS +${num(rssPerPool / 1024, 1)} KB per pool`,
  );
  const targets: TargetResult[] = [
    {
      target: `${t.count} tenants: connections never above the process budget`,
      measured: `max ${maxSeen} seen by Postgres (registry ${maxRegistry}), budget ${budget ?? 'not implemented'}`,
      met: budget === undefined ? false : maxSeen <= budget,
      ...(budget === undefined ? { note: 'the worker has no process connection budget' } : maxSeen > budget ? { note: `${maxSeen - budget} over` } : {}),
    },
    {
      target: `${t.count} tenants: no errors`,
      measured: `${drained.failed} failed attempts${drained.firstFailure ? ` (first: ${drained.firstFailure.slice(0, 120)})` : ''}`,
      met: drained.failed === 0,
    },
    {
      target: `${t.count} tenants: RSS growth per idle tenant pool ≤ 50 KB`,
      measured: `${num(rssPerPool / 1024, 1)} KB RSS, ${num(heapPerPool / 1024, 1)} KB heap per pool`,
      met: rssPerPool <= 50 * 1024,
      ...(rssPerPool > 50 * 1024 ? { note: `${num(rssPerPool / 1024 - 50, 1)} KB over` } : {}),
    },
  ];
  return {
    name: 'tenants',
    title: `${t.count.toLocaleString('en-US')} tenants round-robin (lensfleet, concurrency ${t.concurrency})`,
    tables: [
      {
        title: `Drain of ${t.jobs.toLocaleString('en-US')} jobs over ${t.count} tenant ids (${opts.databaseUrls.length} databases), capped at ${t.capSeconds} s`,
        headers: [
          'jobs/s',
          'completed',
          'failed attempts',
          'connections opened per 1k jobs',
          'pools',
          'max connections (Postgres)',
          'max connections (registry)',
          'budget',
          'RSS before → after',
          'RSS per pool',
          'heap per pool',
        ],
        rows: [
          [
            num(drained.jobsPerSecond),
            num(drained.completed),
            num(drained.failed),
            num(drained.connectsPer1000, 0),
            num(after.pools),
            num(maxSeen),
            num(maxRegistry),
            budget === undefined ? 'none' : num(budget),
            `${num(before.rssBytes / 2 ** 20, 1)} → ${num(after.rssBytes / 2 ** 20, 1)} MB`,
            `${num(rssPerPool / 1024, 1)} KB`,
            `${num(heapPerPool / 1024, 1)} KB`,
          ],
        ],
      },
    ],
    targets,
    notes: drained.capped ? [`The drain stopped at the ${t.capSeconds} s cap after ${drained.completed} jobs.`] : [],
    raw: { ...result, maxSeen, maxRegistry, rssPerPool, heapPerPool },
  };
}

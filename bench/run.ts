/**
 * `npm run bench`: lensfleet against the worker a user would write, on servers this command
 * starts itself (loopback Redis and Postgres, SCRAM, fsync on), interleaved repetitions, results
 * to bench/results/<timestamp>.json and a markdown report (docs/BENCHMARKS.md on a full run).
 *
 *   npm run bench                        full run (≈ 10 min on 2 cores)
 *   npm run bench -- --quick             ≈ 2 min, 1 repetition, smaller counts
 *   npm run bench -- --only local,micro  some workloads (local, pooling, remote, tenants, micro, identity, fairness)
 *   npm run bench -- --only local --variants baseline-16,lensfleet-16   some local variants
 *   npm run bench -- --cpu-prof          also write V8 CPU profiles of the local worker children
 *   npm run bench -- --only local --open-rates 1000,2000,2500 --reps 1   find the open-loop knee
 *   npm run bench -- --docs / --no-docs  force writing docs/BENCHMARKS.md, or not
 */
import { execFileSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cleanupAll } from './lib/cleanup.js';
import { snapshotCode } from './lib/code.js';
import { startBenchEnv, TENANT_CONNECTION_LIMIT, tlsUrl, withPort, type BenchEnv } from './lib/env.js';
import { writeDocs, machineInfo, renderMarkdown } from './lib/docs.js';
import { FULL, QUICK, type Plan } from './lib/plan.js';
import { createProgress } from './lib/progress.js';
import type { WorkloadReport } from './lib/report.js';
import { killAllWorkers } from './lib/worker-handle.js';
import { loadAverage } from './lib/procstat.js';
import { summarize } from './lib/stats.js';
import { parseVariant, runLocal, type LocalVariant } from './workloads/local.js';
import { pkJobMaker } from './lib/jobs.js';
import { ACCOUNTS, PGBENCH_ACCOUNTS_SQL } from './lib/pk-lens.js';
import { runFairness } from './workloads/fairness.js';
import { runIdentity } from './workloads/identity.js';
import { runMicro } from './workloads/micro.js';
import { runPooling } from './workloads/pooling.js';
import { runTenants } from './workloads/tenants.js';
import { defaultConnectionBudget, processLimits } from '../src/process-limits.js';

let interrupted = false;
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/**
 * graphile-worker at its strongest on these jobs, from the sweep in docs/BENCHMARKS.md (issue 15):
 * jobs fetched 1,000 at a time, completions batched over 250 ms; with named statements as well
 * (the task's SQL prepared, as lensfleet's is).
 */
const GRAPHILE_BEST = ['graphile-16-q1000-d250', 'graphile-16-q1000-d250-named'];
const LOCAL_VARIANTS: readonly LocalVariant[] = [
  'noop-16',
  'baseline-16',
  'baseline-named-16',
  'lensfleet-16',
  'baseline-named-16-bmq6',
  'lensfleet-16-bmq6',
  ...GRAPHILE_BEST,
  'baseline-64',
  'lensfleet-64',
];
const PK_VARIANTS: readonly LocalVariant[] = LOCAL_VARIANTS.filter((v) => !v.endsWith('-64'));
const WORKLOADS = ['local', 'pk', 'pooling', 'remote', 'tenants', 'micro', 'identity', 'fairness'] as const;
type Workload = (typeof WORKLOADS)[number];
/** Accepted aliases: the issue's names for the parts of `local` and `pooling`. */
const ALIASES: Record<string, Workload> = {
  ceiling: 'local',
  pooled: 'local',
  'pooling-off': 'pooling',
  'many-tenants': 'tenants',
  'noisy-neighbour': 'fairness',
};

function parseCli() {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      only: { type: 'string' },
      variants: { type: 'string' },
      'cpu-prof': { type: 'boolean', default: false },
      'open-rates': { type: 'string' },
      reps: { type: 'string' },
      docs: { type: 'boolean' },
      'no-docs': { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    console.log(
      `usage: npm run bench -- [--quick] [--only ${WORKLOADS.join(',')}] [--variants ${LOCAL_VARIANTS.join(',')}] [--open-rates R1,R2] [--reps N] [--cpu-prof] [--docs|--no-docs]`,
    );
    process.exit(0);
  }
  const only = new Set<Workload>();
  for (const name of (values.only ?? WORKLOADS.join(','))
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)) {
    const w = ALIASES[name] ?? (WORKLOADS as readonly string[]).find((x) => x === name);
    if (w === undefined) {
      console.error(`--only: unknown workload "${name}"; choose from ${WORKLOADS.join(', ')}`);
      process.exit(2);
    }
    only.add(w as Workload);
  }
  let plan: Plan = values.quick ? QUICK : FULL;
  const complete = only.size === WORKLOADS.length;
  const docs = values['no-docs'] ? false : (values.docs ?? (complete && plan.mode === 'full'));
  const custom = values['open-rates'] !== undefined || values.reps !== undefined;
  if (values['open-rates'] !== undefined) {
    const rates = values['open-rates'].split(',').map(Number);
    if (rates.length === 0 || rates.some((r) => !Number.isInteger(r) || r <= 0))
      fail(`--open-rates: expected positive integers separated by commas, got "${values['open-rates']}"`);
    plan = { ...plan, local: { ...plan.local, openRates: rates } };
  }
  if (values.reps !== undefined) {
    const reps = Number(values.reps);
    if (!Number.isInteger(reps) || reps < 1 || reps > 20) fail(`--reps: expected an integer from 1 to 20, got "${values.reps}"`);
    plan = { ...plan, reps };
  }
  const variants = values.variants?.split(',').map((s) => s.trim());
  const unknown = (variants ?? []).filter((v) => parseVariant(v) === undefined);
  if (unknown.length) {
    console.error(
      `--variants: unknown ${unknown.join(', ')}; e.g. ${LOCAL_VARIANTS.join(', ')} (<noop|baseline|baseline-named|lensfleet>-<concurrency>[-bmq6], graphile-<concurrency>[-q<size>-d<ms>][-named])`,
    );
    process.exit(2);
  }
  // The docs quote the standard plan only.
  return { plan, only, variants, cpuProf: values['cpu-prof'], docs: docs && values.variants === undefined && !custom, argv: process.argv.slice(2) };
}

function fail(message: string): never {
  console.error(message);
  process.exit(2);
}

async function main(): Promise<void> {
  const cli = parseCli();
  const { plan } = cli;
  const progress = createProgress();
  const started = new Date();
  const stamp = started.toISOString().replace(/[:.]/g, '-');
  const resultsDir = path.join(ROOT, 'bench', 'results');
  await mkdir(resultsDir, { recursive: true });
  progress.line(`lensfleet benchmarks, ${plan.mode} run (${plan.reps} repetition${plan.reps > 1 ? 's' : ''}), workloads: ${[...cli.only].join(', ')}`);

  // The machine is shared: the load average during the run goes into the report.
  const loads: number[] = [loadAverage()];
  const loadTimer = setInterval(() => loads.push(loadAverage()), 5000);
  loadTimer.unref();

  const setup = progress.phase('setup');
  // Children run a private copy of dist/, immune to rebuilds by anyone else during the run.
  await snapshotCode();
  // The many-tenants workload runs a worker at its default process budget with all its tenant ids
  // on this one server (in production each is its own database): room for all of them.
  const tenantsBudget = defaultConnectionBudget(plan.tenants.concurrency, processLimits());
  const env: BenchEnv = await startBenchEnv(
    (l) => setup.update(l),
    Math.max(TENANT_CONNECTION_LIMIT + 100 + plan.tenants.concurrency * 4, cli.only.has('tenants') ? tenantsBudget + 200 : 0),
  );
  setup.line(
    `Redis ${env.versions.redis} pid ${env.redisPid}, Postgres ${env.versions.postgres} pid ${env.postmasterPid} (SCRAM, fsync on${env.tls ? ', ssl on' : ''})`,
  );
  // The library's default seed (40 rows per table): small tables keep the comparison on the
  // worker's own cost; Postgres work per job is the same lens SQL for every variant.
  const [mainDb] = await env.createTenants(['bench_main'], 40, (l) => setup.update(l));
  const tenant = { id: mainDb!.tenant, url: mainDb!.databaseUrl };

  const reports: WorkloadReport[] = [];
  const failures: { workload: string; error: string }[] = [];
  const attempt = async (name: string, fn: () => Promise<WorkloadReport>): Promise<void> => {
    if (interrupted) return;
    try {
      reports.push(await fn());
    } catch (err) {
      if (interrupted) return;
      killAllWorkers();
      const error = (err as Error)?.stack ?? String(err);
      failures.push({ workload: name, error });
      progress.line(`workload ${name} FAILED: ${error.split('\n').slice(0, 6).join('\n')}`);
    }
  };

  if (cli.only.has('local')) {
    const profDir = path.join(resultsDir, `prof-${stamp}`);
    await attempt('local', () =>
      runLocal({
        env,
        plan,
        progress,
        tenant,
        workload: 'local',
        variants: cli.variants ?? LOCAL_VARIANTS,
        // One profile per variant, from the first repetition only (profiling slows the worker).
        ...(cli.cpuProf
          ? { execArgv: (v: LocalVariant, rep: number) => (rep === 0 ? ['--cpu-prof', `--cpu-prof-dir=${path.join(profDir, v)}`] : undefined) }
          : {}),
      }),
    );
    if (cli.cpuProf) progress.line(`CPU profiles in ${path.relative(ROOT, profDir)} (summarise with: node dist/bench/prof-top.js <file.cpuprofile>)`);
  }
  if (cli.only.has('pk')) {
    const profDir = path.join(resultsDir, `prof-${stamp}-pk`);
    await attempt('pk', async () => {
      const [db] = await env.createTenants(['bench_pk'], 40, (l) => progress.phase('pk').update(l));
      const { default: pg } = await import('pg');
      const admin = new pg.Client({ connectionString: env.postgres.adminUrl(db!.database) });
      await admin.connect();
      try {
        for (const sql of [...PGBENCH_ACCOUNTS_SQL, `GRANT SELECT ON pgbench_accounts TO "${db!.role}"`]) await admin.query(sql);
      } finally {
        await admin.end();
      }
      return runLocal({
        env,
        plan,
        progress,
        workload: 'pk',
        tenant: { id: db!.tenant, url: db!.databaseUrl },
        variants: cli.variants ?? PK_VARIANTS,
        make: pkJobMaker(db!.tenant, ACCOUNTS),
        ...(cli.cpuProf
          ? { execArgv: (v: LocalVariant, rep: number) => (rep === 0 ? ['--cpu-prof', `--cpu-prof-dir=${path.join(profDir, v)}`] : undefined) }
          : {}),
      });
    });
    if (cli.cpuProf) progress.line(`CPU profiles in ${path.relative(ROOT, profDir)}`);
  }
  if (cli.only.has('pooling')) {
    await attempt('pooling', () => runPooling({ env, plan, progress, where: 'local', path: 'loopback', tenant }));
  }
  if (cli.only.has('remote')) {
    await attempt('remote', async () => {
      const port = await env.startProxy(plan.remote.delayMs);
      const url = env.tls ? tlsUrl(withPort(tenant.url, port)) : withPort(tenant.url, port);
      await checkRemotePath(url, env.tls);
      const d = plan.remote.delayMs;
      return runPooling({
        env,
        plan,
        progress,
        where: 'remote',
        path: `through a delay proxy (${d} ms each way, ${2 * d} ms round trip)${env.tls ? ' with TLS' : ''}`,
        tenant: { id: tenant.id, url },
      });
    });
  }
  if (cli.only.has('tenants')) {
    await attempt('tenants', async () => {
      const ids = Array.from({ length: plan.tenants.databases }, (_, i) => `bench_many${i}`);
      // No role connection limit: each database stands for hundreds of tenant databases.
      const dbs = await env.createTenants(ids, 40, (l) => progress.phase('tenants').update(l), -1);
      return runTenants({ env, plan, progress, databaseUrls: dbs.map((d) => d.databaseUrl) });
    });
  }
  if (cli.only.has('fairness')) {
    await attempt('fairness', async () => {
      const [a, b] = await env.createTenants(['bench_fair_a', 'bench_fair_b'], 40, (l) => progress.phase('fairness').update(l));
      return runFairness({ env, plan, progress, a: { id: a!.tenant, url: a!.databaseUrl }, b: { id: b!.tenant, url: b!.databaseUrl } });
    });
  }
  if (cli.only.has('identity')) {
    await attempt('identity', () => runIdentity({ env, plan, progress, tenant }));
  }
  if (cli.only.has('micro')) {
    await attempt('micro', () => runMicro({ plan, progress, tenant }));
  }

  clearInterval(loadTimer);
  if (interrupted) return; // partial results of an interrupted run are not written
  const finished = new Date();
  const machine = machineInfo();
  const command = `npm run bench${cli.argv.length ? ` -- ${cli.argv.join(' ')}` : ''}`;
  const load = summarize(loads);
  const code = gitDescribe();
  const meta = {
    code,
    load: { median: load.median, min: load.min, max: load.max },
    started: started.toISOString(),
    finished: finished.toISOString(),
    seconds: Math.round((finished.getTime() - started.getTime()) / 1000),
    command,
    plan,
    machine,
    versions: env.versions,
    tls: env.tls,
  };
  const file = path.join(resultsDir, `${stamp}.json`);
  await writeFile(file, JSON.stringify({ ...meta, reports, failures }, null, 2));
  const markdown = renderMarkdown(meta, reports, failures);
  process.stdout.write(`\n${markdown}\n`);
  progress.line(`results: ${path.relative(ROOT, file)}`);
  if (cli.docs) {
    const docsFile = path.join(ROOT, 'docs', 'BENCHMARKS.md');
    await writeDocs(docsFile, markdown);
    progress.line(`wrote ${path.relative(ROOT, docsFile)}`);
  }
  if (failures.length > 0) process.exitCode = 1;
}

/** The commit measured, and whether the tree had uncommitted changes (other work in progress). */
function gitDescribe(): string {
  try {
    const git = (args: string[]): string => execFileSync('git', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = git(['status', '--porcelain', '--untracked-files=no']) !== '';
    return `${git(['rev-parse', '--short', 'HEAD'])}${dirty ? ' + uncommitted changes' : ''}`;
  } catch {
    return 'unknown (not a git checkout)';
  }
}

/** One connection over the remote path, proving the proxy works and TLS is on. */
async function checkRemotePath(url: string, tls: boolean): Promise<void> {
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const r = await client.query<{ ssl: boolean }>('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
    if (tls && r.rows[0]?.ssl !== true) throw new Error('the remote path does not use TLS');
  } finally {
    await client.end();
  }
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    process.stdout.write(`\n${signal}: stopping workers and servers…\n`);
    killAllWorkers();
    void cleanupAll().finally(() => process.exit(130));
  });
}

main()
  .catch((err: unknown) => {
    process.stderr.write(`\nbenchmark failed: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exitCode = 1;
  })
  .finally(async () => {
    killAllWorkers();
    await cleanupAll();
    process.exit();
  });

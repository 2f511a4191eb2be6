/**
 * `npm run demo`: the whole product on this machine, end to end.
 *
 * Starts a local Redis and Postgres (unless REDIS_URL / LENSFLEET_DEMO_ADMIN_URL point at
 * servers), creates demo tenant databases — Postgres tenants, and one Supabase tenant served by
 * the PostgREST stand-in (dev/postgrest) in a process of its own — runs worker processes (the same
 * entry point as the Procfile), enqueues lens queries across tenants and lenses with a progress
 * bar, then prints a result sample, throughput and latency, per-user identity on both backends,
 * per-tenant pool stats, and an excerpt of /metrics, and where to look next (the queue UI, the
 * dashboard, the runbook, the CLI). Cleans up after itself (servers, the stand-in, temp dirs, demo
 * databases it created) — with --keep only once told to: it leaves everything running for
 * exploring, writes the demo's settings to a file only its user can read (so `lensfleet status`,
 * `queue`, `tenants check` and the UI see the demo), prints the command that stops it all
 * (`kill -TERM <its pid>`, or Ctrl-C), and cleans up on that signal.
 *
 * Options: --jobs N (2000) --workers N (2) --tenants N (3) --concurrency N (8) --keep
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Job, type QueueEvents } from 'bullmq';
import { createLensQueue, createLensQueueEvents, enqueueMany, run, type LensJob, type LensQueue } from '../queues/producer.js';
import type { LensRequest, LensResult } from '../queues/contract.js';
import { createTenantDatabase, demoUserId, dropTenantDatabase, type TenantDatabase } from '../dev/local/tenant-db.js';
import { serviceKeyFor, userTokenFor } from '../dev/postgrest/jwt.js';
import { ensureSystemPackages, freePort, startPostgres, startRedis, type LocalPostgres, type LocalRedis } from '../dev/local/servers.js';
import type { PoolStats } from '../src/pool/tenant-pool.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const WORKER = path.join(ROOT, 'dist/workers/lens-worker.js');
const STAND_IN = path.join(ROOT, 'dist/dev/postgrest/main.js');
/** The demo's Supabase tenant: reached over REST (the stand-in), not over the Postgres protocol. */
const SUPA = 'ySUPA_001';

const USAGE = 'usage: npm run demo -- [--jobs N] [--workers N] [--tenants N] [--concurrency N] [--keep]';
// Exit codes: 0 every job completed (with --keep: and it was stopped by SIGTERM/SIGINT), 1 a job
// failed or the demo failed, 2 bad options.
const opts = (() => {
  try {
    return parseArgs({
      options: {
        jobs: { type: 'string', default: '2000' },
        workers: { type: 'string', default: '2' },
        tenants: { type: 'string', default: '3' },
        concurrency: { type: 'string', default: '8' },
        keep: { type: 'boolean', default: false },
      },
    }).values;
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    process.exit(2);
  }
})();
const JOBS = positive('jobs');
const WORKERS = positive('workers');
const TENANT_COUNT = positive('tenants');
const CONCURRENCY = positive('concurrency');
const KEEP = opts.keep;

function positive(name: 'jobs' | 'workers' | 'tenants' | 'concurrency'): number {
  const n = Number(opts[name]);
  if (!Number.isInteger(n) || n < 1) {
    console.error(`--${name} must be a positive whole number (got ${String(opts[name])})`);
    process.exit(2);
  }
  return n;
}

const LENS_MIX: [string, Record<string, unknown>][] = [
  ['receiving.recent', { limit: 10 }],
  ['equipment.search', { q: 'pump', limit: 10 }],
  ['work_orders.open', { limit: 10 }],
  ['work_orders.open', { priority: 'critical', limit: 5 }],
];

// `npm run demo | head`: once the reader is gone, go on quietly, so the cleanup still runs (an
// EPIPE thrown from a write would end the demo and leave its worker processes running).
let readerGone = false;
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE') throw err;
  readerGone = true;
});
const say = (line = '') => {
  if (!readerGone) process.stdout.write(`${line}\n`);
};
const step = (line: string) => say(`\n▸ ${line}`);

async function main(): Promise<void> {
  const started = Date.now();
  let redis: LocalRedis | undefined;
  let postgres: LocalPostgres | undefined;
  const workers: { proc: ChildProcess; port: number; exited: Promise<number | null> }[] = [];
  let tenantDbs: TenantDatabase[] = [];
  let standIn: StandInProcess | undefined;
  let adminUrl = process.env.LENSFLEET_DEMO_ADMIN_URL;
  /** --keep: the directory of the settings file. */
  let keptDir: string | undefined;
  // --keep: SIGTERM/SIGINT stop the demo whenever they come (the wait at the end, or before it:
  // then the cleanup runs at once). Its children are in their own process groups then, so a
  // Ctrl-C reaches the demo alone and each worker gets one SIGTERM from the cleanup (a second
  // signal would make a draining worker exit at once).
  let keeping = false;
  const stopRequested = new Promise<NodeJS.Signals>((resolve) => {
    // `on`, not `once`: dev/local's emergency hook kills the servers and re-raises a signal when it
    // finds no other listener (a `once` listener is gone by the time it looks). A second signal
    // while the cleanup runs is ignored: it is bounded (drains, SIGKILL after 5 s).
    if (KEEP) for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => resolve(signal));
  });
  void stopRequested.then(async (signal) => {
    if (keeping) return;
    say(`\n${signal} before the demo finished: stopping`);
    await cleanup();
    process.exit(1);
  });
  let cleaning: Promise<void> | undefined;
  const cleanup = () => (cleaning ??= cleanUp());
  const cleanUp = async () => {
    step('cleaning up');
    if (keptDir) rmSync(keptDir, { recursive: true, force: true });
    for (const w of workers) if (w.proc.exitCode === null) w.proc.kill('SIGTERM');
    const codes = await Promise.all(workers.map((w) => w.exited));
    say(`  workers drained and exited with ${codes.map(String).join(', ')}`);
    // After the workers: a draining worker may still have a request in flight to it.
    if (standIn) say(`  PostgREST stand-in exited with ${String(await standIn.stop())}`);
    if (adminUrl && !postgres) await Promise.all(tenantDbs.map((t) => dropTenantDatabase(adminUrl!, t.tenant).catch(() => {})));
    await Promise.allSettled([redis?.stop(), postgres?.stop()]);
    say(`  ${redis || postgres ? 'local servers stopped and temp dirs removed' : 'left your servers running'}`);
  };

  try {
    step('servers');
    const need = { redis: !process.env.REDIS_URL, postgres: !adminUrl };
    if (need.redis || need.postgres) await ensureSystemPackages({ ...need, log: (l) => say(`  ${l}`) });
    let redisUrl = process.env.REDIS_URL;
    if (!redisUrl) {
      redis = await startRedis();
      redisUrl = redis.url;
      say(`  Redis ${redis.url} (local, temporary)`);
    } else say(`  Redis from REDIS_URL`);
    if (!adminUrl) {
      postgres = await startPostgres({ fsync: true, maxConnections: 200 });
      adminUrl = postgres.adminUrl();
      say(`  Postgres 127.0.0.1:${postgres.port} (local, temporary, SCRAM auth, fsync on)`);
    } else say('  Postgres from LENSFLEET_DEMO_ADMIN_URL');

    step(`${TENANT_COUNT} Postgres tenants and 1 Supabase tenant (one database and one read-only role each)`);
    const ids = Array.from({ length: TENANT_COUNT }, (_, i) => `yTEST_YACHT_${String(i + 1).padStart(3, '0')}`);
    tenantDbs = await Promise.all([...ids, SUPA].map((id) => createTenantDatabase(adminUrl!, id, { rows: 60 })));
    for (const t of tenantDbs) {
      const how = t.tenant === SUPA ? 'reached over REST (Supabase API) through the stand-in below' : 'reached over the Postgres protocol';
      say(`  ${t.tenant.padEnd(16)} database ${t.database}, role ${t.role}: ${how}`);
    }
    // Each tenant verifies its own users' tokens (HS256 with its own secret, as a Supabase project does).
    const jwtSecrets = new Map([...ids, SUPA].map((id) => [id, randomBytes(32).toString('base64url')]));

    step(`PostgREST stand-in for ${SUPA} (node dist/dev/postgrest/main.js, a process of its own)`);
    const supaDb = tenantDbs.find((t) => t.tenant === SUPA)!;
    standIn = startStandIn(supaDb.databaseUrl, jwtSecrets.get(SUPA)!);
    const supabaseUrl = await standIn.url;
    say(`  pid ${standIn.proc.pid}: ${supabaseUrl}/rest/v1 over ${supaDb.database} as ${supaDb.role}`);
    say('  per request: JWT verified with the project secret, then role + claims set in a read-only transaction, so RLS applies');

    step(`${WORKERS} worker processes (node dist/workers/lens-worker.js, concurrency ${CONCURRENCY})`);
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '',
      REDIS_URL: redisUrl,
      LENSFLEET_QUEUE: 'lens-queries-demo',
      LENSFLEET_TENANTS: [...ids, SUPA].join(','),
      LENSFLEET_CONCURRENCY: String(CONCURRENCY),
      LENSFLEET_WARM_TENANTS: '*',
      LENSFLEET_METRICS_HOST: '127.0.0.1',
      LOG_LEVEL: 'warn',
    };
    for (const t of tenantDbs) if (t.tenant !== SUPA) env[`${t.tenant}_DATABASE_URL`] = t.databaseUrl;
    // The Supabase tenant as a project is configured: its URL, its service_role key, its JWT secret.
    env[`${SUPA}_SUPABASE_URL`] = supabaseUrl;
    env[`${SUPA}_SUPABASE_SERVICE_KEY`] = await serviceKeyFor(jwtSecrets.get(SUPA)!);
    for (const [id, secret] of jwtSecrets) env[`${id}_JWT_SECRET`] = secret;
    for (let i = 0; i < WORKERS; i++) {
      const port = await freePort();
      const proc = spawn(process.execPath, [WORKER], { env: { ...env, PORT: String(port) }, stdio: ['ignore', 'inherit', 'inherit'], detached: KEEP });
      const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
      workers.push({ proc, port, exited });
    }
    await Promise.all(workers.map((w) => waitReady(w.port, w.proc)));
    for (const w of workers) say(`  pid ${w.proc.pid}: http://127.0.0.1:${w.port}/metrics /health /ready /pools`);

    step(`enqueue ${JOBS} lens queries across ${TENANT_COUNT} Postgres tenants × ${LENS_MIX.length} lens calls`);
    const connection = { url: redisUrl };
    const queue = createLensQueue({ connection, name: env.LENSFLEET_QUEUE! });
    await queue.obliterate({ force: true }).catch(() => {});
    // (from the stream's last event, not `$`: a completion between waitUntilReady and the first
    // read would otherwise never be counted)
    const events = await createLensQueueEvents(queue, connection);
    await events.waitUntilReady();
    const drain = await drainJobs(queue, events, lensMix(ids, JOBS));

    step('results');
    const sample = drain.finished.find((j) => j.returnvalue?.lens === 'work_orders.open')?.returnvalue;
    if (sample) {
      say(`  sample result: ${sample.lens} for ${sample.tenant}: ${sample.rowCount} rows in ${sample.durationMs.toFixed(2)} ms`);
      for (const row of sample.rows.slice(0, 3)) say(`    ${JSON.stringify(row)}`);
    }
    say(`  completed ${drain.completed}, failed ${drain.failed}`);
    sayRates(drain);

    // Apart from the drain: the stand-in (one Node process doing PostgREST's work) serves a few
    // hundred requests a second here, so as a quarter of the drain it halved the drain's
    // throughput, and the demo's throughput figure would be the stand-in's, not lensfleet's.
    const restJobs = Math.max(LENS_MIX.length, Math.round(JOBS / 10));
    step(`${SUPA} over REST: ${restJobs} lens queries, the same lens mix, on their own (the stand-in sets their pace)`);
    const rest = await drainJobs(queue, events, lensMix([SUPA], restJobs));
    const restSample = rest.finished.find((j) => j.returnvalue?.lens === 'work_orders.open')?.returnvalue;
    if (restSample) {
      say(
        `  sample result: ${restSample.lens} for ${restSample.tenant}: ${restSample.rowCount} rows in ${restSample.durationMs.toFixed(2)} ms (JSON as PostgREST sends it)`,
      );
      for (const row of restSample.rows.slice(0, 2)) say(`    ${JSON.stringify(row)}`);
    }
    say(`  completed ${rest.completed}, failed ${rest.failed}`);
    sayRates(rest);
    const failed = drain.failed + rest.failed;

    step(`per-user identity: the same lens for two users of a tenant and for the service (row-level security, owner_id = auth.uid())`);
    {
      const mint = (forTenant: string, n: number) => userTokenFor(jwtSecrets.get(forTenant)!, demoUserId(forTenant, n), '10m');
      const how = {
        pg: 'over Postgres: the worker sets role and claims in the job’s transaction',
        rest: 'over REST: the worker sends the job’s own token, PostgREST sets role and claims',
      };
      for (const [tenant, backend] of [
        [ids[0]!, how.pg],
        [SUPA, how.rest],
      ] as const) {
        say(`  ${tenant} ${backend}`);
        const who = [
          { label: `user 1 (${demoUserId(tenant, 1).slice(0, 8)}…)`, auth: { jwt: await mint(tenant, 1) } },
          { label: `user 2 (${demoUserId(tenant, 2).slice(0, 8)}…)`, auth: { jwt: await mint(tenant, 2) } },
          { label: 'service (no token)', auth: undefined },
        ];
        for (const w of who) {
          const r = await run(queue, events, { tenant, lens: 'receiving.recent', params: { limit: 200 }, ...(w.auth ? { auth: w.auth } : {}) });
          const refs = r.rows.map((row) => String(row.reference)).sort();
          say(`    ${w.label.padEnd(22)} ${String(r.rowCount).padStart(3)} rows: ${refs.slice(0, 4).join(', ')}${refs.length > 4 ? ', …' : ''}`);
        }
      }
      // A token of another tenant is refused in the worker, before any connection or request.
      const foreign = async (tenant: string, from: string) => {
        const outcome = await run(queue, events, { tenant, lens: 'receiving.recent', params: { limit: 5 }, auth: { jwt: await mint(from, 1) } }).then(
          () => 'completed (unexpected)',
          (err: unknown) => (err as Error).message.split(':')[0]!,
        );
        say(`  a token of ${from} sent for ${tenant}: ${outcome} (${from === tenant ? 'same tenant' : 'refused'})`);
      };
      await foreign(ids[0]!, ids[1] ?? ids[0]!);
      await foreign(SUPA, ids[0]!);
      say('  (each finished job keeps only a hash of its token in Redis; docs: README "Per-user identity", docs/IDENTITY.md, docs/SUPABASE.md)');
    }

    step(
      `pool stats per worker and tenant (GET /pools; process budget ${2 * CONCURRENCY} database connections, so Postgres tenants share it: "evicted" = an idle connection closed for another tenant)`,
    );
    say(
      `  ${'worker'.padEnd(8)} ${'tenant'.padEnd(16)} ${'via'.padEnd(4)} ${'size'.padStart(4)} ${'inUse'.padStart(5)} ${'idle'.padStart(4)} ${'max'.padStart(4)} ${'min'.padStart(4)} ${'requests'.padStart(8)} ${'wait ms'.padStart(8)} ${'timeouts'.padStart(8)} ${'opened'.padStart(6)}  closed (reason)`,
    );
    for (const w of workers) {
      const { pools } = (await (await fetch(`http://127.0.0.1:${w.port}/pools`)).json()) as { pools: PoolStats[] };
      for (const p of pools) {
        say(
          `  ${String(w.proc.pid).padEnd(8)} ${p.tenant.padEnd(16)} ${(p.backend === 'supabase' ? 'REST' : 'pg').padEnd(4)} ${String(p.size).padStart(4)} ${String(p.inUse).padStart(5)} ${String(p.idle).padStart(4)} ${String(p.max).padStart(4)} ${String(p.min).padStart(4)} ${String(p.requests_total).padStart(8)} ${String(p.requests_wait_ms_total).padStart(8)} ${String(p.acquire_timeouts_total).padStart(8)} ${String(p.connections_opened_total).padStart(6)}  ${
            Object.entries(p.connections_closed_total)
              .map(([r, n]) => `${n} ${r}`)
              .join(', ') || '-'
          }`,
        );
      }
    }
    say(`  ${SUPA} (REST): size = keep-alive sockets to the stand-in, opened on demand (min 0), bounded by max, outside the budget (docs/SUPABASE.md)`);

    step(`/metrics excerpt (worker pid ${workers[0]!.proc.pid}, tenant ${ids[0]})`);
    const metrics = await (await fetch(`http://127.0.0.1:${workers[0]!.port}/metrics`)).text();
    const wanted = metrics
      .split('\n')
      .filter(
        (l) =>
          (l.startsWith('lensfleet_') && !l.includes('_bucket') && (l.includes(`tenant="${ids[0]}"`) || !l.includes('tenant='))) ||
          l.startsWith('lensfleet_jobs_total'),
      )
      .filter((l) => !l.startsWith('lensfleet_jobs_total') || l.includes(`tenant="${ids[0]}"`));
    for (const l of wanted) say(`  ${l}`);
    await events.close();
    // --keep: the finished jobs stay, for the UI and `lensfleet queue` to show.
    if (!KEEP) await queue.obliterate({ force: true }).catch(() => {});
    await queue.close();
    if (failed > 0) process.exitCode = 1;

    step('where to look next');
    say("  queue UI (bull-board): the Procfile's ui: process, `npm run ui`, with the demo's settings (--keep prints them)");
    say('  dashboard: deploy/grafana/dashboards/lensfleet.json; alert rules: deploy/prometheus/alerts.yml (`docker compose up` serves both)');
    say('  runbook: docs/RUNBOOK.md (what each alert means, the panel to open, the commands to run)');
    say('  operators: npx lensfleet --help (status, queue, tenants check, lenses, plan)');
    if (KEEP) {
      keptDir = mkdtempSync(path.join(os.tmpdir(), 'lensfleet-demo-'));
      keeping = true;
      await keepRunning(keptDir, env, workers, standIn, { redis: !!redis, postgres: !!postgres }, stopRequested);
    } else say('  `npm run demo -- --keep` leaves the servers and workers running to explore them');
  } finally {
    await cleanup();
    say(`\ndone in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }
}

/**
 * --keep: print how to reach what runs, write its settings to `<dir>/demo.env` (mode 0600: it
 * holds the tenants' URLs and keys), and wait for SIGTERM or SIGINT (`stopRequested`). The caller
 * then cleans up.
 */
async function keepRunning(
  dir: string,
  env: Readonly<Record<string, string>>,
  workers: readonly { proc: ChildProcess; port: number }[],
  standIn: StandInProcess | undefined,
  local: { redis: boolean; postgres: boolean },
  stopRequested: Promise<NodeJS.Signals>,
): Promise<void> {
  const file = path.join(dir, 'demo.env');
  const quote = (v: string) => `'${v.replace(/'/g, `'\\''`)}'`;
  writeFileSync(
    file,
    `${Object.entries(env)
      .filter(([k]) => k !== 'PATH')
      .map(([k, v]) => `${k}=${quote(v)}`)
      .join('\n')}\n`,
    { mode: 0o600 },
  );
  step(
    `kept running (--keep): ${workers.length} worker${workers.length === 1 ? '' : 's'}, the PostgREST stand-in${local.redis ? ', Redis' : ''}${local.postgres ? ', Postgres' : ''}`,
  );
  for (const w of workers) say(`  worker pid ${w.proc.pid}: http://127.0.0.1:${w.port}/metrics /health /ready /pools`);
  if (standIn) say(`  PostgREST stand-in pid ${standIn.proc.pid}`);
  say(`  the demo's settings (tenant URLs and keys: readable by you only): ${file}`);
  say('  with them, from this directory:');
  say(`    set -a; . ${file}; set +a`);
  say('    node dist/cli/lensfleet.js status');
  say('    node dist/cli/lensfleet.js queue');
  say('    node dist/cli/lensfleet.js tenants check');
  say(`    node dist/cli/lensfleet.js enqueue --tenant yTEST_YACHT_001 --lens work_orders.open --params '{"limit":3}' --wait`);
  say('  stop everything (workers drain, servers stop, demo databases and temp files go):');
  say(`    kill -TERM ${process.pid}`);
  say('  (or Ctrl-C here)');
  const signal = await stopRequested;
  say(`\n  ${signal}: stopping`);
}

/** `n` requests: the lens mix, LENS_MIX.length consecutive jobs per tenant, tenants in turn. */
function lensMix(tenants: readonly string[], n: number): LensRequest[] {
  return Array.from({ length: n }, (_, i) => {
    const [lens, params] = LENS_MIX[i % LENS_MIX.length]!;
    return { tenant: tenants[Math.floor(i / LENS_MIX.length) % tenants.length]!, lens, params };
  });
}

interface Drained {
  readonly completed: number;
  readonly failed: number;
  /** The jobs as stored once finished (timestamps, results). */
  readonly finished: Job<LensRequest, LensResult>[];
}

/** Enqueue `reqs` (250 at a time) with a progress bar and wait until every one finished (120 s at most). */
async function drainJobs(queue: LensQueue, events: QueueEvents, reqs: LensRequest[]): Promise<Drained> {
  let completed = 0;
  let failed = 0;
  let enqueued = 0;
  const bar = progress(reqs.length);
  // Runs go one after another, each until all its jobs finished: every event meanwhile is one of its jobs.
  const onCompleted = () => {
    completed++;
    bar(enqueued, completed, failed);
  };
  const onFailed = ({ failedReason }: { failedReason: string }) => {
    failed++;
    say(`\n  job failed: ${failedReason}`);
  };
  events.on('completed', onCompleted);
  events.on('failed', onFailed);
  try {
    const t0 = Date.now();
    const jobs: LensJob[] = [];
    for (let i = 0; i < reqs.length; i += 250) {
      jobs.push(...(await enqueueMany(queue, reqs.slice(i, i + 250))));
      enqueued = jobs.length;
      bar(enqueued, completed, failed);
    }
    while (completed + failed < reqs.length) {
      await new Promise((r) => setTimeout(r, 50));
      if (Date.now() - t0 > 120_000) throw new Error(`only ${completed + failed}/${reqs.length} jobs finished after 120 s`);
    }
    bar(enqueued, completed, failed, true);
    const finished = (await Promise.all(jobs.map((j) => Job.fromId<LensRequest, LensResult>(queue, j.id!)))).filter(
      (j): j is Job<LensRequest, LensResult> => !!j,
    );
    return { completed, failed, finished };
  } finally {
    events.off('completed', onCompleted);
    events.off('failed', onFailed);
  }
}

/** Throughput (first enqueue → last completion) and end-to-end latency of a run. */
function sayRates({ completed, finished }: Drained): void {
  const latencies = finished
    .filter((j) => j.finishedOn)
    .map((j) => j.finishedOn! - j.timestamp)
    .sort((a, b) => a - b);
  const first = Math.min(...finished.map((j) => j.timestamp));
  const last = Math.max(...finished.map((j) => j.finishedOn ?? 0));
  say(`  throughput ${((completed / (last - first)) * 1000).toFixed(0)} jobs/s (first enqueue → last completion, ${((last - first) / 1000).toFixed(2)} s)`);
  say(`  end-to-end latency (enqueue → completed): p50 ${pct(latencies, 0.5)} ms, p99 ${pct(latencies, 0.99)} ms, max ${latencies.at(-1)} ms`);
}

interface StandInProcess {
  readonly proc: ChildProcess;
  /** The project URL (`<ID>_SUPABASE_URL`), once it listens. */
  readonly url: Promise<string>;
  /** SIGTERM (SIGKILL after 5 s); the exit code. Idempotent. */
  stop(): Promise<number | null>;
}

/** The PostgREST stand-in in a child process (so its CPU is not the demo's), on a free loopback port. */
function startStandIn(databaseUrl: string, jwtSecret: string): StandInProcess {
  const proc = spawn(process.execPath, [STAND_IN], {
    env: { PATH: process.env.PATH ?? '', PGRST_DB_URI: databaseUrl, PGRST_JWT_SECRET: jwtSecret, PGRST_SERVER_HOST: '127.0.0.1', PGRST_SERVER_PORT: '0' },
    stdio: ['ignore', 'pipe', 'inherit'],
    // --keep: its own process group, as the workers (see main).
    detached: KEEP,
  });
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  const url = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the PostgREST stand-in did not listen within 20 s')), 20_000);
    let out = '';
    // (the listener stays: whatever it prints later is read and dropped, so its pipe never fills)
    proc.stdout!.on('data', (chunk: Buffer) => {
      if (out.includes('\n')) return;
      out += chunk.toString();
      const line = out.split('\n', 2);
      if (line.length < 2) return;
      clearTimeout(timer);
      try {
        resolve(new URL((JSON.parse(line[0]!) as { url: string }).url).origin);
      } catch {
        reject(new Error(`the PostgREST stand-in printed ${JSON.stringify(line[0]!.slice(0, 200))}, not its URL`));
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`the PostgREST stand-in exited with code ${code} before it listened (see its log above)`));
    });
  });
  url.catch(() => {}); // the caller awaits it; a failure before that is reported there
  let stopping: Promise<number | null> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    })());
  return { proc, url, stop };
}

async function waitReady(port: number, proc: ChildProcess): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`worker exited with code ${proc.exitCode} before it was ready (see its log above)`);
    try {
      if ((await fetch(`http://127.0.0.1:${port}/ready`)).status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`worker on port ${port} not ready after 20 s`);
}

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

/** A one-line progress bar on a TTY; every 10 % as a plain line otherwise. */
function progress(total: number) {
  const tty = process.stdout.isTTY;
  let lastDecile = -1;
  let lastShown = -1;
  const t0 = Date.now();
  return (enqueued: number, done: number, failed: number, final = false) => {
    const frac = (done + failed) / total;
    const rate = ((done + failed) / Math.max(1, Date.now() - t0)) * 1000;
    const width = 30;
    const filled = Math.round(frac * width);
    const line = `  [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${done + failed}/${total} done, ${enqueued} enqueued, ${rate.toFixed(0)} jobs/s`;
    if (readerGone) return;
    if (tty) {
      process.stdout.write(`\r${line}${final ? '\n' : ''}`);
    } else {
      const decile = Math.floor(frac * 10);
      // (the final call repeats the 100 % line only when the last line shown was short of it)
      if (decile !== lastDecile || (final && lastShown !== done + failed)) {
        lastDecile = decile;
        lastShown = done + failed;
        say(line);
      }
    }
  };
}

main().catch((err: unknown) => {
  console.error(`\ndemo failed: ${(err as Error).message}`);
  process.exitCode = 1;
});

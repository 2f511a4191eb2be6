/**
 * `npm run demo`: the whole product on this machine, end to end.
 *
 * Starts a local Redis and Postgres (unless REDIS_URL / LENSFLEET_DEMO_ADMIN_URL point at
 * servers), creates demo tenant databases, runs worker processes (the same entry point as the
 * Procfile), enqueues lens queries across tenants and lenses with a progress bar, then prints a
 * result sample, per-tenant pool stats, throughput and latency, and an excerpt of /metrics.
 * Cleans up after itself (servers, temp dirs, demo databases it created).
 *
 * Options: --jobs N (2000) --workers N (2) --tenants N (3) --concurrency N (8)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Job } from 'bullmq';
import { SignJWT } from 'jose';
import { createLensQueue, createLensQueueEvents, enqueueMany, run, type LensJob } from '../queues/producer.js';
import type { LensRequest, LensResult } from '../queues/contract.js';
import { createTenantDatabase, demoUserId, dropTenantDatabase, type TenantDatabase } from '../dev/local/tenant-db.js';
import { ensureSystemPackages, freePort, startPostgres, startRedis, type LocalPostgres, type LocalRedis } from '../dev/local/servers.js';
import type { PoolStats } from '../src/pool/tenant-pool.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const WORKER = path.join(ROOT, 'dist/workers/lens-worker.js');

const USAGE = 'usage: npm run demo -- [--jobs N] [--workers N] [--tenants N] [--concurrency N]';
// Exit codes: 0 every job completed, 1 a job failed or the demo failed, 2 bad options.
const opts = (() => {
  try {
    return parseArgs({
      options: {
        jobs: { type: 'string', default: '2000' },
        workers: { type: 'string', default: '2' },
        tenants: { type: 'string', default: '3' },
        concurrency: { type: 'string', default: '8' },
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

function positive(name: keyof typeof opts): number {
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

const say = (line = '') => process.stdout.write(`${line}\n`);
const step = (line: string) => say(`\n▸ ${line}`);

async function main(): Promise<void> {
  const started = Date.now();
  let redis: LocalRedis | undefined;
  let postgres: LocalPostgres | undefined;
  const workers: { proc: ChildProcess; port: number; exited: Promise<number | null> }[] = [];
  let tenantDbs: TenantDatabase[] = [];
  let adminUrl = process.env.LENSFLEET_DEMO_ADMIN_URL;
  const cleanup = async () => {
    step('cleaning up');
    for (const w of workers) if (w.proc.exitCode === null) w.proc.kill('SIGTERM');
    const codes = await Promise.all(workers.map((w) => w.exited));
    say(`  workers drained and exited with ${codes.map(String).join(', ')}`);
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

    step(`${TENANT_COUNT} demo tenants (one database and one read-only role each)`);
    const ids = Array.from({ length: TENANT_COUNT }, (_, i) => `yTEST_YACHT_${String(i + 1).padStart(3, '0')}`);
    tenantDbs = await Promise.all(ids.map((id) => createTenantDatabase(adminUrl!, id, { rows: 60 })));
    for (const t of tenantDbs) say(`  ${t.tenant.padEnd(16)} database ${t.database}, role ${t.role}`);

    step(`${WORKERS} worker processes (node dist/workers/lens-worker.js, concurrency ${CONCURRENCY})`);
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '',
      REDIS_URL: redisUrl,
      LENSFLEET_QUEUE: 'lens-queries-demo',
      LENSFLEET_TENANTS: ids.join(','),
      LENSFLEET_CONCURRENCY: String(CONCURRENCY),
      LENSFLEET_WARM_TENANTS: '*',
      LENSFLEET_METRICS_HOST: '127.0.0.1',
      LOG_LEVEL: 'warn',
    };
    for (const t of tenantDbs) env[`${t.tenant}_DATABASE_URL`] = t.databaseUrl;
    // Each tenant verifies its own users' tokens (HS256 with its own secret, as a Supabase project does).
    const jwtSecrets = new Map(ids.map((id) => [id, randomBytes(32).toString('base64url')]));
    for (const [id, secret] of jwtSecrets) env[`${id}_JWT_SECRET`] = secret;
    for (let i = 0; i < WORKERS; i++) {
      const port = await freePort();
      const proc = spawn(process.execPath, [WORKER], { env: { ...env, PORT: String(port) }, stdio: ['ignore', 'inherit', 'inherit'] });
      const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
      workers.push({ proc, port, exited });
    }
    await Promise.all(workers.map((w) => waitReady(w.port, w.proc)));
    for (const w of workers) say(`  pid ${w.proc.pid}: http://127.0.0.1:${w.port}/metrics /health /ready /pools`);

    step(`enqueue ${JOBS} lens queries across ${TENANT_COUNT} tenants × ${LENS_MIX.length} lens calls`);
    const connection = { url: redisUrl };
    const queue = createLensQueue({ connection, name: env.LENSFLEET_QUEUE! });
    await queue.obliterate({ force: true }).catch(() => {});
    // (from the stream's last event, not `$`: a completion between waitUntilReady and the first
    // read would otherwise never be counted)
    const events = await createLensQueueEvents(queue, connection);
    await events.waitUntilReady();
    let completed = 0;
    let failed = 0;
    let enqueued = 0;
    const bar = progress(JOBS);
    events.on('completed', () => {
      completed++;
      bar(enqueued, completed, failed);
    });
    events.on('failed', ({ failedReason }) => {
      failed++;
      say(`\n  job failed: ${failedReason}`);
    });
    const reqs: LensRequest[] = Array.from({ length: JOBS }, (_, i) => {
      const [lens, params] = LENS_MIX[i % LENS_MIX.length]!;
      return { tenant: ids[Math.floor(i / LENS_MIX.length) % ids.length]!, lens, params };
    });
    const t0 = Date.now();
    const jobs: LensJob[] = [];
    for (let i = 0; i < reqs.length; i += 250) {
      jobs.push(...(await enqueueMany(queue, reqs.slice(i, i + 250))));
      enqueued = jobs.length;
      bar(enqueued, completed, failed);
    }
    while (completed + failed < JOBS) {
      await new Promise((r) => setTimeout(r, 50));
      if (Date.now() - t0 > 120_000) throw new Error(`only ${completed + failed}/${JOBS} jobs finished after 120 s`);
    }
    bar(enqueued, completed, failed, true);

    step('results');
    const finished = (await Promise.all(jobs.map((j) => Job.fromId<LensRequest, LensResult>(queue, j.id!)))).filter(
      (j): j is Job<LensRequest, LensResult> => !!j,
    );
    const latencies = finished
      .filter((j) => j.finishedOn)
      .map((j) => j.finishedOn! - j.timestamp)
      .sort((a, b) => a - b);
    const first = Math.min(...finished.map((j) => j.timestamp));
    const last = Math.max(...finished.map((j) => j.finishedOn ?? 0));
    const sample = finished.find((j) => j.returnvalue?.lens === 'work_orders.open')?.returnvalue;
    if (sample) {
      say(`  sample result: ${sample.lens} for ${sample.tenant}: ${sample.rowCount} rows in ${sample.durationMs.toFixed(2)} ms`);
      for (const row of sample.rows.slice(0, 3)) say(`    ${JSON.stringify(row)}`);
    }
    say(`  completed ${completed}, failed ${failed}`);
    say(`  throughput ${((completed / (last - first)) * 1000).toFixed(0)} jobs/s (first enqueue → last completion, ${((last - first) / 1000).toFixed(2)} s)`);
    say(`  end-to-end latency (enqueue → completed): p50 ${pct(latencies, 0.5)} ms, p99 ${pct(latencies, 0.99)} ms, max ${latencies.at(-1)} ms`);

    step(`per-user identity: the same lens for two users of ${ids[0]} and for the service (row-level security, owner_id = auth.uid())`);
    {
      // The drain's counters are final: the refused job below must not count as a demo failure.
      events.removeAllListeners('completed');
      events.removeAllListeners('failed');
      const tenant = ids[0]!;
      const mint = (forTenant: string, n: number) =>
        new SignJWT({ sub: demoUserId(forTenant, n), role: 'authenticated' })
          .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
          .setIssuedAt()
          .setExpirationTime('10m')
          .sign(new TextEncoder().encode(jwtSecrets.get(forTenant)!));
      const who = [
        { label: `user 1 (${demoUserId(tenant, 1).slice(0, 8)}…)`, auth: { jwt: await mint(tenant, 1) } },
        { label: `user 2 (${demoUserId(tenant, 2).slice(0, 8)}…)`, auth: { jwt: await mint(tenant, 2) } },
        { label: 'service (no token)', auth: undefined },
      ];
      for (const w of who) {
        const r = await run(queue, events, { tenant, lens: 'receiving.recent', params: { limit: 200 }, ...(w.auth ? { auth: w.auth } : {}) });
        const refs = r.rows.map((row) => String(row.reference)).sort();
        say(`  ${w.label.padEnd(22)} ${String(r.rowCount).padStart(3)} rows: ${refs.slice(0, 4).join(', ')}${refs.length > 4 ? ', …' : ''}`);
      }
      // A token of another tenant is refused before any connection is taken.
      const foreign = await run(queue, events, { tenant, lens: 'receiving.recent', params: { limit: 5 }, auth: { jwt: await mint(ids[1] ?? tenant, 1) } }).then(
        () => 'completed (unexpected)',
        (err: unknown) => (err as Error).message,
      );
      say(`  a token of ${ids[1] ?? tenant} sent for ${tenant}: ${foreign.split(':')[0]} (${ids[1] ? 'refused' : 'same tenant'})`);
      say('  (each finished job keeps only a hash of its token in Redis; docs: README "Per-user identity", docs/IDENTITY.md)');
    }

    step(
      `pool stats per worker and tenant (GET /pools; process budget ${2 * CONCURRENCY} connections, so tenants share it: "evicted" = an idle connection closed for another tenant)`,
    );
    say(
      `  ${'worker'.padEnd(8)} ${'tenant'.padEnd(16)} ${'size'.padStart(4)} ${'inUse'.padStart(5)} ${'idle'.padStart(4)} ${'max'.padStart(4)} ${'min'.padStart(4)} ${'requests'.padStart(8)} ${'wait ms'.padStart(8)} ${'timeouts'.padStart(8)} ${'opened'.padStart(6)}  closed (reason)`,
    );
    for (const w of workers) {
      const { pools } = (await (await fetch(`http://127.0.0.1:${w.port}/pools`)).json()) as { pools: PoolStats[] };
      for (const p of pools) {
        say(
          `  ${String(w.proc.pid).padEnd(8)} ${p.tenant.padEnd(16)} ${String(p.size).padStart(4)} ${String(p.inUse).padStart(5)} ${String(p.idle).padStart(4)} ${String(p.max).padStart(4)} ${String(p.min).padStart(4)} ${String(p.requests_total).padStart(8)} ${String(p.requests_wait_ms_total).padStart(8)} ${String(p.acquire_timeouts_total).padStart(8)} ${String(p.connections_opened_total).padStart(6)}  ${
            Object.entries(p.connections_closed_total)
              .map(([r, n]) => `${n} ${r}`)
              .join(', ') || '-'
          }`,
        );
      }
    }

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
    await queue.obliterate({ force: true }).catch(() => {});
    await queue.close();
    if (failed > 0) process.exitCode = 1;
  } finally {
    await cleanup();
    say(`\ndone in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }
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

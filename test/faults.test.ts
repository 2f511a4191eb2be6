/**
 * Faults, each with a ledger (issue 14; test/support/ledger.ts): jobs with known ids over two
 * tenants go to two worker processes, a fault is injected mid-run, and after recovery every id
 * must have ended — completed, or failed with a reason — with none lost (and none failed: each
 * fault here is one a retry gets past), each tenant's connections within workers × concurrency,
 * no session left `idle in transaction`, and no worker process dead that was not meant to be.
 * Attempts beyond the first are reported (most failed to connect and never ran the lens).
 *
 * Each fault gets its own Redis and Postgres (a restart must not disturb the other test files),
 * its own queue and its own workers. Sizes are small for CI; `npm run test:faults` runs this file
 * alone with LENSFLEET_FAULT_SCALE (e.g. 10) multiplying the jobs and outages.
 */
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPostgres, startRedis, type LocalPostgres, type LocalRedis } from '../dev/local/servers.js';
import { createTenantDatabase, type TenantDatabase } from '../dev/local/tenant-db.js';
import type { LensJobData } from '../queues/contract.js';
import { FleetKeys } from '../src/fleet/keys.js';
import { readMembers } from '../src/fleet/membership.js';
import { Redis } from 'ioredis';
import { admin, killWorker, ROOT, sampleDatabases, sleep, spawnWorker, uniqueId, waitFor, type ChildWorker } from './support/harness.js';
import { idleInTransaction, JobLedger, KEEP_WORKER_ENV, ledgerTable, record, switchProxy } from './support/ledger.js';

const SCALE = Math.max(1, Number(process.env.LENSFLEET_FAULT_SCALE ?? 1));
const WORKERS = 2;
const CONCURRENCY = 8;
const JOBS = 600 * SCALE;
const JOB_SECONDS = 0.02;
const PROCFILE_JOBS = 2000 * SCALE;
/** How long one tenant's database stays silent: 30 s at LENSFLEET_FAULT_SCALE > 1, as the issue asks. */
const OUTAGE_MS = SCALE > 1 ? 30_000 : 6000;

let redis: LocalRedis;
let postgres: LocalPostgres;
let dbs: TenantDatabase[];

beforeAll(async () => {
  [redis, postgres] = await Promise.all([startRedis({ appendOnly: true }), startPostgres({ fsync: false, maxConnections: 100 })]);
  dbs = await Promise.all(['yFaultA', 'yFaultB'].map((id) => createTenantDatabase(postgres.adminUrl(), uniqueId(id), { rows: 5 })));
}, 120_000);

afterAll(async () => {
  console.log(`[ledger] table\n${ledgerTable()}`);
  await Promise.allSettled([redis?.stop(), postgres?.stop()]);
}, 60_000);

interface Run {
  readonly ledger: JobLedger;
  readonly workers: ChildWorker[];
  readonly env: Record<string, string>;
}

/** Workers on a fresh queue, the jobs enqueued, and the run under way (a quarter done). */
async function start(
  name: string,
  extraEnv: Record<string, string> = {},
  jobs: (i: number) => LensJobData = (i) => ({ v: 1, tenant: dbs[i % dbs.length]!.tenant, lens: 'test.sleep', params: { seconds: JOB_SECONDS } }),
  count = JOBS,
  urls: Readonly<Record<string, string>> = {},
): Promise<Run> {
  const queue = uniqueId(`q_${name}`);
  const env: Record<string, string> = {
    REDIS_URL: redis.url,
    LENSFLEET_QUEUE: queue,
    LENSFLEET_TENANTS: dbs.map((d) => d.tenant).join(','),
    ...Object.fromEntries(dbs.map((d) => [`${d.tenant}_DATABASE_URL`, urls[d.tenant] ?? d.databaseUrl])),
    LENSFLEET_CONCURRENCY: String(CONCURRENCY),
    LENSFLEET_POOL_MIN_SIZE: '1',
    // Retries close together: a fault's failed attempts come back within its outage.
    LENSFLEET_RETRY_BACKOFF_MS: '250',
    LENSFLEET_JOB_LOCK_MS: '4000',
    LENSFLEET_STALLED_CHECK_MS: '1000',
    LOG_LEVEL: 'warn',
    ...KEEP_WORKER_ENV,
    ...extraEnv,
  };
  const workers = await Promise.all(Array.from({ length: WORKERS }, () => spawnWorker(env)));
  const ledger = await JobLedger.open(redis.url, queue);
  await ledger.add(Array.from({ length: count }, (_, i) => jobs(i)));
  await waitFor('a quarter of the jobs done', () => ledger.completedCount >= count / 4, 60_000, 20);
  return { ledger, workers, env };
}

/** Let it recover, account for every id, check what was left behind, record the row. */
async function finish(
  run: Run,
  fault: string,
  at: { recoveredFrom: number; activeAtFault: number },
  sampler: { stop(): Promise<number> },
  opts: { expectAlive?: ChildWorker[]; note?: string; allowFailed?: boolean } = {},
): Promise<void> {
  try {
    await run.ledger.settle(120_000 * SCALE);
    const maxConnections = await sampler.stop();
    const account = await run.ledger.account();
    const idle = await idleInTransaction(
      postgres.adminUrl(),
      dbs.map((d) => d.database),
    );
    const row = {
      fault,
      ...account,
      activeAtFault: at.activeAtFault,
      maxConnections,
      bound: WORKERS * CONCURRENCY,
      recoveryMs: run.ledger.recoveryAfter(at.recoveredFrom),
      idleInTransaction: idle,
      ...(opts.note ? { note: opts.note } : {}),
    };
    record(row);
    expect(account.lost, 'jobs lost').toBe(0);
    expect(account.completed + Object.values(account.failed).reduce((a, b) => a + b, 0)).toBe(account.jobs);
    // Retried, never failed for good: every fault here is one a retry gets past (the control run
    // without breakers is allowed to burn its attempts: that is what it shows).
    if (!opts.allowFailed) expect(account.failed).toEqual({});
    expect(maxConnections).toBeLessThanOrEqual(WORKERS * CONCURRENCY);
    expect(idle).toBe(0);
    for (const w of opts.expectAlive ?? run.workers) expect(w.proc.exitCode, `a worker exited:\n${w.output().slice(-1500)}`).toBeNull();
  } finally {
    await Promise.all(run.workers.map((w) => killWorker(w)));
    await run.ledger.close();
  }
}

function adminQuery<T extends pg.QueryResultRow>(sql: string, values: unknown[] = []): Promise<pg.QueryResult<T>> {
  return admin((c) => c.query<T>(sql, values), postgres.adminUrl());
}

/**
 * One fault in the middle of a run: `inject` does it (given the run and the time since it began)
 * and says what to note; recovery is counted from when it returns.
 */
async function underFault(
  name: string,
  fault: string,
  inject: (run: Run, elapsed: () => number) => Promise<{ note: string; expectAlive?: ChildWorker[] }>,
): Promise<void> {
  const sampler = sampleDatabases(
    postgres.adminUrl(),
    dbs.map((d) => d.database),
  );
  const run = await start(name);
  const activeAtFault = await run.ledger.queue.getActiveCount();
  const injectedAt = performance.now();
  const { note, expectAlive } = await inject(run, () => Math.round(performance.now() - injectedAt));
  await finish(run, fault, { recoveredFrom: performance.now(), activeAtFault }, sampler, { note, ...(expectAlive ? { expectAlive } : {}) });
}

describe('fault ledger', () => {
  it(
    'pg_terminate_backend of every connection of one tenant, mid-run',
    () =>
      underFault('terminate', 'pg_terminate_backend (one tenant, all its connections)', async () => {
        const r = await adminQuery<{ n: string }>('SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity WHERE datname = $1', [dbs[0]!.database]);
        return { note: `${r.rows[0]?.n} backends terminated` };
      }),
    180_000,
  );

  it(
    'Postgres restarted (fast shutdown) mid-run',
    () =>
      underFault('pgrestart', 'Postgres restart', async (_run, elapsed) => {
        await postgres.restart();
        return { note: `server down ${elapsed()} ms` };
      }),
    180_000,
  );

  it(
    'the connection limit reached (SQLSTATE 53300) for a while: retried, completed once capacity returns',
    () =>
      underFault('limit', 'connection limit (53300)', async (_run, elapsed) => {
        const role = dbs[0]!.role;
        // One connection allowed, and the tenant's open ones ended: every other connect gets 53300.
        await adminQuery(`ALTER ROLE "${role}" CONNECTION LIMIT 1`);
        await adminQuery('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1', [dbs[0]!.database]);
        await sleep(1500 * SCALE);
        await adminQuery(`ALTER ROLE "${role}" CONNECTION LIMIT 200`);
        return { note: `limit 1 for ${elapsed()} ms` };
      }),
    180_000,
  );

  it(
    'Redis restarted (AOF, fsync always) mid-run',
    () =>
      underFault('redisrestart', 'Redis restart (AOF)', async (_run, elapsed) => {
        await redis.restart();
        return { note: `Redis down ${elapsed()} ms` };
      }),
    180_000,
  );

  it(
    'SIGTERM to every worker mid-run (a rolling restart): active jobs finish, exit 0, new workers finish the rest',
    () =>
      underFault('sigterm', 'SIGTERM to every worker, then new ones', async (run, elapsed) => {
        const old = [...run.workers];
        for (const w of old) w.proc.kill('SIGTERM');
        const exits = await Promise.all(old.map((w) => w.exited));
        expect(exits.map((e) => e.code)).toEqual(old.map(() => 0));
        const replacements = await Promise.all(old.map(() => spawnWorker(run.env)));
        run.workers.push(...replacements);
        return { expectAlive: replacements, note: `old workers exited 0 after ${elapsed()} ms` };
      }),
    180_000,
  );

  it(
    'kill -9 of one worker with jobs active: its jobs run on the other (lock + stalled check)',
    () =>
      underFault('kill9', 'kill -9 of one worker', async (run) => {
        const victim = run.workers[0]!;
        victim.proc.kill('SIGKILL');
        await victim.exited;
        return { expectAlive: run.workers.slice(1), note: 'lock 4 s, stalled check 1 s' };
      }),
    180_000,
  );

  for (const breakers of [true, false]) {
    it(`one tenant's database silent for ${OUTAGE_MS / 1000} s ${breakers ? 'with' : 'without'} circuit breakers: the other tenant's throughput during it`, async () => {
      // Tenant A through a proxy that goes silent (connects hang until their timeout); B direct.
      const proxy = await switchProxy(postgres.port);
      const a = dbs[0]!;
      const b = dbs[1]!;
      const viaProxy = Object.assign(new URL(a.databaseUrl), { port: String(proxy.port) }).toString();
      const sampler = sampleDatabases(
        postgres.adminUrl(),
        dbs.map((d) => d.database),
      );
      // One A job to three of B's, 50 ms each: B keeps a backlog through the outage.
      const total = 4000 * SCALE;
      const run = await start(
        breakers ? 'silent_breaker' : 'silent_nobreaker',
        {
          LENSFLEET_POOL_CONNECT_TIMEOUT_MS: '2000',
          ...(breakers ? { LENSFLEET_BREAKER_COOLDOWN_MS: '1000' } : { LENSFLEET_BREAKER_FAILURES: '0', LENSFLEET_DEFER_WHEN_BUSY: 'off' }),
        },
        (i) => ({ v: 1, tenant: i % 4 === 0 ? a.tenant : b.tenant, lens: 'test.sleep', params: { seconds: 0.05 } }),
        total,
        { [a.tenant]: viaProxy },
      );
      try {
        const onlyB = new Set([b.tenant]);
        const before = performance.now();
        await sleep(1500);
        const activeAtFault = await run.ledger.queue.getActiveCount();
        const injectedAt = performance.now();
        proxy.blackhole(true);
        await sleep(OUTAGE_MS);
        proxy.blackhole(false);
        const restoredAt = performance.now();
        const bBefore = run.ledger.throughput(before, injectedAt, onlyB);
        const bDuring = run.ledger.throughput(injectedAt, restoredAt, onlyB);
        const ratio = bDuring / Math.max(1e-9, bBefore);
        await finish(
          run,
          `tenant A silent ${OUTAGE_MS / 1000} s, ${breakers ? 'breakers on' : 'breakers and deferral off'}`,
          { recoveredFrom: restoredAt, activeAtFault },
          sampler,
          {
            allowFailed: !breakers,
            note: `B's throughput ${Math.round(bBefore)} jobs/s before, ${Math.round(bDuring)} during (${Math.round(ratio * 100)} %)`,
          },
        );
        // With breakers the other tenant keeps most of its throughput (the breaker opens after 5
        // connect timeouts of 2 s: the first seconds of the outage still cost slots).
        if (breakers) expect(ratio).toBeGreaterThan(0.5);
      } finally {
        await proxy.close();
      }
    }, 300_000);
  }

  it(
    `three workers from the Procfile (lensfleet procfile --scale worker=3), ${PROCFILE_JOBS} jobs over 20 tenants: one worker killed and Postgres restarted along the way`,
    async () => {
      const many = await Promise.all(Array.from({ length: 20 }, (_, i) => createTenantDatabase(postgres.adminUrl(), uniqueId(`yProc${i}`), { rows: 5 })));
      const queue = uniqueId('q_procfile');
      const env: Record<string, string> = {
        PATH: process.env.PATH ?? '',
        REDIS_URL: redis.url,
        LENSFLEET_QUEUE: queue,
        LENSFLEET_TENANTS: many.map((d) => d.tenant).join(','),
        ...Object.fromEntries(many.map((d) => [`${d.tenant}_DATABASE_URL`, d.databaseUrl])),
        LENSFLEET_CONCURRENCY: String(CONCURRENCY),
        LENSFLEET_POOL_MIN_SIZE: '1',
        LENSFLEET_RETRY_BACKOFF_MS: '250',
        LENSFLEET_JOB_LOCK_MS: '4000',
        LENSFLEET_STALLED_CHECK_MS: '1000',
        LENSFLEET_METRICS_HOST: '127.0.0.1',
        PORT: '0',
        LOG_LEVEL: 'warn',
        ...KEEP_WORKER_ENV,
      };
      // The Procfile's queue UI (ui:) has no part in this test.
      const launcher = spawn(process.execPath, ['dist/cli/lensfleet.js', 'procfile', '--scale', 'worker=3,ui=0'], {
        cwd: ROOT,
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      launcher.stdout.on('data', (d: Buffer) => (out += d.toString()));
      launcher.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const launcherExit = new Promise<number | null>((resolve) => launcher.on('exit', (code) => resolve(code)));
      const keys = new FleetKeys(queue);
      const r = new Redis(redis.url);
      const sampler = sampleDatabases(
        postgres.adminUrl(),
        many.map((d) => d.database),
      );
      const ledger = await JobLedger.open(redis.url, queue);
      try {
        const members = await waitFor(
          'three workers in the fleet',
          async () => {
            const m = (await readMembers(r, keys)).members;
            return m.length === 3 ? m : undefined;
          },
          60_000,
          100,
        );
        await ledger.add(
          Array.from({ length: PROCFILE_JOBS }, (_, i) => ({
            v: 1 as const,
            tenant: many[i % many.length]!.tenant,
            lens: 'receiving.recent',
            params: { limit: 3 },
          })),
        );
        const enqueuedAt = performance.now();
        await waitFor('a quarter done', () => ledger.completedCount >= PROCFILE_JOBS / 4, 120_000 * SCALE, 20);
        const activeAtFault = await ledger.queue.getActiveCount();
        process.kill(members[0]!.pid, 'SIGKILL');
        await waitFor('half done', () => ledger.completedCount >= PROCFILE_JOBS / 2, 120_000 * SCALE, 20);
        const restartAt = performance.now();
        await postgres.restart();
        const restartedAt = performance.now();
        await ledger.settle(180_000 * SCALE);
        const maxConnections = await sampler.stop();
        const account = await ledger.account();
        const idle = await idleInTransaction(
          postgres.adminUrl(),
          many.map((d) => d.database),
        );
        const survivors = members.slice(1).map((m) => m.pid);
        const alive = survivors.filter((pid) => {
          try {
            process.kill(pid, 0);
            return true;
          } catch {
            return false;
          }
        });
        record({
          fault: 'Procfile, 3 workers, 20 tenants: kill -9 of one, then Postgres restart',
          ...account,
          activeAtFault,
          maxConnections,
          bound: 3 * CONCURRENCY,
          recoveryMs: ledger.recoveryAfter(restartedAt),
          idleInTransaction: idle,
          note: `Postgres down ${Math.round(restartedAt - restartAt)} ms; ${Math.round((PROCFILE_JOBS * 1000) / (performance.now() - enqueuedAt))} jobs/s overall`,
        });
        expect(account.lost).toBe(0);
        expect(account.failed).toEqual({});
        expect(maxConnections).toBeLessThanOrEqual(3 * CONCURRENCY);
        expect(idle).toBe(0);
        expect(alive).toEqual(survivors);
      } finally {
        await sampler.stop();
        r.disconnect();
        await ledger.close();
        launcher.kill('SIGTERM');
      }
      // The survivors drain and exit 0; the killed one makes the launcher's exit 1, and it says which.
      expect(await launcherExit).toBe(1);
      expect(out).toMatch(/worker\.\d exited on SIGKILL/);
      expect(out.match(/worker\.\d exited with code 0/g)).toHaveLength(2);
    },
    300_000 * SCALE,
  );
});

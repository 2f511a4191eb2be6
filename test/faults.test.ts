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
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPostgres, startRedis, type LocalPostgres, type LocalRedis } from '../dev/local/servers.js';
import { createTenantDatabase, type TenantDatabase } from '../dev/local/tenant-db.js';
import { killWorker, sleep, spawnWorker, uniqueId, waitFor, type ChildWorker } from './support/harness.js';
import { idleInTransaction, JobLedger, ledgerTable, record, sampleDatabases } from './support/ledger.js';

const SCALE = Math.max(1, Number(process.env.LENSFLEET_FAULT_SCALE ?? 1));
const WORKERS = 2;
const CONCURRENCY = 8;
const JOBS = 600 * SCALE;
const JOB_SECONDS = 0.02;

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
async function start(name: string, extraEnv: Record<string, string> = {}): Promise<Run> {
  const queue = uniqueId(`q_${name}`);
  const env: Record<string, string> = {
    REDIS_URL: redis.url,
    LENSFLEET_QUEUE: queue,
    LENSFLEET_TENANTS: dbs.map((d) => d.tenant).join(','),
    ...Object.fromEntries(dbs.map((d) => [`${d.tenant}_DATABASE_URL`, d.databaseUrl])),
    LENSFLEET_CONCURRENCY: String(CONCURRENCY),
    LENSFLEET_POOL_MIN_SIZE: '1',
    // Retries close together: a fault's failed attempts come back within its outage.
    LENSFLEET_RETRY_BACKOFF_MS: '250',
    LENSFLEET_JOB_LOCK_MS: '4000',
    LENSFLEET_STALLED_CHECK_MS: '1000',
    LOG_LEVEL: 'warn',
    ...extraEnv,
  };
  const workers = await Promise.all(Array.from({ length: WORKERS }, () => spawnWorker(env)));
  const ledger = await JobLedger.open(redis.url, queue);
  await ledger.add(
    Array.from({ length: JOBS }, (_, i) => ({ v: 1 as const, tenant: dbs[i % dbs.length]!.tenant, lens: 'test.sleep', params: { seconds: JOB_SECONDS } })),
  );
  await waitFor('a quarter of the jobs done', () => ledger.completedAt.length >= JOBS / 4, 60_000, 20);
  return { ledger, workers, env };
}

/** Let it recover, account for every id, check what was left behind, record the row. */
async function finish(
  run: Run,
  fault: string,
  at: { injectedAt: number; recoveredFrom: number; activeAtFault: number },
  sampler: { stop(): Promise<number> },
  opts: { expectAlive?: ChildWorker[]; note?: string } = {},
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
    // Retried, never failed for good: every fault here is one a retry gets past.
    expect(account.failed).toEqual({});
    expect(maxConnections).toBeLessThanOrEqual(WORKERS * CONCURRENCY);
    expect(idle).toBe(0);
    for (const w of opts.expectAlive ?? run.workers) expect(w.proc.exitCode, `a worker exited:\n${w.output().slice(-1500)}`).toBeNull();
  } finally {
    await Promise.all(run.workers.map((w) => killWorker(w)));
    await run.ledger.close();
  }
}

async function admin<T extends pg.QueryResultRow>(sql: string, values: unknown[] = []): Promise<pg.QueryResult<T>> {
  const c = new pg.Client({ connectionString: postgres.adminUrl() });
  await c.connect();
  try {
    return await c.query<T>(sql, values);
  } finally {
    await c.end();
  }
}

describe('fault ledger', () => {
  it('pg_terminate_backend of every connection of one tenant, mid-run', async () => {
    const sampler = sampleDatabases(
      postgres.adminUrl(),
      dbs.map((d) => d.database),
    );
    const run = await start('terminate');
    const activeAtFault = await run.ledger.queue.getActiveCount();
    const injectedAt = performance.now();
    const r = await admin<{ n: string }>('SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity WHERE datname = $1', [dbs[0]!.database]);
    await finish(run, 'pg_terminate_backend (one tenant, all its connections)', { injectedAt, recoveredFrom: performance.now(), activeAtFault }, sampler, {
      note: `${r.rows[0]?.n} backends terminated`,
    });
  }, 180_000);

  it('Postgres restarted (fast shutdown) mid-run', async () => {
    const sampler = sampleDatabases(
      postgres.adminUrl(),
      dbs.map((d) => d.database),
    );
    const run = await start('pgrestart');
    const activeAtFault = await run.ledger.queue.getActiveCount();
    const injectedAt = performance.now();
    await postgres.restart();
    const restartedAt = performance.now();
    await finish(run, 'Postgres restart', { injectedAt, recoveredFrom: restartedAt, activeAtFault }, sampler, {
      note: `server down ${Math.round(restartedAt - injectedAt)} ms`,
    });
  }, 180_000);

  it('the connection limit reached (SQLSTATE 53300) for a while: retried, completed once capacity returns', async () => {
    const sampler = sampleDatabases(
      postgres.adminUrl(),
      dbs.map((d) => d.database),
    );
    const run = await start('limit');
    const role = dbs[0]!.role;
    const activeAtFault = await run.ledger.queue.getActiveCount();
    const injectedAt = performance.now();
    // One connection allowed, and the tenant's open ones ended: every other connect gets 53300.
    await admin(`ALTER ROLE "${role}" CONNECTION LIMIT 1`);
    await admin('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1', [dbs[0]!.database]);
    await sleep(1500 * SCALE);
    await admin(`ALTER ROLE "${role}" CONNECTION LIMIT 200`);
    const restoredAt = performance.now();
    await finish(run, 'connection limit (53300)', { injectedAt, recoveredFrom: restoredAt, activeAtFault }, sampler, {
      note: `limit 1 for ${Math.round(restoredAt - injectedAt)} ms`,
    });
  }, 180_000);

  it('Redis restarted (AOF, fsync always) mid-run', async () => {
    const sampler = sampleDatabases(
      postgres.adminUrl(),
      dbs.map((d) => d.database),
    );
    const run = await start('redisrestart');
    const activeAtFault = await run.ledger.queue.getActiveCount();
    const injectedAt = performance.now();
    await redis.restart();
    const restartedAt = performance.now();
    await finish(run, 'Redis restart (AOF)', { injectedAt, recoveredFrom: restartedAt, activeAtFault }, sampler, {
      note: `Redis down ${Math.round(restartedAt - injectedAt)} ms`,
    });
  }, 180_000);

  it('SIGTERM to every worker mid-run (a rolling restart): active jobs finish, exit 0, new workers finish the rest', async () => {
    const sampler = sampleDatabases(
      postgres.adminUrl(),
      dbs.map((d) => d.database),
    );
    const run = await start('sigterm');
    const activeAtFault = await run.ledger.queue.getActiveCount();
    const injectedAt = performance.now();
    const old = [...run.workers];
    for (const w of old) w.proc.kill('SIGTERM');
    const exits = await Promise.all(old.map((w) => w.exited));
    expect(exits.map((e) => e.code)).toEqual(old.map(() => 0));
    const replacements = await Promise.all(old.map(() => spawnWorker(run.env)));
    run.workers.push(...replacements);
    const restartedAt = performance.now();
    await finish(run, 'SIGTERM to every worker, then new ones', { injectedAt, recoveredFrom: restartedAt, activeAtFault }, sampler, {
      expectAlive: replacements,
      note: `old workers exited 0 after ${Math.round(restartedAt - injectedAt)} ms`,
    });
  }, 180_000);

  it('kill -9 of one worker with jobs active: its jobs run on the other (lock + stalled check)', async () => {
    const sampler = sampleDatabases(
      postgres.adminUrl(),
      dbs.map((d) => d.database),
    );
    const run = await start('kill9');
    const victim = run.workers[0]!;
    const activeAtFault = await run.ledger.queue.getActiveCount();
    const injectedAt = performance.now();
    victim.proc.kill('SIGKILL');
    await victim.exited;
    await finish(run, 'kill -9 of one worker', { injectedAt, recoveredFrom: performance.now(), activeAtFault }, sampler, {
      expectAlive: run.workers.slice(1),
      note: 'lock 4 s, stalled check 1 s',
    });
  }, 180_000);
});

/**
 * Test harness: tenant databases on the run's Postgres, in-process worker services with a fresh
 * queue per test, child worker processes, and small polling helpers.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { type ConnectionOptions, QueueEvents } from 'bullmq';
import { Redis } from 'ioredis';
import pg from 'pg';
import pino, { type Logger } from 'pino';
import { inject } from 'vitest';
import { createLensQueue, type LensQueue } from '../../queues/producer.js';
import { DEFAULT_POOL_SETTINGS, loadWorkerConfig, type PoolSettings, type WorkerConfig } from '../../src/config.js';
import { type Lens, LensCatalog } from '../../src/lens.js';
import { maritimeLenses } from '../../src/lenses/maritime.js';
import { REDACT_PATHS } from '../../src/logger.js';
import { createTenantDatabase, dropTenantDatabase, type TenantDatabase } from '../../dev/local/tenant-db.js';
import { loadTenantDirectory, type TenantDirectory } from '../../src/tenants.js';
import { startWorkerService, type WorkerService } from '../../workers/service.js';
import { TenantPool, type PoolEvent } from '../../src/pool/tenant-pool.js';
import { Secret } from '../../src/secret.js';
import { spawnCaptured } from './process.js';
import { lenses as testLenses } from './test-lenses.js';

export { activeMutantEnv } from './process.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export const redisUrl = (): string => inject('redisUrl');
export const pgAdminUrl = (): string => inject('pgAdminUrl');

export function uniqueId(prefix: string): string {
  return `${prefix}_${randomBytes(4).toString('hex')}`;
}

/** Create seeded tenant databases; returns them with the env that configures a worker for them. */
export async function createTenants(ids: string[], rows = 40): Promise<{ dbs: TenantDatabase[]; env: Record<string, string>; drop(): Promise<void> }> {
  const dbs = await Promise.all(ids.map((id) => createTenantDatabase(pgAdminUrl(), id, { rows })));
  const env: Record<string, string> = { LENSFLEET_TENANTS: ids.join(',') };
  for (const d of dbs) env[`${d.tenant}_DATABASE_URL`] = d.databaseUrl;
  return { dbs, env, drop: () => Promise.all(ids.map((id) => dropTenantDatabase(pgAdminUrl(), id))).then(() => {}) };
}

/** Captures log lines in memory (JSON strings), with the production redaction paths. */
export class LogCapture {
  readonly lines: string[] = [];
  readonly logger: Logger;
  constructor(level = 'debug') {
    const lines = this.lines;
    const stream = new Writable({
      write(chunk, _enc, cb) {
        lines.push(...String(chunk).split('\n').filter(Boolean));
        cb();
      },
    });
    this.logger = pino({ level, redact: { paths: REDACT_PATHS, censor: '[REDACTED]' } }, stream);
  }
  text(): string {
    return this.lines.join('\n');
  }
  find(pred: (entry: Record<string, unknown>) => boolean): Record<string, unknown>[] {
    return this.lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter(pred);
  }
}

export interface TestWorkerOptions {
  /** Lenses added to the demo and test lenses. */
  lenses?: readonly Lens<unknown>[];
  env: Record<string, string>;
  concurrency?: number;
  pool?: Partial<PoolSettings>;
  queueName?: string;
  http?: boolean;
  extra?: Partial<WorkerConfig>;
  /** Worker settings as environment variables (read with loadWorkerConfig, like a worker process). */
  settings?: Record<string, string>;
  /**
   * The producer's connection (the returned queue and events), for a worker whose settings point
   * at another Redis (a Cluster, Sentinel); the caller closes a client it passes. @defaultValue the run's Redis
   */
  connection?: ConnectionOptions;
}

export interface TestWorker {
  service: WorkerService;
  queue: LensQueue;
  events: QueueEvents;
  queueName: string;
  logs: LogCapture;
  tenants: TenantDirectory;
  close(): Promise<void>;
}

/** An in-process worker service on a fresh queue, with the demo and test lenses. */
export async function startTestWorker(opts: TestWorkerOptions): Promise<TestWorker> {
  const queueName = opts.queueName ?? uniqueId('q');
  const base = loadWorkerConfig({
    REDIS_URL: redisUrl(),
    LENSFLEET_QUEUE: queueName,
    LENSFLEET_METRICS_PORT: '0',
    LENSFLEET_METRICS_HOST: '127.0.0.1',
    LOG_LEVEL: 'debug',
    ...opts.settings,
  });
  const config: WorkerConfig = Object.freeze({
    ...base,
    concurrency: opts.concurrency ?? base.concurrency,
    processMaxConnections: 2 * (opts.concurrency ?? base.concurrency),
    shutdownTimeoutMs: 10_000,
    pool: { ...base.pool, minSize: 0, ...opts.pool },
    ...opts.extra,
  });
  const tenants = loadTenantDirectory(config, opts.env);
  const catalog = new LensCatalog([...maritimeLenses, ...testLenses, ...(opts.lenses ?? [])]);
  const logs = new LogCapture();
  const service = await startWorkerService({ config, tenants, catalog, logger: logs.logger, http: opts.http ?? true });
  const connection = opts.connection ?? { url: redisUrl() };
  const queue = createLensQueue({ connection, name: queueName });
  const events = new QueueEvents(queueName, { connection, prefix: queue.opts.prefix });
  events.setMaxListeners(10_000); // one listener per job awaited with waitUntilFinished
  await events.waitUntilReady();
  let closing: Promise<void> | undefined;
  return {
    service,
    queue,
    events,
    queueName,
    logs,
    tenants,
    close() {
      closing ??= (async () => {
        await service.close();
        await events.close();
        await queue.obliterate({ force: true }).catch(() => {});
        await queue.close();
      })();
      return closing;
    },
  };
}

/** Count backends connected to a database (as the tenant's role sees it from outside). */
export async function countConnections(database: string): Promise<number> {
  const c = new pg.Client({ connectionString: pgAdminUrl() });
  await c.connect();
  try {
    const r = await c.query<{ n: string }>('SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 AND backend_type = $2', [database, 'client backend']);
    return Number(r.rows[0]?.n ?? 0);
  } finally {
    await c.end();
  }
}

/** Run `fn` on a fresh superuser connection (the test Postgres unless `url` says otherwise), closed after. */
export async function admin<T>(fn: (c: pg.Client) => Promise<T>, url = pgAdminUrl()): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

/** Sample connection counts of a database until stopped; returns the maximum seen. */
export function sampleConnections(database: string, everyMs = 15): { stop(): Promise<number> } {
  return sampleDatabases(pgAdminUrl(), [database], everyMs);
}

/** The most client connections to any one of these databases (a tenant's), sampled every `everyMs` until stopped. */
export function sampleDatabases(adminUrl: string, databases: readonly string[], everyMs = 20): { stop(): Promise<number> } {
  const admin = new pg.Client({ connectionString: adminUrl });
  admin.on('error', () => {});
  let max = 0;
  let running = true;
  const loop = (async () => {
    // The server may be restarting (a fault): reconnect and go on.
    let client: pg.Client | undefined = admin;
    await admin.connect().catch(() => (client = undefined));
    while (running) {
      try {
        if (client === undefined) {
          const c = new pg.Client({ connectionString: adminUrl });
          c.on('error', () => {});
          await c.connect();
          client = c;
        }
        const r = await client.query<{ n: string }>(
          "SELECT coalesce(max(n), 0) AS n FROM (SELECT count(*) AS n FROM pg_stat_activity WHERE datname = ANY($1) AND backend_type = 'client backend' GROUP BY datname) AS per_db",
          [databases],
        );
        max = Math.max(max, Number(r.rows[0]?.n ?? 0));
      } catch {
        await client?.end().catch(() => {});
        client = undefined;
      }
      await sleep(everyMs);
    }
    await client?.end().catch(() => {});
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return max;
    },
  };
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function waitFor<T>(what: string, fn: () => T | Promise<T>, timeoutMs = 20_000, everyMs = 50): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`);
}

export const WORKER_ENTRY = path.join(ROOT, 'dist/workers/lens-worker.js');
export const TEST_LENS_MODULE = path.join(ROOT, 'dist/test/support/test-lenses.js');

export interface ChildWorker {
  proc: ChildProcess;
  port: number;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Spawn a real worker process (compiled entry point) with the given environment. */
export async function spawnWorker(env: Record<string, string>): Promise<ChildWorker> {
  if (!existsSync(WORKER_ENTRY)) throw new Error(`${WORKER_ENTRY} is missing: run \`npm run build\` (npm test does) first`);
  const { freePort } = await import('../../dev/local/servers.js');
  const port = await freePort();
  const { proc, output, exited } = spawnCaptured(process.execPath, [WORKER_ENTRY], {
    REDIS_URL: redisUrl(),
    PORT: String(port),
    LENSFLEET_METRICS_HOST: '127.0.0.1',
    LENSFLEET_LENS_MODULES: TEST_LENS_MODULE,
    LOG_LEVEL: 'info',
    ...env,
  });
  await waitFor(`worker on :${port} to be ready (output: ${output().slice(-500)})`, async () => {
    if (proc.exitCode !== null) throw new Error(`worker exited with ${proc.exitCode}: ${output().slice(-2000)}`);
    const r = await fetch(`http://127.0.0.1:${port}/ready`);
    return r.status === 200;
  });
  return { proc, port, output, exited };
}

/** A Redis client for assertions (closed by the caller). */
export function redisClient(): Redis {
  return new Redis(redisUrl(), { maxRetriesPerRequest: null });
}

export { DEFAULT_POOL_SETTINGS };

/**
 * `pg_terminate_backend` the client backends of a database — only idle ones unless `idleOnly` is
 * false, optionally only those with one `application_name`. Returns how many were terminated.
 */
export async function terminateBackends(database: string, opts: { idleOnly?: boolean; applicationName?: string } = {}): Promise<number> {
  const c = new pg.Client({ connectionString: pgAdminUrl() });
  await c.connect();
  try {
    const r = await c.query<{ ok: boolean }>(
      `SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity
        WHERE datname = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid()
          AND ($2::boolean IS NOT TRUE OR state = 'idle') AND ($3::text IS NULL OR application_name = $3)`,
      [database, opts.idleOnly ?? true, opts.applicationName ?? null],
    );
    return r.rows.filter((row) => row.ok).length;
  } finally {
    await c.end();
  }
}

/** Count client backends of a database with one `application_name` (one pool's connections). */
export async function countBackends(database: string, applicationName: string): Promise<number> {
  const c = new pg.Client({ connectionString: pgAdminUrl() });
  await c.connect();
  try {
    const r = await c.query<{ n: string }>(
      "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend' AND application_name = $2",
      [database, applicationName],
    );
    return Number(r.rows[0]?.n ?? 0);
  } finally {
    await c.end();
  }
}

export interface TestPool {
  pool: TenantPool;
  events: PoolEvent[];
  /** The pool's application_name: counts and kills only this pool's backends. */
  app: string;
}

/** A TenantPool of one tenant with its events recorded; the caller closes it. */
export function makeTestPool(tenant: string, url: string, overrides: Partial<PoolSettings>, max: number, app = uniqueId('lfpool'), pooling = true): TestPool {
  const events: PoolEvent[] = [];
  const pool = new TenantPool({
    tenant,
    key: `${tenant}:service`,
    databaseUrl: new Secret(url),
    settings: { ...DEFAULT_POOL_SETTINGS, ...overrides },
    max,
    pooling,
    onEvent: (e) => events.push(e),
    applicationName: app,
  });
  return { pool, events, app };
}

/** Test teardown: kill a child worker that is still running (SIGKILL) and wait for its exit. */
export async function killWorker(child: ChildWorker | undefined): Promise<void> {
  if (child && child.proc.exitCode === null && child.proc.signalCode === null) {
    child.proc.kill('SIGKILL');
    await child.exited;
  }
}

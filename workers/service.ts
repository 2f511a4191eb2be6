/**
 * A worker service: everything one worker process runs, composed from the library with its
 * dependencies injected. `start` brings parts up in order; `close` takes them down in reverse,
 * runs every step even if one fails, and returns the same promise when called twice.
 */
import os from 'node:os';
import { Queue, Worker } from 'bullmq';
import type { Logger } from 'pino';
import type { LensResult } from '../queues/contract.js';
import { createTenantPools, type TenantPools } from '../src/backends.js';
import { TenantBreakers } from '../src/breaker.js';
import { DeferralPlanner } from '../src/deferral.js';
import { TenantParking } from './parking.js';
import { warmFootprint } from '../src/pool/registry.js';
import type { WorkerConfig } from '../src/config.js';
import { Fleet } from '../src/fleet/fleet.js';
import type { MemberPool } from '../src/fleet/membership.js';
import { startHttpServer, type HttpServer } from '../src/http.js';
import type { LensCatalog } from '../src/lens.js';
import { createLogger } from '../src/logger.js';
import { hangUp, prefixFor, redisConnection } from '../src/redis.js';
import { LensfleetMetrics, QUEUE_STATES } from '../src/metrics.js';
import type { TenantDirectory } from '../src/tenants.js';
import { transportWarnings } from '../src/transport.js';
import { packageVersion } from '../src/version.js';
import { applyJobBounds, createBackoffStrategy } from './job-bounds.js';
import { createProcessor } from './processor.js';

export interface WorkerServiceOptions {
  readonly config: WorkerConfig;
  readonly tenants: TenantDirectory;
  readonly catalog: LensCatalog;
  readonly logger?: Logger;
  /** Start the HTTP endpoints. @defaultValue true */
  readonly http?: boolean;
}

export interface WorkerService {
  readonly worker: Worker;
  readonly registry: TenantPools;
  /** Its place in the fleet: membership and connection leases. */
  readonly fleet: Fleet;
  readonly metrics: LensfleetMetrics;
  readonly logger: Logger;
  /** Port of the HTTP endpoints (undefined when http: false). */
  readonly port: number | undefined;
  readonly draining: boolean;
  activeJobs(): number;
  /** Tenants as of the last (re)load. */
  tenants(): TenantDirectory;
  /**
   * Swap in a reloaded tenant directory (SIGHUP): removed tenants' pools close, changed tenants
   * get new pools while the old ones drain, added tenants appear.
   */
  reload(next: TenantDirectory): Promise<{ replaced: string[]; removed: string[] }>;
  ready(): Promise<{ ready: boolean; reasons: string[] }>;
  /** Stop taking jobs, finish active ones (up to shutdownTimeoutMs), close pools and connections. */
  close(): Promise<void>;
}

export async function startWorkerService(opts: WorkerServiceOptions): Promise<WorkerService> {
  const { config, catalog } = opts;
  let tenants = opts.tenants;
  const warmIds = (dir: TenantDirectory) => (config.warmTenants.includes('*') ? dir.ids() : config.warmTenants.filter((id) => dir.has(id)));
  const keepWarm = new Set(warmIds(tenants));
  const logger = opts.logger ?? createLogger({ level: config.logLevel });
  const cleanups: { name: string; run: () => Promise<unknown> }[] = [];
  let draining = false;
  let active = 0;

  // The metrics read the registry, the worker and Redis only at scrape time, after start.
  const metrics: LensfleetMetrics = new LensfleetMetrics(
    {
      poolStats: () => registry.stats(),
      processStats: () => ({
        pools: registry.size,
        connections: registry.connections(),
        maxConnections: config.processMaxConnections,
        concurrency: config.concurrency,
        activeJobs: active,
        pooling: config.pooling,
        ready: notReadyReasons().length === 0,
      }),
      // Cached for about a scrape interval: every scrape (and every scraper) would otherwise cost
      // a Redis round trip, and each worker of the fleet reports the same numbers anyway.
      queueCounts: cachedFor(config.http.queueCountsCacheMs, () => queue.getJobCounts(...QUEUE_STATES)),
      queueName: config.queueName,
      breakers: () => breakers.snapshot(),
    },
    { maxTenantLabels: config.metricsMaxTenants },
  );
  const startedAt = new Date().toISOString();
  const fleet = new Fleet({
    redis: config.redis,
    name: config.fleet.name,
    ttlMs: config.fleet.ttlMs,
    logger,
    onRedisError: (operation) => metrics.fleetRedisError(operation),
    record: () => ({
      host: os.hostname(),
      pid: process.pid,
      queue: config.queueName,
      concurrency: config.concurrency,
      processMaxConnections: config.processMaxConnections,
      version: packageVersion(),
      startedAt,
      heartbeatAt: new Date().toISOString(),
      activeJobs: active,
      draining,
      pools: memberPools(),
    }),
  });
  /** Tenant → connections, for the membership record (`lensfleet status`). */
  const memberPools = (): Record<string, MemberPool> => {
    const pools: Record<string, MemberPool> = {};
    for (const s of registry.stats()) {
      const t = tenants.has(s.tenant) ? tenants.get(s.tenant) : undefined;
      // The cap applies to Postgres tenants only (a Supabase tenant's requests reach PostgREST).
      const cap = t?.backend === 'pg' ? t.pool.fleetMaxConnections : 0;
      pools[s.tenant] = { open: s.size, inUse: s.inUse, idle: s.idle, waiting: s.waiting, max: s.max, leases: s.leases, ...(cap > 0 ? { cap } : {}) };
    }
    return pools;
  };
  // Closed after the pools (cleanups run in reverse): their connections give their leases back as they close.
  cleanups.push({ name: 'fleet', run: () => fleet.close() });
  // Pools of both backends; only Postgres connections count in the process budget (docs/SUPABASE.md).
  const registry = createTenantPools({
    concurrency: config.concurrency,
    processMaxConnections: config.processMaxConnections,
    keepWarm,
    logger,
    observer: metrics.poolObserver,
    onPoolClosed: (tenant) => metrics.poolClosed(tenant),
    // A Postgres tenant with a fleet cap opens a connection only with a lease from the fleet (PostgREST pools its own).
    leases: (t) => (t.backend === 'pg' && t.pool.fleetMaxConnections > 0 ? fleet.leases.provider(t.id, t.pool.fleetMaxConnections) : undefined),
  });
  cleanups.push({ name: 'pools', run: () => registry.close() });
  warnIfMinSizesExceedBudget(tenants);
  warnAboutTransport(tenants);

  // One connection for readiness and queue depth; BullMQ's worker keeps its own. It fails fast
  // while Redis is down (no offline queue), so a scrape never hangs on it.
  const redis = redisConnection(config.redis, 'commands');
  redis.on('error', (err) => logger.debug({ code: (err as { code?: string }).code }, 'redis (monitor) connection error'));
  cleanups.push({ name: 'redis', run: () => hangUp(redis) });
  // The prefix comes from the contract: on a Cluster every key of the queue carries its hash tag.
  const prefix = prefixFor(config.redis, config.queueName);
  const queue = new Queue(config.queueName, { connection: redis, prefix });
  cleanups.push({ name: 'queue', run: () => queue.close() });

  const notReadyReasons = (): string[] => {
    const reasons: string[] = [];
    if (draining) reasons.push('draining');
    if (redis.status !== 'ready') reasons.push(`redis ${redis.status}`);
    else if (!worker.isRunning()) reasons.push('worker not running');
    return reasons;
  };
  const ready = async () => {
    const reasons = notReadyReasons();
    return { ready: reasons.length === 0, reasons };
  };

  // Whether a job runs now or goes back to the queue: local to this process, no Redis round trip.
  const { admission: adm } = config;
  const breakers = new TenantBreakers(
    { failureThreshold: adm.breakerFailures, coolDownMs: adm.breakerCoolDownMs, maxCoolDownMs: adm.breakerMaxCoolDownMs },
    {
      onTransition: (tenant, from, to, b) => {
        metrics.breakerTransition(tenant, to);
        const fields = { tenant, from, to, failures: b.failures, coolDownMs: b.coolDownMs };
        if (to === 'open') logger.warn(fields, 'circuit breaker open: the tenant’s jobs are delayed until a probe connects');
        else logger.info(fields, `circuit breaker ${to === 'closed' ? 'closed' : 'half-open: one job probes the database'}`);
      },
    },
  );
  const deferral = new DeferralPlanner({ enabled: adm.deferWhenBusy, maxPerJob: adm.deferMaxPerJob, maxDelayMs: adm.deferMaxDelayMs });
  const parking = adm.deferPark
    ? new TenantParking({ planner: deferral, logger, maxParks: adm.deferMaxPerJob, onParked: (tenant, n) => metrics.jobDeferred(tenant, 'parked', n) })
    : undefined;
  const processor = createProcessor({
    catalog,
    tenants: { get: (id) => tenants.get(id) },
    registry,
    logger,
    metrics,
    maxPayloadBytes: config.maxPayloadBytes,
    retry: config.jobs,
    admission: { breakers, deferral, parking },
  });
  // The worker's own connection. BullMQ does not close a connection it was handed (it may be
  // shared), so closing it is a cleanup step of ours, after the worker's.
  const workerRedis = redisConnection(config.redis, 'blocking');
  cleanups.push({ name: 'worker redis', run: () => hangUp(workerRedis) });
  const worker = new Worker<unknown, LensResult>(
    config.queueName,
    async (job, token) => {
      applyJobBounds(job, config.jobs);
      active++;
      try {
        return await processor(job, token);
      } finally {
        active--;
      }
    },
    {
      connection: workerRedis,
      prefix,
      concurrency: config.concurrency,
      autorun: false,
      // BullMQ applies these only to jobs that bring no retention of their own; applyJobBounds
      // bounds the others.
      removeOnComplete: { age: config.jobs.keepCompletedSeconds, count: config.jobs.keepCompletedCount },
      removeOnFail: { age: config.jobs.keepFailedSeconds, count: config.jobs.keepFailedCount },
      settings: { backoffStrategy: createBackoffStrategy(config.jobs) },
      // How soon a crashed worker's jobs run elsewhere: at most lock + 2 stalled checks (src/config.ts).
      lockDuration: config.jobs.lockMs,
      stalledInterval: config.jobs.stalledCheckMs,
    },
  );
  parking?.attach(worker);
  // Without an 'error' listener an EventEmitter error (Redis loss) would crash the process.
  worker.on('error', (err) => logger.warn({ code: (err as { code?: string }).code, msg: err.message }, 'worker error'));
  // A drain that outlasts the shutdown timeout ends the connections its jobs still hold (and so
  // those jobs, as retried failures), closing the pools early: waiting for their queries could
  // take as long as they run.
  cleanups.push({ name: 'worker', run: () => closeWorker(worker, config.shutdownTimeoutMs, logger, () => registry.close({ abandonCheckedOut: true })) });

  let http: HttpServer | undefined;
  try {
    if (opts.http !== false) {
      http = await startHttpServer(
        {
          metrics: async () => ({ contentType: metrics.contentType(), body: await metrics.metrics() }),
          poolStats: () => registry.stats(),
          breakers: () => breakers.snapshot(),
          poolKeys: () => registry.keys(),
          ready,
          info: () => ({
            pid: process.pid,
            queue: config.queueName,
            concurrency: config.concurrency,
            pooling: config.pooling,
            tenants: tenants.ids().length,
            draining,
          }),
        },
        {
          port: config.http.port,
          host: config.http.host,
          token: config.http.token,
          maxConnections: config.http.maxConnections,
          headersTimeoutMs: config.http.headersTimeoutMs,
          requestTimeoutMs: config.http.requestTimeoutMs,
          logger,
        },
      );
      const server = http;
      // Closed last, so /ready answers 503 "draining" (not connection refused) during a drain.
      cleanups.unshift({ name: 'http', run: () => server.close() });
    }
    await fleet.start();
    // In the background: the worker serves every tenant at once, whatever the warm ones' databases do.
    void warmUp(config.warmTenants.includes('*') ? tenants.ids() : config.warmTenants);
  } catch (err) {
    await runCleanups(cleanups, logger);
    throw err;
  }
  /**
   * Many tenants at the guide's minSize (5) would keep more connections than the process budget
   * holds: pools created later then evict each other's warm connections. Said once at start and
   * on reload, with the numbers and the fix (docs/BENCHMARKS.md, many tenants).
   */
  function warnIfMinSizesExceedBudget(dir: TenantDirectory): void {
    const footprint = warmFootprint(dir.list(), config.concurrency);
    if (footprint <= config.processMaxConnections) return;
    logger.warn(
      { tenants: dir.ids().length, warmFootprint: footprint, processMaxConnections: config.processMaxConnections },
      `the tenants' minSize connections add up to ${footprint}, more than the process budget LENSFLEET_PROCESS_MAX_CONNECTIONS=${config.processMaxConnections}: ` +
        'new pools will close other tenants’ warm connections to open their own; with many tenants set LENSFLEET_POOL_MIN_SIZE=1 (or 0) and keep a larger minSize for the busy tenants in the tenants file',
    );
  }

  /**
   * Tenants whose queries, results and credentials would cross a network in clear (another host,
   * no sslmode: node-pg's default is no TLS) or to a server whose identity is not verified. Said
   * once at start and on reload, with the fix; `sslmode=disable` is a stated choice and not
   * warned (src/transport.ts).
   */
  function warnAboutTransport(dir: TenantDirectory): void {
    const { clear, unverified } = transportWarnings(dir.list());
    const some = (ids: string[]) => `${ids.slice(0, 10).join(', ')}${ids.length > 10 ? ` and ${ids.length - 10} more` : ''}`;
    if (clear.length > 0) {
      logger.warn(
        { tenants: clear.length, tls: 'off' },
        `tenants ${some(clear)}: connections to another host without TLS — queries, results and credentials cross the network in clear. ` +
          'Add sslmode=verify-full (with sslrootcert=<CA file> for a private CA) to the database URL, use https for a Supabase URL, ' +
          'or sslmode=disable to say the network is private',
      );
    }
    if (unverified.length > 0) {
      logger.warn(
        { tenants: unverified.length, tls: 'unverified' },
        `tenants ${some(unverified)}: TLS without verifying the server (sslmode=no-verify, or uselibpqcompat with prefer/require/verify-ca): ` +
          'whoever can intercept the connection can pose as the database. Use sslmode=verify-full, with sslrootcert=<CA file> for a private CA',
      );
    }
  }

  /**
   * Create the warm tenants' pools, one after another. Never rejects: a tenant whose database is
   * down (or refuses every connection) is logged and counted, and nothing is cached — its first
   * job creates the pool. A pool that opened fewer than minSize connections is kept (one
   * serves) and opens the rest in the background.
   */
  async function warmUp(ids: readonly string[]): Promise<void> {
    for (const id of ids) {
      if (draining) return;
      try {
        const pool = await registry.get(tenants.get(id));
        logger.info({ tenant: id, connections: pool.size, min: pool.min }, 'pool warmed');
      } catch (err) {
        if (draining) return; // the registry closed under it: shutting down, not a failure
        metrics.warmUpFailed();
        const e = err as { code?: unknown; message?: unknown };
        logger.warn({ tenant: id, code: e?.code }, `pool warm-up failed (the tenant's first job tries again): ${String(e?.message ?? err)}`);
      }
    }
  }

  void worker.run().catch((err: unknown) => logger.error({ err }, 'worker stopped'));
  await worker.waitUntilReady();
  logger.info(
    {
      queue: config.queueName,
      concurrency: config.concurrency,
      pooling: config.pooling,
      tenants: tenants.ids().length,
      lenses: catalog.names(),
      port: http?.port,
    },
    'worker started',
  );

  let closing: Promise<void> | undefined;
  return {
    worker,
    registry,
    fleet,
    metrics,
    logger,
    port: http?.port,
    get draining() {
      return draining;
    },
    activeJobs: () => active,
    tenants: () => tenants,
    async reload(next) {
      tenants = next;
      keepWarm.clear();
      for (const id of warmIds(next)) keepWarm.add(id);
      const changes = registry.reconcile(next);
      warnIfMinSizesExceedBudget(next);
      warnAboutTransport(next);
      // A changed or removed tenant starts afresh (a new URL may well connect).
      for (const id of [...changes.replaced, ...changes.removed]) {
        breakers.forget(id);
        deferral.forget(id);
        parking?.forget(id);
      }
      logger.info({ tenants: next.ids().length, ...changes }, 'tenants reloaded');
      await warmUp([...keepWarm]);
      return changes;
    },
    ready,
    close() {
      closing ??= (async () => {
        draining = true;
        logger.info({ activeJobs: active }, 'draining: no new jobs, finishing active ones');
        // The fleet sees it at once (`lensfleet status`), not at the next heartbeat.
        void fleet.membership.beat();
        await runCleanups(cleanups, logger);
        logger.info('worker stopped');
      })();
      return closing;
    },
  };
}

/**
 * Stop taking jobs and wait for the active ones, at most `timeoutMs`; then `abandon` them (end
 * their connections: they fail, as a lost connection, and BullMQ retries them) and wait for the
 * worker to close, at most as long again. BullMQ's `close(true)` cannot cut the wait short: once
 * a graceful close is under way it returns that same promise, which waits for the jobs.
 */
async function closeWorker(worker: Worker, timeoutMs: number, logger: Logger, abandon: () => Promise<void>): Promise<void> {
  const graceful = worker.close().then(() => 'closed' as const);
  if ((await within(graceful, timeoutMs)) === 'closed') return;
  logger.warn({ timeoutMs }, 'shutdown timeout reached; ending the connections of jobs still active (they will be retried)');
  void abandon().catch(() => {});
  if ((await within(graceful, Math.max(1000, timeoutMs))) === 'closed') return;
  // A job stuck outside the database (a lens module that never returns): leave it to BullMQ's
  // stalled-job check, which hands it to another worker once this one is gone.
  logger.warn('the worker did not close after its jobs were abandoned; closing the rest anyway');
}

/** `p`'s outcome, or 'timeout' after `ms`. */
async function within<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), ms);
  });
  try {
    return await Promise.race([p, timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

/** Run cleanups in reverse order of start; every step runs even if one fails. */
async function runCleanups(cleanups: { name: string; run: () => Promise<unknown> }[], logger: Logger): Promise<void> {
  for (const step of [...cleanups].reverse()) {
    try {
      await step.run();
    } catch (err) {
      logger.warn({ step: step.name, msg: (err as Error).message }, 'shutdown step failed');
    }
  }
}

/**
 * `fn` with its result shared for `ttlMs`: calls in flight share one promise; a failure is not
 * kept (the next call tries again). `ttlMs` 0 calls `fn` every time.
 */
export function cachedFor<T>(ttlMs: number, fn: () => Promise<T>): () => Promise<T> {
  if (ttlMs <= 0) return fn;
  let value: Promise<T> | undefined;
  let expires = 0;
  return () => {
    const now = Date.now();
    if (value === undefined || now >= expires) {
      expires = now + ttlMs;
      const p = fn();
      value = p;
      p.catch(() => {
        if (value === p) value = undefined;
      });
    }
    return value;
  };
}

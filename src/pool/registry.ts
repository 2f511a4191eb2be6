/**
 * The tenant pool registry: owns every pool of this process. A pool is created lazily, exactly
 * once per key even when many jobs for a new tenant arrive at the same instant (single flight);
 * a creation that fails is not cached. Each pool's ceiling is clamped to the worker's concurrency
 * (more connections than concurrent jobs are waste), logged once per tenant.
 *
 * Process-wide it enforces a connection budget (closing the least recently used idle connection
 * of another tenant when full), closes tenant pools nobody used for `poolIdleTimeoutMs`, and
 * reconciles with a reloaded tenant directory (changed tenants get a new pool, the old drains).
 *
 * The registry knows tenants and pools, not lenses or BullMQ.
 */
import type { Logger } from 'pino';
import { LensfleetError } from '../errors.js';
import { ProcessBudget } from './budget.js';
import { TenantPool, type PoolEvent, type PoolObserver, type PoolStats } from './tenant-pool.js';
import type { PgTenant, TenantDirectory } from '../tenants.js';

export interface RegistryOptions {
  /** Worker concurrency: the ceiling of every tenant pool. */
  readonly concurrency: number;
  readonly logger: Logger;
  /** Connections allowed over all tenants. @defaultValue Infinity */
  readonly processMaxConnections?: number;
  readonly observer?: PoolObserver;
  /** Tenants whose pools are never closed for idleness (the warm ones). */
  readonly keepWarm?: ReadonlySet<string>;
  /** Called when a pool is removed (its metric series should go with it). */
  readonly onPoolClosed?: (tenant: string) => void;
  /** How often idle pools are looked for. @defaultValue 5000 */
  readonly maintenanceIntervalMs?: number;
}

/** The key of a tenant's pool. It always contains the tenant id (never a default tenant). */
export function poolKey(tenant: PgTenant): string {
  return `${tenant.id}:service`;
}

/** Effective ceiling of a tenant pool: min(maxSize + maxOverflow, concurrency). */
export function effectiveMax(tenant: PgTenant, concurrency: number): number {
  return Math.max(1, Math.min(tenant.pool.maxSize + tenant.pool.maxOverflow, concurrency));
}

/** What makes two configurations of a tenant need different pools. */
function fingerprint(t: PgTenant): string {
  return JSON.stringify([t.databaseUrl.reveal(), t.pooling, t.pool]);
}

interface Entry {
  readonly pool: TenantPool;
  /** The tenant object last seen for this pool (identity check first: no hashing per job). */
  tenant: PgTenant;
  readonly fingerprint: string;
  /** Taken out of service (retired, or the registry closed). */
  retired: boolean;
}

export class PoolRegistry {
  readonly #opts: RegistryOptions;
  readonly #entries = new Map<string, Entry>();
  /** Entry by tenant object, for `current` (no key string built and hashed per job). */
  readonly #byTenant = new WeakMap<PgTenant, Entry>();
  readonly #creating = new Map<string, { promise: Promise<TenantPool>; fingerprint: string }>();
  /** Every pool that holds connections: live, being created, or draining after a reload. */
  readonly #all = new Set<TenantPool>();
  readonly #clampLogged = new Set<string>();
  readonly #budget: ProcessBudget;
  readonly #maintenance: NodeJS.Timeout;
  #closed = false;
  #closing: Promise<void> | undefined;
  /** Pools created since start (a pool created twice for one key would show here). */
  created = 0;

  constructor(opts: RegistryOptions) {
    this.#opts = opts;
    this.#budget = new ProcessBudget(opts.processMaxConnections ?? Infinity, this.#all, opts.logger);
    this.#maintenance = setInterval(() => this.#closeIdlePools(), opts.maintenanceIntervalMs ?? 5000);
    this.#maintenance.unref();
  }

  /** The pool of this tenant, created (and warmed to minSize) on first use. */
  get(tenant: PgTenant): Promise<TenantPool> {
    const key = poolKey(tenant);
    const entry = this.#entries.get(key);
    if (entry !== undefined) {
      if (entry.tenant === tenant) return Promise.resolve(entry.pool);
      if (entry.fingerprint === fingerprint(tenant)) {
        this.#see(entry, tenant);
        return Promise.resolve(entry.pool);
      }
    }
    if (this.#closed) return Promise.reject(new LensfleetError('POOL_CLOSED', 'the pool registry is closed (worker shutting down)'));
    if (entry !== undefined) this.#retire(key, entry, 'settings changed');
    const fp = fingerprint(tenant);
    const pending = this.#creating.get(key);
    if (pending !== undefined && pending.fingerprint === fp) return pending.promise;
    const promise = this.#create(tenant, key, fp).finally(() => {
      if (this.#creating.get(key)?.promise === promise) this.#creating.delete(key);
    });
    this.#creating.set(key, { promise, fingerprint: fp });
    return promise;
  }

  /** The live pool of exactly this tenant object, synchronously (the per-job fast path), or undefined. */
  current(tenant: PgTenant): TenantPool | undefined {
    const entry = this.#byTenant.get(tenant);
    return entry !== undefined && !entry.retired && entry.tenant === tenant ? entry.pool : undefined;
  }

  /** `tenant` is now the object this entry answers to (same pool settings). */
  #see(entry: Entry, tenant: PgTenant): void {
    entry.tenant = tenant;
    this.#byTenant.set(tenant, entry);
  }

  /** The pool for this tenant if it exists, without creating it. */
  peek(tenant: PgTenant): TenantPool | undefined {
    return this.#entries.get(poolKey(tenant))?.pool;
  }

  keys(): string[] {
    return [...this.#entries.keys()];
  }

  get size(): number {
    return this.#entries.size;
  }

  get processMaxConnections(): number {
    return this.#budget.max;
  }

  stats(): PoolStats[] {
    return [...this.#entries.values()].map((e) => e.pool.stats());
  }

  /** Open connections over all pools of this process (draining ones included). */
  connections(): number {
    let n = 0;
    for (const p of this.#all) n += p.open;
    return n;
  }

  /**
   * Align with a reloaded tenant directory: pools of removed tenants close, pools of tenants whose
   * connection settings changed (rotated password, pool settings, pooling switch) are replaced —
   * new work goes to a new pool, the old one closes its connections as they are released.
   */
  reconcile(directory: TenantDirectory): { replaced: string[]; removed: string[] } {
    const replaced: string[] = [];
    const removed: string[] = [];
    for (const [key, entry] of [...this.#entries]) {
      const next = directory.has(entry.tenant.id) ? directory.get(entry.tenant.id) : undefined;
      if (next === undefined || next.backend !== 'pg') {
        this.#retire(key, entry, 'tenant removed');
        removed.push(entry.tenant.id);
      } else if (fingerprint(next) !== entry.fingerprint) {
        this.#retire(key, entry, 'settings changed');
        replaced.push(entry.tenant.id);
      } else {
        this.#see(entry, next);
      }
    }
    return { replaced, removed };
  }

  /**
   * Recycle a tenant's pool as a whole: new work gets a new pool with new connections, the old
   * connections close as they are released. Returns false when the tenant has no pool.
   */
  recycle(tenantId: string): boolean {
    for (const [key, entry] of this.#entries) {
      if (entry.tenant.id === tenantId) {
        this.#retire(key, entry, 'recycled');
        return true;
      }
    }
    return false;
  }

  /**
   * Close every pool; later `get` calls fail with `POOL_CLOSED`. Checked-out connections close as
   * their jobs release them, or at once with `abandonCheckedOut` (see TenantPool.close).
   * Idempotent (a later call may still abandon what is checked out).
   */
  close(opts: { abandonCheckedOut?: boolean } = {}): Promise<void> {
    if (opts.abandonCheckedOut && this.#closing !== undefined) for (const p of this.#all) void p.close(opts);
    this.#closing ??= (async () => {
      this.#closed = true;
      clearInterval(this.#maintenance);
      await Promise.allSettled([...this.#creating.values()].map((c) => c.promise));
      const entries = [...this.#entries.values()];
      this.#entries.clear();
      for (const e of entries) e.retired = true;
      const results = await Promise.allSettled([...this.#all].map((p) => p.close(opts)));
      for (const r of results) if (r.status === 'rejected') this.#opts.logger.warn({ err: r.reason }, 'closing pool failed');
      for (const e of entries) this.#opts.onPoolClosed?.(e.tenant.id);
      this.#all.clear();
    })();
    return this.#closing;
  }

  /** Take a pool out of service; it drains (closes connections as they are released). */
  #retire(key: string, entry: Entry, why: string): void {
    entry.retired = true;
    if (this.#entries.get(key) === entry) this.#entries.delete(key);
    this.#opts.onPoolClosed?.(entry.tenant.id);
    this.#opts.logger.info({ tenant: entry.tenant.id, pool: key, why, inUse: entry.pool.stats().inUse }, 'pool retired; draining');
    void entry.pool.close().finally(() => {
      this.#all.delete(entry.pool);
      this.#opts.logger.info({ tenant: entry.tenant.id, pool: key }, 'pool closed');
    });
  }

  #closeIdlePools(): void {
    const now = Date.now();
    for (const [key, entry] of [...this.#entries]) {
      const limit = entry.tenant.pool.poolIdleTimeoutMs;
      if (limit <= 0 || entry.pool.busy || this.#opts.keepWarm?.has(entry.tenant.id)) continue;
      if (now - entry.pool.lastUsedAt >= limit) this.#retire(key, entry, `unused for ${limit} ms`);
    }
  }

  async #create(tenant: PgTenant, key: string, fp: string): Promise<TenantPool> {
    const { concurrency, logger } = this.#opts;
    const max = effectiveMax(tenant, concurrency);
    const configured = tenant.pool.maxSize + tenant.pool.maxOverflow;
    if (max < configured && !this.#clampLogged.has(tenant.id)) {
      this.#clampLogged.add(tenant.id);
      logger.info(
        { tenant: tenant.id, maxSize: tenant.pool.maxSize, maxOverflow: tenant.pool.maxOverflow, concurrency, effectiveMax: max },
        `pool max clamped to worker concurrency: maxSize + maxOverflow = ${configured} > concurrency = ${concurrency}, using ${max}`,
      );
    }
    const log = logger.child({ tenant: tenant.id, pool: key });
    const pool = new TenantPool({
      tenant: tenant.id,
      key,
      databaseUrl: tenant.databaseUrl,
      settings: tenant.pool,
      max,
      pooling: tenant.pooling,
      budget: this.#budget,
      ...(this.#opts.observer ? { observer: this.#opts.observer } : {}),
      onEvent: (e) => logPoolEvent(log, e),
    });
    this.created++;
    this.#all.add(pool);
    try {
      await pool.warm();
    } catch (err) {
      this.#all.delete(pool);
      await pool.close().catch(() => {});
      throw err;
    }
    if (this.#closed || this.#creating.get(key)?.fingerprint !== fp) {
      // The registry closed, or the tenant was reconfigured while this pool was being created.
      this.#all.delete(pool);
      await pool.close();
      throw new LensfleetError(
        'POOL_CLOSED',
        this.#closed ? 'the pool registry is closed (worker shutting down)' : `pool ${key} was replaced while it was being created`,
      );
    }
    // Two creations with the same settings can overlap (a reload flipped the settings and back
    // while the first was warming up): the later one wins, the earlier one drains.
    const previous = this.#entries.get(key);
    if (previous !== undefined) this.#retire(key, previous, 'replaced by a newer pool with the same settings');
    const entry: Entry = { pool, tenant, fingerprint: fp, retired: false };
    this.#entries.set(key, entry);
    this.#byTenant.set(tenant, entry);
    log.info({ min: pool.min, max: pool.max, pooling: pool.pooling, connections: pool.size }, 'pool created');
    return pool;
  }
}

function logPoolEvent(log: Logger, e: PoolEvent): void {
  switch (e.type) {
    case 'connection_error':
      log.warn({ kind: e.kind, code: e.code, cause: e.cause }, `connection error: ${e.message}`);
      return;
    case 'leak':
      log.warn({ heldMs: e.heldMs, ...e.holder }, `connection held for ${e.heldMs} ms (leak detection threshold exceeded)`);
      return;
    case 'closed_connection':
      if (e.reason === 'recycled' || e.reason === 'evicted') log.info({ reason: e.reason }, `connection ${e.reason}`);
      else log.debug({ reason: e.reason }, 'connection closed');
      return;
    case 'task_failed':
      log.error({ task: e.task }, `pool housekeeping task failed (it runs again): ${e.message}`);
      return;
  }
}

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
 * Pools of every backend live here alike (`ManagedPool`): a backend's `PoolFactory` is injected
 * (Postgres's, `pgPools`, by default; the worker injects one that also makes REST pools). The
 * registry knows tenants and pools, not lenses, BullMQ or which backends exist.
 */
import type { Logger } from 'pino';
import { LensfleetError } from '../errors.js';
import { fingerprintOf } from '../secret.js';
import { ProcessBudget } from './budget.js';
import { TenantPool, type PoolEvent, type PoolObserver, type PoolStats } from './tenant-pool.js';
import type { BudgetMember, LeaseProvider, ManagedPool, PoolFactory, PoolTenant } from './types.js';
import type { PgTenant } from '../tenants.js';

export interface RegistryOptions<T extends PoolTenant = PgTenant, P extends ManagedPool = TenantPool> {
  /** Worker concurrency: the ceiling of every tenant pool. */
  readonly concurrency: number;
  readonly logger: Logger;
  /** Connections allowed over all tenants (those of pools with a `budgetMember`). @defaultValue Infinity */
  readonly processMaxConnections?: number;
  readonly observer?: PoolObserver;
  /** Tenants whose pools are never closed for idleness (the warm ones). */
  readonly keepWarm?: ReadonlySet<string>;
  /** Called when a pool is removed (its metric series should go with it). */
  readonly onPoolClosed?: (tenant: string) => void;
  /** How often idle pools are looked for. @defaultValue 5000 */
  readonly maintenanceIntervalMs?: number;
  /** Makes the tenants' pools. @defaultValue pgPools (a `TenantPool` per Postgres tenant) */
  readonly factory?: PoolFactory<T, P>;
  /** The fleet connection cap of a tenant's pools (src/fleet/), or undefined: no cap. @defaultValue no cap */
  readonly leases?: (tenant: T) => LeaseProvider | undefined;
}

/** The key of a tenant's pool, whatever its backend. It always contains the tenant id (never a default tenant). */
export function poolKey(tenant: PoolTenant): string {
  return `${tenant.id}:service`;
}

/** Effective ceiling of a tenant pool: min(maxSize + maxOverflow, concurrency). */
export function effectiveMax(tenant: PoolTenant, concurrency: number): number {
  return Math.max(1, Math.min(tenant.pool.maxSize + tenant.pool.maxOverflow, concurrency));
}

/**
 * Connections the tenants' pools would keep open if every tenant were in use: each pooled
 * Postgres tenant's minSize, clamped to its effective max (as `TenantPool` clamps it). Above the
 * process budget, pools created later find it full: their warm connections evict other tenants'
 * (each new connection closes the least recently used idle one) and every new pool opens more
 * connections than its jobs need — with many tenants, use minSize 0–1 (docs/BENCHMARKS.md).
 */
export function warmFootprint(tenants: Iterable<PoolTenant & { readonly pooling?: boolean }>, concurrency: number): number {
  let n = 0;
  for (const t of tenants) if (t.backend === 'pg' && t.pooling !== false) n += Math.min(t.pool.minSize, effectiveMax(t, concurrency));
  return n;
}

/** Postgres tenants' pools: one `TenantPool` each, its connections counted in the process budget. */
export const pgPools: PoolFactory<PgTenant, TenantPool> = {
  serves: (t): t is PgTenant => t.backend === 'pg',
  // A digest: the registry keeps it for the pool's life, and the URL holds a password.
  fingerprint: (t) => fingerprintOf('pg', t.databaseUrl.reveal(), t.pooling, t.pool),
  create: (t, ctx) =>
    new TenantPool({
      tenant: t.id,
      key: ctx.key,
      databaseUrl: t.databaseUrl,
      settings: t.pool,
      max: ctx.max,
      pooling: t.pooling,
      budget: ctx.budget,
      leases: ctx.leases,
      ...(ctx.observer ? { observer: ctx.observer } : {}),
      onEvent: ctx.onEvent,
    }),
};

/** A tenant directory as reconcile reads it. */
export interface TenantLookup {
  has(id: string): boolean;
  get(id: string): PoolTenant;
}

interface Entry<T, P> {
  readonly pool: P;
  /** The tenant object last seen for this pool (identity check first: no hashing per job). */
  tenant: T;
  readonly fingerprint: string;
  /** Taken out of service (retired, or the registry closed). */
  retired: boolean;
}

export class PoolRegistry<T extends PoolTenant = PgTenant, P extends ManagedPool = TenantPool> {
  readonly #opts: RegistryOptions<T, P>;
  readonly #factory: PoolFactory<T, P>;
  readonly #entries = new Map<string, Entry<T, P>>();
  /** Entry by tenant object, for `current` (no key string built and hashed per job). */
  readonly #byTenant = new WeakMap<T, Entry<T, P>>();
  readonly #creating = new Map<string, { promise: Promise<P>; fingerprint: string }>();
  /** Every pool that holds connections: live, being created, or draining after a reload. */
  readonly #all = new Set<P>();
  /** The budget members of those pools (the pools whose connections count in the budget). */
  readonly #members = new Set<BudgetMember>();
  readonly #clampLogged = new Set<string>();
  readonly #budget: ProcessBudget;
  readonly #maintenance: NodeJS.Timeout;
  #closed = false;
  #closing: Promise<void> | undefined;
  /** Pools created since start (a pool created twice for one key would show here). */
  created = 0;

  constructor(opts: RegistryOptions<T, P>) {
    this.#opts = opts;
    // Without a factory the registry makes Postgres pools: T and P are then their defaults.
    this.#factory = opts.factory ?? (pgPools as unknown as PoolFactory<T, P>);
    this.#budget = new ProcessBudget(opts.processMaxConnections ?? Infinity, this.#members, opts.logger);
    this.#maintenance = setInterval(() => this.#closeIdlePools(), opts.maintenanceIntervalMs ?? 5000);
    this.#maintenance.unref();
  }

  /** The pool of this tenant, created (and warmed to minSize) on first use. */
  get(tenant: T): Promise<P> {
    const key = poolKey(tenant);
    const entry = this.#entries.get(key);
    if (entry !== undefined) {
      if (entry.tenant === tenant) return Promise.resolve(entry.pool);
      if (this.#factory.serves(tenant) && entry.fingerprint === this.#factory.fingerprint(tenant)) {
        this.#see(entry, tenant);
        return Promise.resolve(entry.pool);
      }
    }
    if (this.#closed) return Promise.reject(new LensfleetError('POOL_CLOSED', 'the pool registry is closed (worker shutting down)'));
    if (!this.#factory.serves(tenant)) return Promise.reject(unsupported(tenant));
    if (entry !== undefined) this.#retire(key, entry, 'settings changed');
    const fp = this.#factory.fingerprint(tenant);
    const pending = this.#creating.get(key);
    if (pending !== undefined && pending.fingerprint === fp) return pending.promise;
    const promise = this.#create(tenant, key, fp).finally(() => {
      if (this.#creating.get(key)?.promise === promise) this.#creating.delete(key);
    });
    this.#creating.set(key, { promise, fingerprint: fp });
    return promise;
  }

  /** The live pool of exactly this tenant object, synchronously (the per-job fast path), or undefined. */
  current(tenant: T): P | undefined {
    const entry = this.#byTenant.get(tenant);
    return entry !== undefined && !entry.retired && entry.tenant === tenant ? entry.pool : undefined;
  }

  /** `tenant` is now the object this entry answers to (same pool settings). */
  #see(entry: Entry<T, P>, tenant: T): void {
    entry.tenant = tenant;
    this.#byTenant.set(tenant, entry);
  }

  /** The pool for this tenant if it exists, without creating it. */
  peek(tenant: T): P | undefined {
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

  /**
   * Open connections over all pools of this process (draining ones included) that count in the
   * process budget: database connections. A REST pool's sockets are not among them (see
   * `ManagedPool.budgetMember`); its stats show them.
   */
  connections(): number {
    let n = 0;
    for (const p of this.#all) if (p.budgetMember !== undefined) n += p.open;
    return n;
  }

  /**
   * Align with a reloaded tenant directory: pools of removed tenants close, pools of tenants whose
   * connection settings changed (rotated password, pool settings, pooling switch) are replaced —
   * new work goes to a new pool, the old one closes its connections as they are released.
   */
  reconcile(directory: TenantLookup): { replaced: string[]; removed: string[] } {
    const replaced: string[] = [];
    const removed: string[] = [];
    for (const [key, entry] of [...this.#entries]) {
      const next = directory.has(entry.tenant.id) ? directory.get(entry.tenant.id) : undefined;
      if (next === undefined || !this.#factory.serves(next)) {
        this.#retire(key, entry, 'tenant removed');
        removed.push(entry.tenant.id);
      } else if (this.#factory.fingerprint(next) !== entry.fingerprint) {
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
      this.#members.clear();
    })();
    return this.#closing;
  }

  /** Take a pool out of service; it drains (closes connections as they are released). */
  #retire(key: string, entry: Entry<T, P>, why: string): void {
    entry.retired = true;
    if (this.#entries.get(key) === entry) this.#entries.delete(key);
    this.#opts.onPoolClosed?.(entry.tenant.id);
    this.#opts.logger.info({ tenant: entry.tenant.id, pool: key, why, inUse: entry.pool.stats().inUse }, 'pool retired; draining');
    void entry.pool.close().finally(() => {
      this.#untrack(entry.pool);
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

  #track(pool: P): void {
    this.#all.add(pool);
    if (pool.budgetMember !== undefined) this.#members.add(pool.budgetMember);
  }

  #untrack(pool: P): void {
    this.#all.delete(pool);
    if (pool.budgetMember !== undefined) this.#members.delete(pool.budgetMember);
  }

  async #create(tenant: T, key: string, fp: string): Promise<P> {
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
    const pool = this.#factory.create(tenant, {
      key,
      max,
      budget: this.#budget,
      observer: this.#opts.observer,
      leases: this.#opts.leases?.(tenant),
      onEvent: (e) => logPoolEvent(log, e),
    });
    this.created++;
    this.#track(pool);
    try {
      await pool.warm();
    } catch (err) {
      this.#untrack(pool);
      await pool.close().catch(() => {});
      throw err;
    }
    if (this.#closed || this.#creating.get(key)?.fingerprint !== fp) {
      // The registry closed, or the tenant was reconfigured while this pool was being created.
      this.#untrack(pool);
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
    const entry: Entry<T, P> = { pool, tenant, fingerprint: fp, retired: false };
    this.#entries.set(key, entry);
    this.#byTenant.set(tenant, entry);
    log.info({ backend: tenant.backend, min: pool.min, max: pool.max, pooling: pool.pooling, connections: pool.open }, 'pool created');
    return pool;
  }
}

/** A tenant whose backend this registry's factory does not serve (a registry built for Postgres only, say). */
function unsupported(tenant: PoolTenant): LensfleetError {
  return new LensfleetError('TENANT_UNSUPPORTED', `tenant "${tenant.id}" is a ${tenant.backend} tenant, and this registry makes no pools for that backend`, {
    details: { tenant: tenant.id, backend: tenant.backend },
  });
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
    case 'transaction_pooler_detected':
      log.warn(
        { transactionPooler: true },
        'the server forgot a named statement between two jobs: this tenant is behind a transaction-mode pooler (PgBouncer, Supavisor); its pool now parses unnamed statements in every batch — set transactionPooler for this tenant (LENSFLEET_POOL_TRANSACTION_POOLER or the tenants file) so connections start without session settings too',
      );
      return;
  }
}

/**
 * The tenant pool registry: owns every pool of this process. A pool is created lazily, exactly
 * once per key even when many jobs for a new tenant arrive at the same instant (single flight);
 * a creation that fails is not cached. Each pool's ceiling is clamped to the worker's concurrency
 * (more connections than concurrent jobs are waste), logged once per tenant.
 *
 * The registry knows tenants and pools, not lenses or BullMQ.
 */
import type { Logger } from 'pino';
import { LensfleetError } from './errors.js';
import { TenantPool, type ConnectionErrorKind, type PoolObserver, type PoolStats } from './pool.js';
import type { PgTenant } from './tenants.js';

export interface RegistryOptions {
  /** Worker concurrency: the ceiling of every tenant pool. */
  readonly concurrency: number;
  readonly logger: Logger;
  readonly observer?: PoolObserver;
  /** Called when a pool is removed (its metric series should go with it). */
  readonly onPoolClosed?: (tenant: string) => void;
}

/** The key of a tenant's pool. It always contains the tenant id (never a default tenant). */
export function poolKey(tenant: PgTenant): string {
  return `${tenant.id}:service`;
}

/** Effective ceiling of a tenant pool: min(maxSize + maxOverflow, concurrency). */
export function effectiveMax(tenant: PgTenant, concurrency: number): number {
  return Math.max(1, Math.min(tenant.pool.maxSize + tenant.pool.maxOverflow, concurrency));
}

export class PoolRegistry {
  readonly #opts: RegistryOptions;
  readonly #pools = new Map<string, TenantPool>();
  readonly #creating = new Map<string, Promise<TenantPool>>();
  readonly #clampLogged = new Set<string>();
  #closed = false;
  #closing: Promise<void> | undefined;
  /** Pools created since start (a pool created twice for one key would show here). */
  created = 0;

  constructor(opts: RegistryOptions) {
    this.#opts = opts;
  }

  /** The pool of this tenant, created (and warmed to minSize) on first use. */
  get(tenant: PgTenant): Promise<TenantPool> {
    const key = poolKey(tenant);
    const pool = this.#pools.get(key);
    if (pool !== undefined) return Promise.resolve(pool);
    if (this.#closed) return Promise.reject(new LensfleetError('POOL_CLOSED', 'the pool registry is closed (worker shutting down)'));
    let pending = this.#creating.get(key);
    if (pending === undefined) {
      pending = this.#create(tenant, key).finally(() => this.#creating.delete(key));
      this.#creating.set(key, pending);
    }
    return pending;
  }

  /** The pool for this tenant if it exists, without creating it. */
  peek(tenant: PgTenant): TenantPool | undefined {
    return this.#pools.get(poolKey(tenant));
  }

  keys(): string[] {
    return [...this.#pools.keys()];
  }

  get size(): number {
    return this.#pools.size;
  }

  stats(): PoolStats[] {
    return [...this.#pools.values()].map((p) => p.stats());
  }

  /** Open connections over all tenant pools. */
  connections(): number {
    let n = 0;
    for (const p of this.#pools.values()) n += p.stats().size;
    return n;
  }

  /** Close every pool; later `get` calls fail with `POOL_CLOSED`. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      await Promise.allSettled([...this.#creating.values()]);
      const pools = [...this.#pools.values()];
      this.#pools.clear();
      const results = await Promise.allSettled(pools.map((p) => p.close()));
      for (const [i, r] of results.entries()) {
        if (r.status === 'rejected') this.#opts.logger.warn({ err: r.reason, pool: pools[i]?.key }, 'closing pool failed');
        this.#opts.onPoolClosed?.(pools[i]!.tenant);
      }
    })();
    return this.#closing;
  }

  async #create(tenant: PgTenant, key: string): Promise<TenantPool> {
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
      ...(this.#opts.observer ? { observer: this.#opts.observer } : {}),
      onError: (kind: ConnectionErrorKind, err: Error) =>
        log.warn({ kind, code: (err as { code?: string }).code, msg: err.message }, 'connection error'),
    });
    this.created++;
    try {
      await pool.warm();
    } catch (err) {
      await pool.close().catch(() => {});
      throw err;
    }
    if (this.#closed) {
      await pool.close();
      throw new LensfleetError('POOL_CLOSED', 'the pool registry is closed (worker shutting down)');
    }
    this.#pools.set(key, pool);
    log.info({ min: pool.min, max: pool.max, pooling: pool.pooling }, 'pool created');
    return pool;
  }
}

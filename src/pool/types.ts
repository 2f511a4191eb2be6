/**
 * The tenant pool's public types: its options, stats snapshot, events, and the two interfaces
 * it calls out through (the metrics observer and the process connection budget).
 *
 * Glossary:
 * - pool: one tenant's connections in one process (`TenantPool`).
 * - connection source: where a pool's connections come from and go back to — a `pg.Pool` that
 *   keeps them (`PooledSource`) or a fresh connection per job (`UnpooledSource`, the rollback plan).
 * - ledger: a pool's books (connection counters, metadata of open connections, budget slots).
 * - size: connection slots a pool takes, including connections still opening (what the process
 *   budget counts); open: connections the database sees.
 * - demand: connections in use plus acquires waiting.
 * - housekeeping: a pool's background tasks (leak sweep, overflow trim, refill to minSize).
 * - lease: a fleet-wide permit for one open connection of a tenant with a fleet connection cap
 *   (`PoolLeases`; src/fleet/ implements it in Redis, the pool only sees this interface).
 * - backend: how a tenant is reached (`pg`: `TenantPool`; `supabase`: `RestTenantPool` in
 *   src/rest). The registry manages pools of any backend through `ManagedPool`, and makes them
 *   with an injected `PoolFactory`: nothing in src/pool imports a backend other than Postgres.
 */
import type pg from 'pg';
import type { PoolSettings } from '../config.js';
import type { Secret } from '../secret.js';

/** Why a connection was closed (a metrics label: keep the set small and stable). */
export type CloseReason =
  | 'overflow'
  | 'recycled'
  | 'error'
  | 'dirty'
  | 'ping_failed'
  | 'idle'
  | 'evicted'
  | 'unpooled'
  | 'pool_closed'
  /** Given back to the fleet: another process waits for a lease of this tenant. */
  | 'lease_wanted'
  /** Its lease expired in the fleet (not renewed in time) and could not be taken again under the cap. */
  | 'lease_lost';
/**
 * What kind of connection error it was (a metrics label). The kinds met while opening a
 * connection name the error code the acquire fails with: `connect` = CONNECTION_FAILED,
 * `connect_timeout` = CONNECT_TIMEOUT, `process_budget_timeout` = PROCESS_BUDGET_TIMEOUT,
 * `fleet_unavailable` = FLEET_UNAVAILABLE (a FLEET_CAP_TIMEOUT is the cap holding, not an error:
 * it has its own counter, `lease_timeouts_total`). `idle` and `active`: an open connection
 * failed while idle in the pool or checked out by a job.
 */
export type ConnectionErrorKind = 'connect' | 'connect_timeout' | 'process_budget_timeout' | 'fleet_unavailable' | 'idle' | 'active';

/** Observer of pool events; every method is optional. Metrics implement it (the pool does not import prom-client). */
export interface PoolObserver {
  acquired?(tenant: string, waitSeconds: number): void;
  connected?(tenant: string, connectSeconds: number): void;
}

/** Lifecycle and problem events, for logs. */
export type PoolEvent =
  | {
      type: 'connection_error';
      kind: ConnectionErrorKind;
      /** The error code an acquire fails with (CONNECTION_FAILED…), for errors met while opening; else undefined. */
      code: string | undefined;
      /** The driver's or server's own code (SQLSTATE such as 28P01, or ECONNREFUSED), when there is one. */
      cause: string | undefined;
      message: string;
    }
  | { type: 'leak'; heldMs: number; holder: Readonly<Record<string, unknown>> | undefined }
  | { type: 'closed_connection'; reason: CloseReason }
  /** A housekeeping task failed unexpectedly (a bug, not a connection error: those are counted as such); it runs again. */
  | { type: 'task_failed'; task: string; message: string }
  /** The server forgot a named statement: the tenant is behind a transaction-mode pooler, and the pool now says so. */
  | { type: 'transaction_pooler_detected' };

/** What the process budget needs to know of a pool (TenantPool implements it; tests use fakes). */
export interface BudgetMember {
  readonly tenant: string;
  /** Connection slots taken, including ones still opening. */
  readonly size: number;
  readonly idleCount: number;
  /** Connections in use or acquires waiting. */
  readonly busy: boolean;
  /** Date.now() of the last acquire. */
  readonly lastUsedAt: number;
  /** Close one idle connection; false when there is none to spare. */
  evictIdle(): Promise<boolean>;
}

/** The process-wide connection budget (owned by the registry). */
export interface ConnectionBudget {
  /**
   * Called after a connection slot was taken (it already counts in `size`) and before it
   * connects. Resolves when the process is within budget, evicting idle connections of other
   * tenants if needed; rejects when no room appears within `timeoutMs`.
   */
  reserve(requester: BudgetMember, timeoutMs: number): Promise<void>;
  /** Connections the budget still allows to open without evicting anything. */
  free(): number;
  /** A connection closed somewhere: wake reservations that wait for room. */
  released(): void;
}

/** What the fleet's leases see of a pool (TenantPool implements it). */
export interface LeaseMember {
  readonly tenant: string;
  /** Acquires waiting now: each may need one more connection. */
  readonly waiting: number;
  /**
   * Another process waits for a lease of this tenant: close the idle connections above minSize
   * (their leases go back). Resolves with how many closed.
   */
  shedIdle(): Promise<number>;
  /** Leases of this pool were lost (see `ConnectionLease.lost`): close its idle connections that hold one. Resolves with how many closed. */
  closeLost(): Promise<number>;
}

/** A fleet-wide permit for one open connection. Released exactly once, when the connection closes (or failed to open). */
export interface ConnectionLease {
  /** The fleet no longer counts this lease (it expired and could not be taken again): close the connection. */
  readonly lost: boolean;
  /** Give the lease back (idempotent). */
  release(): void;
}

/** A tenant pool's view of the fleet connection cap. */
export interface PoolLeases {
  /**
   * A lease for one more connection. Resolves with it once the fleet has room; with undefined as
   * soon as `needed()` is false while it waits (the acquires it was for are served: the open is
   * dropped, no error; `needed` is asked only after `onWait`, and the request is dropped the
   * moment it answers false); rejects with FLEET_CAP_TIMEOUT after `timeoutMs`, or
   * FLEET_UNAVAILABLE when the fleet's Redis could not be asked by then. `onWait` is called once,
   * when the first ask found no room.
   */
  acquire(needed: () => boolean, timeoutMs: number, onWait?: () => void): Promise<ConnectionLease | undefined>;
  /**
   * A connection holding `lease` was released: true when it should close instead, so its lease
   * goes to another process (others wait and this process holds more than its fair share of the
   * cap); the lease then counts as given back. Called on every release of a capped pool: cheap.
   */
  giveBack(lease: ConnectionLease): boolean;
  /** The pool closed: the fleet stops asking it to shed. */
  detach(): void;
}

/** Gives a pool its leases (the registry gets one per capped tenant; none = no fleet cap). */
export type LeaseProvider = (member: LeaseMember) => PoolLeases;

/**
 * A pool's monotonic counters; keys carry their unit. `src/metrics-counters.ts` maps every key to
 * the metric it is exported as (the compiler checks that none is missing).
 */
export interface PoolCounters {
  /** Acquires asked for (granted, timed out, refused or failed). */
  readonly requests_total: number;
  /** Time all settled acquires waited, in milliseconds. */
  readonly requests_wait_ms_total: number;
  /** Acquires that failed with POOL_TIMEOUT. */
  readonly acquire_timeouts_total: number;
  /** Acquires refused at once with POOL_BUSY. */
  readonly pool_busy_total: number;
  readonly connections_opened_total: number;
  /** Connections closed, by reason. */
  readonly connections_closed_total: Readonly<Record<string, number>>;
  /** Connection errors, by kind. */
  readonly connection_errors_total: Readonly<Record<string, number>>;
  /** Idle connections whose pre-ping failed (they are closed and another is handed out). */
  readonly pings_failed_total: number;
  /** Connections held past the leak detection threshold. */
  readonly leaks_total: number;
  /** Connection opens that waited for a fleet lease (the tenant's fleet cap was reached). */
  readonly lease_waits_total: number;
  /** Connection opens that got no fleet lease within the connect timeout (FLEET_CAP_TIMEOUT). */
  readonly lease_timeouts_total: number;
}

/** A point-in-time snapshot of one pool; counter keys carry their unit. */
export interface PoolStats extends PoolCounters {
  readonly tenant: string;
  readonly key: string;
  /** `pg` (connections to the tenant's database) or `supabase` (keep-alive sockets to its REST API). */
  readonly backend: string;
  readonly pooling: boolean;
  /** Effective ceiling: min(maxSize + maxOverflow, worker concurrency). */
  readonly max: number;
  readonly min: number;
  readonly maxSize: number;
  /** Open connections. */
  readonly size: number;
  /** Connections being opened (waiting for the process budget or connecting). */
  readonly opening: number;
  readonly inUse: number;
  readonly idle: number;
  readonly waiting: number;
  /** Milliseconds since the last acquire (for idle-pool eviction and LRU). */
  readonly idle_for_ms: number;
  /** Fleet leases held (connections open or opening with a lease); 0 without a fleet cap. */
  readonly leases: number;
}

export interface TenantPoolOptions {
  readonly tenant: string;
  readonly key: string;
  readonly databaseUrl: Secret;
  readonly settings: PoolSettings;
  /** Effective ceiling, already clamped by the registry. */
  readonly max: number;
  readonly pooling: boolean;
  readonly observer?: PoolObserver;
  readonly budget?: ConnectionBudget;
  /** The tenant's fleet connection cap; none = no cap. */
  readonly leases?: LeaseProvider | undefined;
  readonly onEvent?: (event: PoolEvent) => void;
  readonly applicationName?: string;
}

/** What the registry needs to know of a tenant, whatever its backend. */
export interface PoolTenant {
  readonly id: string;
  /** How the tenant is reached (`pg`, `supabase`): its factory's business, never the registry's. */
  readonly backend: string;
  readonly pool: PoolSettings;
  /** false = connect per job (the guide's rollback plan). */
  readonly pooling: boolean;
}

/**
 * One tenant's pool as the registry manages it, whatever the backend: created by a
 * `PoolFactory`, warmed, read for stats and idleness, closed. `TenantPool` (Postgres) and
 * `RestTenantPool` (Supabase REST, src/rest) implement it.
 */
export interface ManagedPool {
  readonly tenant: string;
  readonly key: string;
  /** Effective ceiling: min(maxSize + maxOverflow, worker concurrency). */
  readonly max: number;
  readonly min: number;
  readonly pooling: boolean;
  /** Open connections (for a REST pool: its HTTP sockets). */
  readonly open: number;
  /** Connections in use or acquires waiting: a busy pool is never closed for idleness. */
  readonly busy: boolean;
  /** Acquires waiting now. */
  readonly waiting: number;
  /** Date.now() of the last acquire. */
  readonly lastUsedAt: number;
  /**
   * The pool as the process connection budget counts it, or undefined when its connections do not
   * count in the budget (a REST pool's sockets: they end at the tenant's HTTP gateway, not at a
   * database, and undici cannot close one idle socket on demand for another tenant).
   */
  readonly budgetMember: BudgetMember | undefined;
  /**
   * Whether a job asking now would be served without waiting for a connection to be released: an
   * idle connection, one opening that no earlier acquire will take, or room to open one within the
   * effective max — or, with `maxQueued` > 0, it would wait for one of the pool's own connections
   * to come back behind fewer than `maxQueued` acquires. An open of a fleet-capped pool waiting
   * for a lease serves no one soon, and while one waits the pool has no room to open more. Local and cheap (the job processor asks before every acquire); a
   * closed pool answers true, so the acquire fails at once as it would have. @defaultValue maxQueued 0
   */
  canStartNow(maxQueued?: number): boolean;
  /** Open minSize connections; resolves once the pool can serve (at once when it opens on demand). */
  warm(): Promise<void>;
  stats(): PoolStats;
  /**
   * Close every connection as it is released; with `abandonCheckedOut`, end those still in use
   * now (the worker gave up waiting for their jobs; `TenantPool` does, a REST pool closes as
   * always). Idempotent; a later call may still abandon.
   */
  close(opts?: { abandonCheckedOut?: boolean }): Promise<void>;
}

/** What the registry hands a factory for one new pool. */
export interface PoolContext {
  /** The pool's key (`<tenant>:service`). */
  readonly key: string;
  /** Effective ceiling, already clamped to the worker's concurrency. */
  readonly max: number;
  /** The process connection budget (a factory whose connections do not count in it ignores it). */
  readonly budget: ConnectionBudget;
  /** The tenant's fleet connection cap, when it has one (a factory whose connections are not the database's ignores it). */
  readonly leases?: LeaseProvider | undefined;
  readonly observer?: PoolObserver | undefined;
  readonly onEvent: (event: PoolEvent) => void;
}

/** How one backend's pools are made; injected into the registry, which knows no backend itself. */
export interface PoolFactory<T extends PoolTenant, P extends ManagedPool> {
  /** Whether this factory makes the pools of `tenant` (a reloaded tenant it does not serve loses its pool). */
  serves(tenant: PoolTenant): tenant is T;
  /**
   * What makes two configurations of a tenant need different pools (a changed URL or key, pool
   * settings, the pooling switch). Only compared, never logged: it may hold secrets.
   */
  fingerprint(tenant: T): string;
  /** A new pool, not warmed yet (the registry warms it). */
  create(tenant: T, context: PoolContext): P;
}

/** A checked-out connection. Release it through `TenantPool.release`, exactly once. */
export type PoolClient = pg.PoolClient;

/**
 * Receives exactly one of an error or a connection. It runs synchronously inside pg.Pool's
 * dispatch (often inside the previous holder's release), so it must not throw.
 */
export type CheckoutCallback = (err: Error | undefined, client: PoolClient | undefined) => void;

/** What a pool is and holds right now (both backends), for `poolStats`. */
export interface PoolShape {
  readonly tenant: string;
  readonly key: string;
  readonly backend: string;
  readonly pooling: boolean;
  readonly max: number;
  readonly min: number;
  readonly settings: { readonly maxSize: number };
}

/**
 * One pool's snapshot, the same for every backend: its shape, the connections open / opening /
 * in use / idle and acquires waiting now, and its counters (copied: the snapshot must not change
 * under whoever reads it).
 */
export function poolStats(
  pool: PoolShape,
  n: {
    readonly total: number;
    readonly opening: number;
    readonly active: number;
    readonly idle: number;
    readonly waiting: number;
    /** Fleet leases held (a pool without a fleet cap: none). */
    readonly leases?: number;
  },
  c: PoolCounters,
  lastUsedAt: number,
): PoolStats {
  return {
    tenant: pool.tenant,
    key: pool.key,
    backend: pool.backend,
    pooling: pool.pooling,
    max: pool.max,
    min: pool.min,
    maxSize: pool.settings.maxSize,
    size: n.total,
    opening: n.opening,
    inUse: n.active,
    idle: n.idle,
    waiting: n.waiting,
    requests_total: c.requests_total,
    requests_wait_ms_total: Math.round(c.requests_wait_ms_total),
    acquire_timeouts_total: c.acquire_timeouts_total,
    pool_busy_total: c.pool_busy_total,
    connections_opened_total: c.connections_opened_total,
    pings_failed_total: c.pings_failed_total,
    leaks_total: c.leaks_total,
    lease_waits_total: c.lease_waits_total,
    lease_timeouts_total: c.lease_timeouts_total,
    connections_closed_total: { ...c.connections_closed_total },
    connection_errors_total: { ...c.connection_errors_total },
    idle_for_ms: Date.now() - lastUsedAt,
    leases: n.leases ?? 0,
  };
}

/** A fresh set of a pool's connection counters (every backend's pool starts from it). */
export function connectionCounters() {
  return {
    connections_opened_total: 0,
    pings_failed_total: 0,
    leaks_total: 0,
    lease_waits_total: 0,
    lease_timeouts_total: 0,
    connections_closed_total: {} as Record<string, number>,
    connection_errors_total: {} as Record<string, number>,
  };
}

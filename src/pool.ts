/**
 * One tenant's connections in this process: a thin wrapper around `pg.Pool` that adds what it
 * lacks — a typed acquire timeout distinct from the connect timeout, bounded waiting, warm-up to
 * minSize, overflow connections closed on release, pre-ping of idle connections, jittered
 * lifetime, destroy-on-dirty-return, and a stats snapshot. It knows nothing of lenses or BullMQ.
 *
 * With `pooling: false` (the guide's rollback plan) every acquire opens a fresh connection and
 * every release closes it; stats and timeouts work the same.
 */
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import type { PoolSettings } from './config.js';
import { LensfleetError } from './errors.js';
import type { Secret } from './secret.js';

/** Why a connection was closed (a metrics label: keep the set small and stable). */
export type CloseReason = 'overflow' | 'recycled' | 'error' | 'dirty' | 'ping_failed' | 'idle' | 'unpooled' | 'pool_closed';
/** Where a connection error happened (a metrics label). */
export type ConnectionErrorKind = 'connect' | 'connect_timeout' | 'idle' | 'active';

/** Observer of pool events; the default does nothing. Metrics implement it (the pool does not import prom-client). */
export interface PoolObserver {
  acquired?(tenant: string, waitSeconds: number): void;
  connected?(tenant: string, connectSeconds: number): void;
}

/** A point-in-time snapshot of one pool; keys carry their unit. */
export interface PoolStats {
  readonly tenant: string;
  readonly key: string;
  readonly pooling: boolean;
  /** Effective ceiling: min(maxSize + maxOverflow, worker concurrency). */
  readonly max: number;
  readonly min: number;
  readonly maxSize: number;
  readonly size: number;
  readonly inUse: number;
  readonly idle: number;
  readonly waiting: number;
  readonly requests_total: number;
  readonly requests_wait_ms_total: number;
  readonly acquire_timeouts_total: number;
  readonly pool_busy_total: number;
  readonly connections_opened_total: number;
  readonly connections_closed_total: Readonly<Record<string, number>>;
  readonly connection_errors_total: Readonly<Record<string, number>>;
  readonly pings_failed_total: number;
  readonly leaks_total: number;
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
  readonly onError?: (kind: ConnectionErrorKind, err: Error) => void;
  readonly applicationName?: string;
}

/** A checked-out connection. Release it through `TenantPool.release`, exactly once. */
export type PoolClient = pg.PoolClient;

interface ClientMeta {
  expiresAt: number;
  releasedAt: number;
}

const meta = new WeakMap<pg.ClientBase, ClientMeta>();

export class TenantPool {
  readonly tenant: string;
  readonly key: string;
  readonly max: number;
  readonly min: number;
  readonly settings: PoolSettings;
  readonly pooling: boolean;
  readonly #pool: pg.Pool | undefined;
  readonly #clientConfig: pg.ClientConfig;
  readonly #observer: PoolObserver;
  readonly #onError: (kind: ConnectionErrorKind, err: Error) => void;
  #closed = false;
  #closing: Promise<void> | undefined;
  #waiting = 0;
  #inUse = 0;
  #unpooledOpen = 0;
  readonly #stats = {
    requests_total: 0,
    requests_wait_ms_total: 0,
    acquire_timeouts_total: 0,
    pool_busy_total: 0,
    connections_opened_total: 0,
    pings_failed_total: 0,
    leaks_total: 0,
    connections_closed_total: {} as Record<string, number>,
    connection_errors_total: {} as Record<string, number>,
  };

  constructor(opts: TenantPoolOptions) {
    this.tenant = opts.tenant;
    this.key = opts.key;
    this.settings = opts.settings;
    this.max = opts.max;
    this.min = Math.min(opts.settings.minSize, opts.max);
    this.pooling = opts.pooling;
    this.#observer = opts.observer ?? {};
    this.#onError = opts.onError ?? (() => {});
    this.#clientConfig = {
      connectionString: opts.databaseUrl.reveal(),
      application_name: opts.applicationName ?? 'lensfleet',
      // Session defaults make a plain lens query one round trip: read-only and time-bounded
      // without a BEGIN/SET/COMMIT around it.
      statement_timeout: opts.settings.statementTimeoutMs,
      options: '-c default_transaction_read_only=on',
      connectionTimeoutMillis: opts.settings.connectTimeoutMs,
    };
    if (this.pooling) {
      const self = this;
      const clientConfig = this.#clientConfig;
      // pg.Pool hands its own options to every Client; a subclass keeps the connect timeout
      // separate from pg.Pool's connectionTimeoutMillis (which would also cap queue waiting).
      class TimedClient extends pg.Client {
        constructor() {
          super(clientConfig);
        }
        // pg-pool always connects with a callback.
        // eslint-disable-next-line @typescript-eslint/no-explicit-any
        override connect(callback?: any): never {
          const started = performance.now();
          return super.connect((err: Error | null) => {
            self.#connected(this as unknown as pg.ClientBase, started, err ?? undefined);
            (callback as ((e: Error | null) => void) | undefined)?.(err);
          }) as never;
        }
      }
      this.#pool = new pg.Pool({
        Client: TimedClient as unknown as typeof pg.Client,
        max: this.max,
        idleTimeoutMillis: opts.settings.idleTimeoutMs,
        min: this.min,
      });
      // An idle client's error (server restart, pg_terminate_backend) is emitted here; without a
      // listener it would crash the process.
      this.#pool.on('error', (err) => this.#error('idle', err));
      this.#pool.on('remove', () => {});
    }
  }

  /** Open minSize connections now (pg.Pool's `min` does not pre-open). */
  async warm(): Promise<void> {
    if (!this.#pool || this.min === 0) return;
    const need = this.min - this.#pool.totalCount;
    if (need <= 0) return;
    const clients = await Promise.allSettled(Array.from({ length: need }, () => this.#pool!.connect()));
    let firstError: unknown;
    for (const r of clients) {
      if (r.status === 'fulfilled') r.value.release();
      else firstError ??= r.reason;
    }
    if (firstError !== undefined) throw this.#connectError(firstError);
  }

  /**
   * Get a connection, waiting at most `acquireTimeoutMs` (`POOL_TIMEOUT`), with at most
   * `maxWaiting` acquires queued (`POOL_BUSY`). A connection that arrives after its waiter gave
   * up goes straight back to the pool.
   */
  acquire(): Promise<PoolClient> {
    if (this.#closed) {
      return Promise.reject(new LensfleetError('POOL_CLOSED', `pool ${this.key} is closed`, { details: { tenant: this.tenant } }));
    }
    this.#stats.requests_total++;
    if (this.#waiting >= this.settings.maxWaiting) {
      this.#stats.pool_busy_total++;
      return Promise.reject(
        new LensfleetError('POOL_BUSY', `pool ${this.key} has ${this.#waiting} acquires waiting (maxWaiting=${this.settings.maxWaiting}); try again later`, {
          details: { tenant: this.tenant, ...this.#numbers() },
        }),
      );
    }
    const started = performance.now();
    const deadline = started + this.settings.acquireTimeoutMs;
    this.#waiting++;
    return new Promise<PoolClient>((resolve, reject) => {
      let settled = false;
      const finish = () => {
        settled = true;
        this.#waiting--;
        clearTimeout(timer);
      };
      const timer = setTimeout(() => {
        if (settled) return;
        finish();
        this.#stats.acquire_timeouts_total++;
        this.#stats.requests_wait_ms_total += performance.now() - started;
        reject(
          new LensfleetError(
            'POOL_TIMEOUT',
            `pool ${this.key} timed out after ${this.settings.acquireTimeoutMs} ms waiting for a connection (${this.#describe()})`,
            { details: { tenant: this.tenant, ...this.#numbers() } },
          ),
        );
      }, this.settings.acquireTimeoutMs);
      timer.unref();
      const attempt = () => {
        this.#checkout().then(
          async (client) => {
            if (settled) {
              // The waiter gave up: return the connection instead of leaking it.
              this.#giveBack(client, undefined);
              return;
            }
            const usable = await this.#validate(client);
            if (settled) {
              if (usable) this.#giveBack(client, undefined);
              return;
            }
            if (!usable) {
              if (performance.now() < deadline) attempt();
              return;
            }
            finish();
            this.#inUse++;
            const waitMs = performance.now() - started;
            this.#stats.requests_wait_ms_total += waitMs;
            this.#observer.acquired?.(this.tenant, waitMs / 1000);
            resolve(client);
          },
          (err: unknown) => {
            if (settled) return;
            finish();
            this.#stats.requests_wait_ms_total += performance.now() - started;
            reject(this.#connectError(err));
          },
        );
      };
      attempt();
    });
  }

  /**
   * Return a connection. It is destroyed instead of reused when the job failed, when it is left
   * inside a transaction, when it is past its lifetime, or when it is an overflow connection.
   */
  release(client: PoolClient, err?: unknown): void {
    this.#inUse--;
    this.#giveBack(client, err);
  }

  /** Close every connection; waiting and later acquires fail with `POOL_CLOSED`. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      if (this.#pool) {
        const open = this.#pool.totalCount;
        await this.#pool.end();
        this.#count('pool_closed', open);
      }
    })();
    return this.#closing;
  }

  get closed(): boolean {
    return this.#closed;
  }

  stats(): PoolStats {
    const n = this.#numbers();
    return {
      tenant: this.tenant,
      key: this.key,
      pooling: this.pooling,
      max: this.max,
      min: this.min,
      maxSize: this.settings.maxSize,
      size: n.total,
      inUse: n.active,
      idle: n.idle,
      waiting: n.waiting,
      ...this.#stats,
      requests_wait_ms_total: Math.round(this.#stats.requests_wait_ms_total),
      connections_closed_total: { ...this.#stats.connections_closed_total },
      connection_errors_total: { ...this.#stats.connection_errors_total },
    };
  }

  #numbers() {
    const total = this.#pool ? this.#pool.totalCount : this.#unpooledOpen;
    const idle = this.#pool ? this.#pool.idleCount : 0;
    return { total, active: this.#inUse, idle, waiting: this.#waiting };
  }

  #describe(): string {
    const n = this.#numbers();
    return `total=${n.total}, active=${n.active}, idle=${n.idle}, waiting=${n.waiting}, max=${this.max}`;
  }

  async #checkout(): Promise<PoolClient> {
    if (this.#pool) return this.#pool.connect();
    // Rollback plan: a fresh connection per job, closed on release.
    const client = new pg.Client(this.#clientConfig);
    client.on('error', (err) => this.#error('active', err));
    const started = performance.now();
    this.#unpooledOpen++;
    try {
      await client.connect();
    } catch (err) {
      this.#unpooledOpen--;
      this.#connected(client, started, err as Error);
      throw err;
    }
    this.#connected(client, started);
    const c = client as unknown as PoolClient;
    c.release = () => {
      this.#unpooledOpen--;
      this.#count('unpooled');
      void client.end().catch(() => {});
    };
    return c;
  }

  /** Pre-ping and lifetime check before hand-out; false = the connection was discarded. */
  async #validate(client: PoolClient): Promise<boolean> {
    const m = meta.get(client);
    if (!m) return true; // fresh connection
    const now = Date.now();
    if (now >= m.expiresAt) {
      this.#count('recycled');
      client.release(true);
      return false;
    }
    if (this.settings.prePing && now - m.releasedAt >= this.settings.prePingIdleMs) {
      try {
        await client.query(';');
      } catch {
        this.#stats.pings_failed_total++;
        this.#count('ping_failed');
        client.release(true);
        return false;
      }
    }
    return true;
  }

  #giveBack(client: PoolClient, err: unknown): void {
    if (!this.#pool) {
      client.release();
      return;
    }
    let reason: CloseReason | undefined;
    const m = meta.get(client);
    if (err !== undefined) reason = 'error';
    else if ((client as unknown as { getTransactionStatus?: () => string | null }).getTransactionStatus?.() !== 'I') reason = 'dirty';
    else if (m !== undefined && Date.now() >= m.expiresAt) reason = 'recycled';
    else if (this.#pool.totalCount > this.settings.maxSize) reason = 'overflow';
    if (reason !== undefined) {
      this.#count(reason);
      client.release(true);
      return;
    }
    if (m) m.releasedAt = Date.now();
    client.release();
  }

  #connected(client: pg.ClientBase, started: number, err?: Error): void {
    const seconds = (performance.now() - started) / 1000;
    if (err) {
      this.#error(/timeout/i.test(err.message) ? 'connect_timeout' : 'connect', err);
      return;
    }
    this.#stats.connections_opened_total++;
    this.#observer.connected?.(this.tenant, seconds);
    // Lifetime jittered by up to −5 % so a pool's connections don't all reconnect together.
    const lifetimeMs = this.settings.recycleSeconds * 1000 * (1 - Math.random() * 0.05);
    meta.set(client, { expiresAt: this.settings.recycleSeconds > 0 ? Date.now() + lifetimeMs : Infinity, releasedAt: Date.now() });
    // Errors on a checked-out client are emitted on the client; without a listener a server
    // restart would crash the worker. pg-pool only listens while the client is idle.
    if (this.#pool) client.on('error', (e: Error) => this.#error('active', e));
  }

  #error(kind: ConnectionErrorKind, err: Error): void {
    this.#stats.connection_errors_total[kind] = (this.#stats.connection_errors_total[kind] ?? 0) + 1;
    if (kind === 'idle') this.#count('error');
    this.#onError(kind, err);
  }

  #count(reason: CloseReason, n = 1): void {
    this.#stats.connections_closed_total[reason] = (this.#stats.connections_closed_total[reason] ?? 0) + n;
  }

  #connectError(err: unknown): LensfleetError {
    if (err instanceof LensfleetError) return err;
    const e = err as Error & { code?: string };
    const timedOut = /timeout/i.test(e.message ?? '');
    const code = timedOut ? 'CONNECT_TIMEOUT' : 'CONNECTION_FAILED';
    const what = timedOut
      ? `opening a connection took longer than ${this.settings.connectTimeoutMs} ms`
      : `cannot connect (${e.code ?? 'error'}): ${e.message}`;
    return new LensfleetError(code, `tenant ${this.tenant}: ${what}`, { cause: err, details: { tenant: this.tenant } });
  }
}

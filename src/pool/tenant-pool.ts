/**
 * One tenant's connections in this process: a thin wrapper around `pg.Pool` that adds what it
 * lacks — a typed acquire timeout distinct from the connect timeout, bounded waiting, warm-up and
 * refill to minSize, overflow connections closed on release, pre-ping of idle connections,
 * jittered lifetime, destroy-on-dirty-return, leak detection, a process-wide connection budget
 * hook, and a stats snapshot. It knows nothing of lenses or BullMQ.
 *
 * With `pooling: false` (the guide's rollback plan) every acquire opens a fresh connection and
 * every release closes it; stats, timeouts and the budget work the same.
 */
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import type { PoolSettings } from '../config.js';
import { DeadlineQueue } from './deadline-queue.js';
import { LensfleetError } from '../errors.js';
import { closeReasons, meta, PooledClient, type ClientMeta, type PooledClientOptions } from './pooled-client.js';
import type {
  CheckoutCallback,
  CloseReason,
  ConnectionBudget,
  ConnectionErrorKind,
  PoolClient,
  PoolEvent,
  PoolObserver,
  PoolStats,
  TenantPoolOptions,
} from './types.js';
import { withTimeout } from '../timeout.js';

export type * from './types.js';

/** A pre-ping slower than this counts as failed (the connection is destroyed, another is used). */
const PING_TIMEOUT_MS = 2000;
/** Longest wait for an evicted connection's socket to close. */
const EVICT_WAIT_MS = 1000;

/** What a settled waiter keeps instead of its caller's callback (see #settle). */
const SETTLED: CheckoutCallback = () => {};

/** One acquire in progress. */
interface Waiter {
  /** performance.now() at the start, and the deadline on the same clock. */
  readonly started: number;
  readonly deadline: number;
  holder: Readonly<Record<string, unknown>> | undefined;
  done: CheckoutCallback;
  /** Granted, failed or timed out: whatever comes later is handed back. */
  settled: boolean;
}

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
  readonly #budget: ConnectionBudget | undefined;
  readonly #onEvent: (event: PoolEvent) => void;
  #closed = false;
  #closing: Promise<void> | undefined;
  #refillScheduled = false;
  #waiting = 0;
  #inUse = 0;
  #unpooledOpen = 0;
  /** Connections counted in `size` that are still waiting for the budget or connecting. */
  #opening = 0;
  #lastUsedAt = Date.now();
  /**
   * Metadata of every open connection, for the leak sweeper (which looks at the checked-out ones).
   * Changed on open and close only: a Set add/delete per checkout cost ~0.8 µs (V8 reallocates a
   * small Set's table as it empties and refills).
   */
  readonly #connections = new Set<ClientMeta>();
  #leakSweeper: NodeJS.Timeout | undefined;
  /** Every acquire's deadline on one timer (deadlines grow in start order: one timeout per pool). */
  readonly #deadlines = new DeadlineQueue<Waiter>((w) => this.#expired(w));
  /** Armed while the pool holds overflow connections: closes them once demand stayed ≤ maxSize. */
  #overflowTimer: NodeJS.Timeout | undefined;
  /** Highest demand (in use + waiting) since the overflow timer was armed. */
  #peakDemand = 0;
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
    this.#budget = opts.budget;
    this.#onEvent = opts.onEvent ?? (() => {});
    this.#clientConfig = {
      connectionString: opts.databaseUrl.reveal(),
      application_name: opts.applicationName ?? 'lensfleet',
      // Session defaults make a plain lens query one round trip: read-only and time-bounded
      // without a BEGIN/SET/COMMIT around it.
      statement_timeout: opts.settings.statementTimeoutMs,
      options: '-c default_transaction_read_only=on',
      connectionTimeoutMillis: opts.settings.connectTimeoutMs,
    };
    if (!this.pooling) return;
    const clientConfig = this.#clientConfig;
    const poolOptions: PooledClientOptions = {
      Client: PooledClient as unknown as typeof pg.Client,
      // A function, not the object: the config holds the database URL (a secret), and pg-pool
      // copies its options around; a dump of them then shows no URL.
      clientConfig: () => clientConfig,
      openCounted: (client, open, done) => this.#openCounted(client, open, done),
      max: this.max,
      min: this.min,
      idleTimeoutMillis: opts.settings.idleTimeoutMs,
    };
    this.#pool = new pg.Pool(poolOptions);
    // An idle client's error (server restart, pg_terminate_backend) is emitted here; without a
    // listener it would crash the process. pg-pool removes that client itself.
    this.#pool.on('error', (err, client) => {
      closeReasons.set(client, 'error');
      this.#error('idle', err);
    });
    this.#pool.on('remove', (client) => this.#removed(client));
  }

  /** Open connections up to minSize now (pg.Pool's `min` does not pre-open), within the budget. */
  async warm(): Promise<void> {
    const pool = this.#pool;
    if (!pool) return;
    const need = Math.min(this.min - pool.totalCount, this.#budget?.free() ?? Infinity);
    if (need <= 0) return;
    // pg.Pool hands out idle connections before it opens new ones: borrow those too, so that
    // `need` new connections really open.
    const borrow = pool.idleCount;
    const clients = await Promise.allSettled(Array.from({ length: need + borrow }, () => pool.connect()));
    let firstError: unknown;
    for (const r of clients) {
      // Straight back, without touching releasedAt: a borrowed connection keeps its idle age
      // (and so its pre-ping), a new one is fresh.
      if (r.status === 'fulfilled') r.value.release();
      else firstError ??= r.reason;
    }
    if (firstError !== undefined) throw this.#connectError(firstError);
  }

  /**
   * Get a connection, waiting at most `acquireTimeoutMs` (`POOL_TIMEOUT`), with at most
   * `maxWaiting` acquires queued (`POOL_BUSY`). A connection that arrives after its waiter gave
   * up goes straight back to the pool. `holder` (job id, lens…) is reported if the connection leaks.
   */
  acquire(holder?: Readonly<Record<string, unknown>>): Promise<PoolClient> {
    return new Promise<PoolClient>((resolve, reject) => this.checkout(holder, (err, client) => (err ? reject(err) : resolve(client!))));
  }

  /**
   * `acquire` in callback form, for the hot path: no promise per checkout, and under load the
   * connection a job releases reaches the next waiting job on the same stack, so its query goes
   * out at once (as `pg.Pool.query` does). Same errors, timeouts and bounds as `acquire`.
   */
  checkout(holder: Readonly<Record<string, unknown>> | undefined, done: CheckoutCallback): void {
    if (this.#closed) {
      return done(new LensfleetError('POOL_CLOSED', `pool ${this.key} is closed`, { details: { tenant: this.tenant } }), undefined);
    }
    this.#stats.requests_total++;
    this.#lastUsedAt = Date.now();
    if (this.#waiting >= this.settings.maxWaiting) {
      this.#stats.pool_busy_total++;
      return done(
        new LensfleetError('POOL_BUSY', `pool ${this.key} has ${this.#waiting} acquires waiting (maxWaiting=${this.settings.maxWaiting}); try again later`, {
          details: { tenant: this.tenant, ...this.#numbers() },
        }),
        undefined,
      );
    }
    this.#waiting++;
    const now = performance.now();
    const w: Waiter = { started: now, deadline: now + this.settings.acquireTimeoutMs, holder, done, settled: false };
    this.#deadlines.add(w);
    this.#attempt(w);
  }

  #attempt(w: Waiter): void {
    // pg.Pool's callback form: no promise of its own per checkout.
    if (this.#pool) this.#pool.connect((err, client) => this.#checkedOut(w, err, client));
    else
      this.#checkout().then(
        (client) => this.#checkedOut(w, undefined, client),
        (err: Error) => this.#checkedOut(w, err, undefined),
      );
  }

  #checkedOut(w: Waiter, err: Error | null | undefined, client: PoolClient | undefined): void {
    if (err || client === undefined) {
      if (w.settled) return;
      this.#settle(w)(this.#connectError(err ?? new Error('pg.Pool returned no connection')), undefined);
      return;
    }
    if (w.settled) return this.#handBackLate(client);
    const usable = this.#validate(client);
    if (usable === true) this.#grant(w, client);
    else if (usable === false) this.#retry(w);
    else
      void usable.then((ok) => {
        if (!ok) this.#retry(w);
        else if (w.settled) this.#handBackLate(client);
        else this.#grant(w, client);
      });
  }

  /** The connection was discarded (dead, expired): try another while time remains (else the deadline rejects). */
  #retry(w: Waiter): void {
    if (!w.settled && performance.now() < w.deadline) this.#attempt(w);
  }

  /**
   * A connection for a waiter that already gave up goes back to the pool: no leak. Not on this
   * stack: pg.Pool calls back synchronously while it pulses its queue, and timed-out waiters
   * stay queued there; handing each back at once would recurse once per such entry (a pool
   * saturated for minutes holds thousands) and overflow the stack.
   */
  #handBackLate(client: PoolClient): void {
    queueMicrotask(() => this.#giveBack(client, undefined));
  }

  #grant(w: Waiter, client: PoolClient): void {
    const holder = w.holder;
    const done = this.#settle(w);
    this.#handOut(client, holder);
    done(undefined, client);
    try {
      this.#observer.acquired?.(this.tenant, (performance.now() - w.started) / 1000);
    } catch {
      // an observer (metrics) must never break a checkout inside pg.Pool's callback
    }
  }

  /**
   * Mark the waiter done and return its callback. The waiter drops its references: the deadline
   * queue may keep a settled waiter for a while, and through its callback it would keep the job's
   * promise and result alive (under steady waiting: a thousand results surviving every scavenge).
   */
  #settle(w: Waiter): CheckoutCallback {
    const done = w.done;
    w.settled = true;
    w.done = SETTLED;
    w.holder = undefined;
    this.#waiting--;
    this.#stats.requests_wait_ms_total += performance.now() - w.started;
    return done;
  }

  /** On close: acquires still waiting fail now with POOL_CLOSED (a connection that reaches one later goes back). */
  #rejectWaiters(): void {
    this.#deadlines.drain((w) => {
      this.#settle(w)(
        new LensfleetError('POOL_CLOSED', `pool ${this.key} was closed while this acquire waited`, { details: { tenant: this.tenant } }),
        undefined,
      );
    });
  }

  /** An acquire's deadline passed: POOL_TIMEOUT with the pool's numbers. */
  #expired(w: Waiter): void {
    const done = this.#settle(w);
    this.#stats.acquire_timeouts_total++;
    done(
      new LensfleetError(
        'POOL_TIMEOUT',
        `pool ${this.key} timed out after ${this.settings.acquireTimeoutMs} ms waiting for a connection (${this.#describe()})`,
        {
          details: { tenant: this.tenant, ...this.#numbers() },
        },
      ),
      undefined,
    );
  }

  /**
   * Return a connection. It is destroyed instead of reused when the job failed (`err`), when it
   * is left inside a transaction, when it is past its lifetime, or when it is an overflow
   * connection. Releasing the same checkout again does nothing.
   */
  release(client: PoolClient, err?: unknown): void {
    const m = meta.get(client);
    // A second release of one checkout is a caller's bug; counting it would drive inUse (and
    // the process budget, for unpooled connections) below the truth for good.
    if (m !== undefined && !m.checkedOut) return;
    this.#inUse--;
    this.#lastUsedAt = Date.now();
    if (m) {
      m.checkedOut = false;
      m.holder = undefined;
    }
    if (this.#pool && this.settings.resetOnReturn && this.#unusable(client, err) === undefined) {
      // Session state a job set (SET outside a transaction, SET ROLE…) must not reach the next
      // job: reset to the connection's startup defaults (read-only, statement timeout). The
      // command is queued on the connection, so the next user's query runs after it; if it
      // fails, the connection errors and is replaced. Prepared statements survive RESET ALL.
      client.query('RESET ALL').catch(() => {});
    }
    this.#giveBack(client, err);
  }

  /**
   * Close one idle connection for another tenant that needs room in the process budget.
   * Resolves true once it is closed, false when this pool has none to spare.
   */
  evictIdle(): Promise<boolean> {
    return this.#closeIdle(1, 'evicted').then((closed) => closed > 0);
  }

  /**
   * Close every connection; waiting and later acquires fail with `POOL_CLOSED`. Checked-out
   * connections are closed as they are released (a graceful drain). Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      clearTimeout(this.#overflowTimer);
      this.#rejectWaiters();
      await this.#pool?.end();
      clearInterval(this.#leakSweeper);
    })();
    return this.#closing;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Connection slots taken, including ones still waiting for the budget or connecting (what the budget counts). */
  get size(): number {
    return this.#pool ? this.#pool.totalCount : this.#unpooledOpen;
  }

  /** Connections actually open (what the database sees). */
  get open(): number {
    return this.size - this.#opening;
  }

  get idleCount(): number {
    return this.#pool ? this.#pool.idleCount : 0;
  }

  get lastUsedAt(): number {
    return this.#lastUsedAt;
  }

  get busy(): boolean {
    return this.#inUse > 0 || this.#waiting > 0;
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
      opening: n.opening,
      inUse: n.active,
      idle: n.idle,
      waiting: n.waiting,
      ...this.#stats,
      requests_wait_ms_total: Math.round(this.#stats.requests_wait_ms_total),
      connections_closed_total: { ...this.#stats.connections_closed_total },
      connection_errors_total: { ...this.#stats.connection_errors_total },
      idle_for_ms: Date.now() - this.#lastUsedAt,
    };
  }

  #numbers() {
    return { total: this.open, opening: this.#opening, active: this.#inUse, idle: this.idleCount, waiting: this.#waiting };
  }

  #describe(): string {
    const n = this.#numbers();
    return `total=${n.total}, active=${n.active}, idle=${n.idle}, waiting=${n.waiting}, max=${this.max}`;
  }

  /** Reserve budget, open, time and register one connection; `open` is the raw connect. */
  #openCounted(client: pg.Client, open: (cb: (err: Error | null) => void) => void, done: (err: Error | null) => void): void {
    this.#opening++;
    const connect = () => {
      const started = performance.now();
      open((err) => {
        this.#opening--;
        this.#connected(client, started, err ?? undefined);
        if (err) this.#budget?.released();
        done(err);
      });
    };
    if (!this.#budget) return connect();
    this.#budget.reserve(this, this.settings.connectTimeoutMs).then(connect, (err: Error) => {
      this.#opening--;
      this.#error('connect', err);
      this.#budget?.released();
      done(err);
    });
  }

  async #checkout(): Promise<PoolClient> {
    if (this.#pool) return this.#pool.connect();
    // Rollback plan: a fresh connection per job, closed on release.
    const client = new pg.Client(this.#clientConfig);
    client.on('error', (err) => this.#error('active', err));
    this.#unpooledOpen++;
    try {
      await new Promise<void>((resolve, reject) =>
        this.#openCounted(
          client,
          (cb) => client.connect(cb),
          (err) => (err ? reject(err) : resolve()),
        ),
      );
    } catch (err) {
      this.#unpooledOpen--;
      throw err;
    }
    const c = client as unknown as PoolClient;
    c.release = () => {
      const m = meta.get(client);
      if (m) this.#connections.delete(m);
      this.#unpooledOpen--;
      this.#count('unpooled');
      void client
        .end()
        .catch(() => {})
        .finally(() => this.#budget?.released());
    };
    return c;
  }

  #handOut(client: PoolClient, holder: Readonly<Record<string, unknown>> | undefined): void {
    this.#inUse++;
    const demand = this.#inUse + this.#waiting;
    if (demand > this.#peakDemand) this.#peakDemand = demand;
    const m = meta.get(client);
    if (!m) return;
    m.checkedOut = true;
    if (this.settings.leakDetectionMs > 0) {
      m.handedOutAt = Date.now();
      m.holder = holder;
      m.leakReported = false;
      this.#leakSweeper ??= this.#startLeakSweeper();
    }
  }

  /** One timer per pool, not one per acquire: checks held connections a few times per threshold. */
  #startLeakSweeper(): NodeJS.Timeout {
    const threshold = this.settings.leakDetectionMs;
    const timer = setInterval(
      () => {
        const now = Date.now();
        for (const m of this.#connections) {
          if (!m.checkedOut || m.leakReported || now - m.handedOutAt < threshold) continue;
          m.leakReported = true;
          this.#stats.leaks_total++;
          this.#onEvent({ type: 'leak', heldMs: now - m.handedOutAt, holder: m.holder });
        }
      },
      Math.max(10, Math.min(1000, Math.floor(threshold / 4))),
    );
    timer.unref();
    return timer;
  }

  /** Pre-ping and lifetime check before hand-out; false = the connection was discarded. */
  #validate(client: PoolClient): boolean | Promise<boolean> {
    const m = meta.get(client);
    if (!m || !this.#pool) return true;
    const now = Date.now();
    if (now >= m.expiresAt) {
      this.#destroy(client, 'recycled');
      return false;
    }
    if (!this.settings.prePing || now - m.releasedAt < this.settings.prePingIdleMs) return true; // no round trip
    // A connection that stopped answering (network partition) must not stall the acquire.
    return withTimeout(client.query(';'), PING_TIMEOUT_MS).then(
      () => true,
      () => {
        this.#stats.pings_failed_total++;
        this.#destroy(client, 'ping_failed');
        return false;
      },
    );
  }

  #giveBack(client: PoolClient, err: unknown): void {
    if (!this.#pool) return client.release();
    const reason = this.#unusable(client, err);
    if (reason !== undefined) return this.#destroy(client, reason);
    const m = meta.get(client);
    if (m) m.releasedAt = Date.now();
    client.release();
    if (this.#overflowTimer === undefined && this.settings.overflowLingerMs > 0 && this.#pool.totalCount > this.#keep) this.#armOverflowTrim();
  }

  /** Connections the overflow trim never goes below: maxSize, or minSize when that is larger (kept warm). */
  get #keep(): number {
    return Math.max(this.settings.maxSize, this.min);
  }

  /**
   * Overflow connections stay while they are needed: they close once demand has not exceeded
   * maxSize for a whole overflowLingerMs. Under steady demand around maxSize (a worker whose
   * concurrency is above maxSize) they are reused instead of reopened for every burst.
   */
  #armOverflowTrim(): void {
    this.#peakDemand = this.#inUse + this.#waiting;
    this.#overflowTimer = setTimeout(() => {
      this.#overflowTimer = undefined;
      const pool = this.#pool;
      if (this.#closed || pool === undefined) return;
      const excess = pool.totalCount - this.#keep;
      if (excess <= 0) return;
      if (this.#peakDemand <= this.#keep) {
        void this.#closeIdle(excess, 'overflow');
      }
      // Overflow still open (in use, or needed in this window): look again after another window.
      if (pool.totalCount - this.#keep > 0) this.#armOverflowTrim();
    }, this.settings.overflowLingerMs);
    this.#overflowTimer.unref();
  }

  /**
   * Close up to `count` idle connections; resolves with how many closed, once their sockets have
   * ended (so the server has that many connections fewer), or after EVICT_WAIT_MS at most: they no
   * longer count here either way. Checked out through pg.Pool, which hands out idle connections
   * before it opens any: so only while no acquire waits, and at most as many as are idle.
   */
  #closeIdle(count: number, reason: CloseReason): Promise<number> {
    const pool = this.#pool;
    if (!pool || this.#closed || pool.waitingCount > 0 || this.#waiting > 0) return Promise.resolve(0);
    const closing = Array.from({ length: Math.min(count, pool.idleCount) }, () =>
      pool.connect().then(
        (client) =>
          new Promise<number>((resolve) => {
            const timer = setTimeout(() => resolve(1), EVICT_WAIT_MS).unref();
            client.once('end', () => {
              clearTimeout(timer);
              resolve(1);
            });
            this.#destroy(client, reason);
          }),
        () => 0,
      ),
    );
    return Promise.all(closing).then((closed) => closed.reduce((a, b) => a + b, 0));
  }

  /** Why a returned connection must be closed instead of reused, if it must. */
  #unusable(client: PoolClient, err: unknown): CloseReason | undefined {
    if (err !== undefined) return 'error';
    if (client.getTransactionStatus() !== 'I') return 'dirty';
    const m = meta.get(client);
    if (m !== undefined && Date.now() >= m.expiresAt) return 'recycled';
    // With overflowLingerMs = 0, SQLAlchemy's QueuePool rule: a returned connection is closed as
    // overflow when the pool already keeps maxSize idle ones. (Otherwise #armOverflowTrim closes
    // overflow once demand has stayed at or below maxSize for the linger.)
    const pool = this.#pool;
    if (
      this.settings.overflowLingerMs === 0 &&
      pool !== undefined &&
      pool.totalCount > this.settings.maxSize &&
      pool.idleCount >= this.settings.maxSize &&
      this.#waiting === 0
    )
      return 'overflow';
    return undefined;
  }

  #destroy(client: PoolClient, reason: CloseReason): void {
    closeReasons.set(client, reason);
    client.release(true);
  }

  #connected(client: pg.ClientBase, started: number, err?: Error): void {
    if (err) {
      this.#error(/timeout/i.test(err.message) ? 'connect_timeout' : 'connect', err);
      return;
    }
    this.#stats.connections_opened_total++;
    this.#observer.connected?.(this.tenant, (performance.now() - started) / 1000);
    // Lifetime jittered by up to −5 % so a pool's connections don't all reconnect together.
    const lifetimeMs = this.settings.recycleSeconds * 1000 * (1 - Math.random() * 0.05);
    const m: ClientMeta = {
      expiresAt: this.settings.recycleSeconds > 0 ? Date.now() + lifetimeMs : Infinity,
      releasedAt: Date.now(),
      handedOutAt: 0,
      holder: undefined,
      leakReported: false,
      checkedOut: false,
    };
    meta.set(client, m);
    this.#connections.add(m);
    // Errors on a checked-out client are emitted on the client; without a listener a server
    // restart would crash the worker. pg-pool only listens (and counts `idle`) while it is idle.
    if (this.#pool) client.on('error', (e: Error) => m.checkedOut && this.#error('active', e));
  }

  #removed(client: pg.Client): void {
    const reason = closeReasons.get(client) ?? (this.#closed ? 'pool_closed' : 'idle');
    this.#count(reason);
    const m = meta.get(client);
    if (m) this.#connections.delete(m);
    this.#budget?.released();
    this.#scheduleRefill();
  }

  /** Top the pool back up to minSize after connections died or were recycled (in the background). */
  #scheduleRefill(): void {
    // With acquires waiting, the pool is opening connections anyway.
    if (this.#refillScheduled || this.#closed || !this.#pool || this.#pool.totalCount >= this.min || this.#waiting > 0) return;
    this.#refillScheduled = true;
    setTimeout(() => {
      this.#refillScheduled = false;
      if (this.#closed) return;
      this.warm().catch(() => {
        // counted as a connection error already; the next removal or acquire tries again
      });
    }, 10).unref();
  }

  #error(kind: ConnectionErrorKind, err: Error): void {
    this.#stats.connection_errors_total[kind] = (this.#stats.connection_errors_total[kind] ?? 0) + 1;
    this.#onEvent({ type: 'connection_error', kind, code: (err as { code?: string }).code, message: err.message });
  }

  #count(reason: CloseReason): void {
    this.#stats.connections_closed_total[reason] = (this.#stats.connections_closed_total[reason] ?? 0) + 1;
    if (reason !== 'unpooled') this.#onEvent({ type: 'closed_connection', reason });
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

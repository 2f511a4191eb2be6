/**
 * One tenant's connections in this process. The pool owns the acquire path — a typed acquire
 * timeout distinct from the connect timeout, bounded waiting, hand-out, destroy-on-dirty-return,
 * leak detection — and the stats snapshot; its connection source (source.ts) owns where
 * connections come from and go back to: a `pg.Pool` that keeps them (pooled-source.ts) or a fresh
 * connection per job (unpooled-source.ts, the guide's rollback plan). Both count in one ledger
 * (ledger.ts); background work is in housekeeping.ts. It knows nothing of lenses or BullMQ.
 */
import { performance } from 'node:perf_hooks';
import type pg from 'pg';
import type { PoolSettings } from '../config.js';
import { LensfleetError, markConnectionLoss } from '../errors.js';
import { DeadlineQueues } from './deadline-queue.js';
import { LeakSweep } from './housekeeping.js';
import { PoolLedger } from './ledger.js';
import { meta, OpenNotNeeded } from './pooled-client.js';
import { PooledSource } from './pooled-source.js';
import type { ConnectionSource, SourceHost } from './source.js';
import {
  poolStats,
  type BudgetMember,
  type CheckoutCallback,
  type CloseReason,
  type LeaseMember,
  type ManagedPool,
  type PoolClient,
  type PoolLeases,
  type PoolEvent,
  type PoolObserver,
  type PoolStats,
  type TenantPoolOptions,
} from './types.js';
import { UnpooledSource } from './unpooled-source.js';

export type * from './types.js';

/** What a settled waiter keeps instead of its caller's callback (see #settle). */
const SETTLED: CheckoutCallback = () => {};

/** One acquire in progress. */
interface Waiter {
  /** performance.now() at the start, and the deadline on the same clock. */
  readonly started: number;
  readonly deadline: number;
  /** How long this acquire may wait (the pool's acquireTimeoutMs, or a job's shorter deadline). */
  readonly timeoutMs: number;
  holder: Readonly<Record<string, unknown>> | undefined;
  done: CheckoutCallback;
  /** Granted, failed or timed out: whatever comes later is handed back. */
  settled: boolean;
  /**
   * Waits without an open of its own (its open was dropped as not needed): served by a
   * connection another job releases, or by a new open when one closes instead.
   */
  parked: boolean;
}

export class TenantPool implements BudgetMember, LeaseMember, ManagedPool {
  /** Which backend's pool this is (the job processor dispatches on it). */
  readonly backend = 'pg' as const;
  readonly tenant: string;
  readonly key: string;
  readonly max: number;
  readonly min: number;
  readonly settings: PoolSettings;
  readonly pooling: boolean;
  readonly #source: ConnectionSource;
  readonly #ledger: PoolLedger;
  readonly #observer: PoolObserver;
  /** The tenant's fleet connection cap, when it has one. */
  readonly #leases: PoolLeases | undefined;
  #transactionPooler: boolean;
  readonly #onEvent: ((event: PoolEvent) => void) | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;
  #waiting = 0;
  #inUse = 0;
  /** Highest demand (in use + waiting) since the overflow trim last asked. */
  #peakDemand = 0;
  #lastUsedAt = Date.now();
  /** Acquire deadlines: one timer per distinct timeout (acquireTimeoutMs, or a lens's shorter one). */
  readonly #deadlines = new DeadlineQueues<Waiter>((w) => this.#expired(w));
  /** Acquires waiting with no open of their own, oldest first (settled ones are skipped). */
  #parked: Waiter[] = [];
  /** Started at the first hand-out (when leak detection is on), then it runs until close. */
  readonly #leakSweep: LeakSweep | undefined;
  #sweeping = false;
  /** Acquire-path counters (the connection counters are the ledger's). */
  readonly #requests = {
    requests_total: 0,
    requests_wait_ms_total: 0,
    acquire_timeouts_total: 0,
    pool_busy_total: 0,
  };

  constructor(opts: TenantPoolOptions) {
    this.tenant = opts.tenant;
    this.key = opts.key;
    this.settings = opts.settings;
    this.max = opts.max;
    this.min = Math.min(opts.settings.minSize, opts.max);
    this.pooling = opts.pooling;
    this.#observer = opts.observer ?? {};
    this.#leases = opts.leases?.(this);
    const ledger = new PoolLedger({
      tenant: opts.tenant,
      settings: opts.settings,
      member: this,
      observer: opts.observer,
      budget: opts.budget,
      leases: this.#leases,
      onEvent: opts.onEvent,
    });
    this.#ledger = ledger;
    this.#transactionPooler = opts.settings.transactionPooler;
    this.#onEvent = opts.onEvent;
    const clientConfig: pg.ClientConfig = {
      connectionString: opts.databaseUrl.reveal(),
      application_name: opts.applicationName ?? 'lensfleet',
      // Session defaults make a plain lens query one round trip: read-only and time-bounded
      // without a BEGIN/SET/COMMIT around it. A transaction-mode pooler would refuse them as
      // startup parameters (or drop them): its jobs set both in every transaction instead.
      ...(opts.settings.transactionPooler ? {} : { statement_timeout: opts.settings.statementTimeoutMs, options: '-c default_transaction_read_only=on' }),
    };
    const pool = this;
    const host: SourceHost = {
      get waiting() {
        return pool.#waiting;
      },
      get closed() {
        return pool.#closed;
      },
      takePeakDemand() {
        const peak = pool.#peakDemand;
        pool.#peakDemand = pool.#inUse + pool.#waiting;
        return peak;
      },
      handOff(client) {
        const w = pool.#deadlines.first();
        if (w === undefined) return false;
        pool.#grant(w, client);
        return true;
      },
    };
    const sourceOptions = {
      settings: opts.settings,
      max: this.max,
      min: this.min,
      ledger,
      host,
      client: {
        // A function, not the object: the config holds the database URL (a secret), and pg-pool
        // copies its options around; a dump of them then shows no URL.
        clientConfig: () => clientConfig,
        openCounted: ledger.open,
        connectTimeoutMs: opts.settings.connectTimeoutMs,
      },
    };
    // The one place the mode is decided (a mode is a type, not a flag checked everywhere).
    this.#source = opts.pooling ? new PooledSource(sourceOptions) : new UnpooledSource(sourceOptions);
    if (opts.settings.leakDetectionMs > 0) {
      this.#leakSweep = new LeakSweep(
        ledger.connections,
        opts.settings.leakDetectionMs,
        (m, heldMs) => {
          ledger.counters.leaks_total++;
          ledger.event({ type: 'leak', heldMs, holder: m.holder });
        },
        ledger.taskFailed,
      );
    }
  }

  /**
   * Open connections up to minSize now (pg.Pool's `min` does not pre-open), within the process
   * budget. Resolves once at least one connection is open — one serves; the rest are opened in
   * the background with backoff — and rejects with the first error when none could be opened.
   * Nothing to do without pooling.
   */
  warm(): Promise<void> {
    return this.#source.warm();
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
   * out at once (as `pg.Pool.query` does). Same errors, timeouts and bounds as `acquire`;
   * `timeoutMs` shortens the wait below acquireTimeoutMs (a job's own deadline), never lengthens it.
   */
  checkout(holder: Readonly<Record<string, unknown>> | undefined, done: CheckoutCallback, timeoutMs?: number): void {
    if (this.#closed) {
      return done(new LensfleetError('POOL_CLOSED', `pool ${this.key} is closed`, { details: { tenant: this.tenant } }), undefined);
    }
    this.#requests.requests_total++;
    this.#lastUsedAt = Date.now();
    if (this.#isQueueFull()) {
      this.#requests.pool_busy_total++;
      return done(
        new LensfleetError('POOL_BUSY', `pool ${this.key} has ${this.#waiting} acquires waiting (maxWaiting=${this.settings.maxWaiting}); try again later`, {
          details: { tenant: this.tenant, ...this.#numbers() },
        }),
        undefined,
      );
    }
    this.#waiting++;
    const now = performance.now();
    const limit = timeoutMs !== undefined && timeoutMs < this.settings.acquireTimeoutMs ? Math.max(0, timeoutMs) : this.settings.acquireTimeoutMs;
    const w: Waiter = { started: now, deadline: now + limit, timeoutMs: limit, holder, done, settled: false, parked: false };
    this.#deadlines.add(w, limit);
    // A capped tenant whose opens already wait for a fleet lease: another open would only queue
    // behind them. This acquire takes the next connection released (or one of theirs).
    if (this.#leases !== undefined && this.#source.sharesConnections && this.#ledger.leaseWaiting > 0 && this.#source.idleCount === 0) return this.#park(w);
    this.#attempt(w);
  }

  #attempt(w: Waiter): void {
    this.#source.connect((err, client) => this.#checkedOut(w, err, client));
  }

  #checkedOut(w: Waiter, err: Error | null | undefined, client: PoolClient | undefined): void {
    if (err || client === undefined) {
      if (err instanceof OpenNotNeeded) {
        if (w.settled) return;
        // Its open was dropped as not needed (it waited for a fleet lease while other acquires
        // were served) yet this acquire still waits: it takes the next connection released (a
        // new open would only queue for a lease again, and be dropped again) — when connections
        // are shared at all; without pooling each acquire needs an open of its own.
        return this.#source.sharesConnections ? this.#park(w) : this.#retry(w);
      }
      // An open failed: a parked acquire, which counted on the opens in flight, opens its own.
      if (this.#parked.length > 0) this.#unpark();
      if (w.settled) return;
      this.#settle(w)(this.#acquireError(err), undefined);
      return;
    }
    if (w.settled) return this.#handBackLate(client);
    const usable = this.#source.validate(client);
    if (usable === true) this.#grant(w, client);
    else if (usable === false) this.#retry(w);
    else
      void usable.then((ok) => {
        if (!ok) this.#retry(w);
        else if (w.settled) this.#handBackLate(client);
        else this.#grant(w, client);
      });
  }

  #park(w: Waiter): void {
    w.parked = true;
    this.#parked.push(w);
  }

  /** A connection closed instead of going back: the longest parked acquire opens one of its own. */
  #unpark(): void {
    while (this.#parked.length > 0) {
      const w = this.#parked.shift()!;
      if (w.settled || !w.parked) continue;
      w.parked = false;
      return this.#retry(w);
    }
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
    queueMicrotask(() => this.#return(client, undefined));
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
    w.parked = false;
    w.done = SETTLED;
    w.holder = undefined;
    this.#waiting--;
    this.#requests.requests_wait_ms_total += performance.now() - w.started;
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
    this.#requests.acquire_timeouts_total++;
    done(
      new LensfleetError('POOL_TIMEOUT', `pool ${this.key} timed out after ${w.timeoutMs} ms waiting for a connection (${this.#describe()})`, {
        details: { tenant: this.tenant, ...this.#numbers() },
      }),
      undefined,
    );
  }

  /**
   * Return a connection. It is destroyed instead of reused when the job failed (`err`), when it
   * is left inside a transaction, when it is past its lifetime, or when it is an overflow
   * connection. Releasing the same checkout again does nothing. Release before classifying
   * `err` (classifyQueryError): when the connection had lost its socket, `err` is marked as
   * reporting that loss.
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
      // A query sent after the socket failed fails with a fresh error (not the one the client
      // emitted): what it reports is still that loss.
      if (m.lost && err !== undefined) markConnectionLoss(err);
    }
    this.#return(client, err);
  }

  /** Back to the source: reused when healthy, else destroyed with the reason. */
  #return(client: PoolClient, err: unknown): void {
    const reason = this.#unusable(client, err);
    if (reason === undefined) return this.#source.reuse(client);
    this.#source.destroy(client, reason);
    if (this.#parked.length > 0) this.#unpark();
  }

  /**
   * Whether an acquire now would be served without queueing (see `ManagedPool.canStartNow`).
   * The process budget is not asked: it is at least the worker's concurrency, so while a job
   * runs at least one connection of the process is idle (it is evicted for this one) or opening.
   */
  canStartNow(maxQueued = 0): boolean {
    if (this.#closed) return true;
    // What serves acquires without a release: idle connections, connections opening (a warm-up's
    // serve whoever waits), room to open more. Acquires waiting beyond those wait for releases.
    // A capped tenant whose opens already wait for a fleet lease has no room (another open would
    // queue behind them) and those opens serve no one soon.
    const leaseWaiting = this.#leases === undefined ? 0 : this.#ledger.leaseWaiting;
    const room = leaseWaiting > 0 ? 0 : Math.max(0, this.max - this.#source.size);
    const ahead = this.#waiting - (this.#source.idleCount + this.#ledger.opening - leaseWaiting + room);
    return ahead < Math.max(0, maxQueued);
  }

  /**
   * Close one idle connection for another tenant that needs room in the process budget.
   * Resolves true once it is closed, false when this pool has none to spare.
   */
  evictIdle(): Promise<boolean> {
    return this.#source.closeIdle(1, 'evicted').then((closed) => closed > 0);
  }

  /**
   * Another process waits for a lease of this tenant (its fleet cap is reached): close the idle
   * connections above minSize, so their leases go where they are needed. Resolves with how many closed.
   */
  shedIdle(): Promise<number> {
    const count = Math.min(this.idleCount, this.open - this.min);
    return count > 0 ? this.#source.closeIdle(count, 'lease_wanted') : Promise.resolve(0);
  }

  /** Close the idle connections whose fleet lease was lost (the ones in use close when released). */
  closeLost(): Promise<number> {
    return this.#source.closeIdleWhere((client) => meta.get(client)?.lease?.lost === true, 'lease_lost');
  }

  /**
   * Close every connection; waiting and later acquires fail with `POOL_CLOSED`. Checked-out
   * connections are closed as they are released (a graceful drain), or, with `abandonCheckedOut`,
   * ended now: the worker gave up waiting for their jobs (its shutdown timeout), which then fail
   * with a lost connection and are retried elsewhere; the statement timeout bounds what their
   * queries still cost the server. Idempotent (a later call may still abandon what is checked out).
   */
  close(opts: { abandonCheckedOut?: boolean } = {}): Promise<void> {
    if (opts.abandonCheckedOut) {
      for (const m of this.#ledger.connections) {
        if (!m.checkedOut) continue;
        // The job's query fails at once (pg ends a connection with a query in flight by destroying
        // its socket) with an error that, released with it, reports a lost connection: retried.
        m.lost = true;
        void m.client.end().catch(() => {});
      }
    }
    this.#closing ??= (async () => {
      this.#closed = true;
      this.#leases?.detach();
      this.#rejectWaiters();
      try {
        await this.#source.end();
      } finally {
        this.#leakSweep?.stop();
      }
    })();
    return this.#closing;
  }

  /**
   * Whether this tenant's connections go through a transaction-mode pooler (the setting, or
   * detected): consecutive jobs on one connection may meet different server sessions, so nothing
   * may be kept in the session between them (src/lens-run.ts).
   */
  get transactionPooler(): boolean {
    return this.#transactionPooler;
  }

  /** The server forgot a named statement this pool's connection had prepared: from now on, as if `transactionPooler` were set. */
  transactionPoolerDetected(): void {
    if (this.#transactionPooler) return;
    this.#transactionPooler = true;
    this.#onEvent?.({ type: 'transaction_pooler_detected' });
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Connection slots taken, including ones still waiting for the budget or connecting (what the budget counts). */
  get size(): number {
    return this.#source.size;
  }

  /** Connections actually open (what the database sees). */
  get open(): number {
    return this.#source.size - this.#ledger.opening;
  }

  get idleCount(): number {
    return this.#source.idleCount;
  }

  /** Acquires waiting now. */
  get waiting(): number {
    return this.#waiting;
  }

  get lastUsedAt(): number {
    return this.#lastUsedAt;
  }

  /** Its connections count in the process budget: itself. */
  get budgetMember(): BudgetMember {
    return this;
  }

  get busy(): boolean {
    return this.#inUse > 0 || this.#waiting > 0;
  }

  stats(): PoolStats {
    return poolStats(this, { ...this.#numbers(), leases: this.#ledger.leases }, { ...this.#ledger.counters, ...this.#requests }, this.#lastUsedAt);
  }

  /** maxWaiting acquires wait already. */
  #isQueueFull(): boolean {
    return this.#waiting >= this.settings.maxWaiting;
  }

  #numbers() {
    return { total: this.open, opening: this.#ledger.opening, active: this.#inUse, idle: this.idleCount, waiting: this.#waiting };
  }

  #describe(): string {
    const n = this.#numbers();
    const numbers = `total=${n.total}, active=${n.active}, idle=${n.idle}, waiting=${n.waiting}, max=${this.max}`;
    // Below max because of the fleet cap: say so (what to raise is fleetMaxConnections, not maxSize).
    if (this.#leases === undefined) return numbers;
    return `${numbers}, fleet leases=${this.#ledger.leases}, opens waiting for a fleet lease=${this.#ledger.leaseWaiting}`;
  }

  #handOut(client: PoolClient, holder: Readonly<Record<string, unknown>> | undefined): void {
    this.#inUse++;
    const demand = this.#inUse + this.#waiting;
    if (demand > this.#peakDemand) this.#peakDemand = demand;
    const m = meta.get(client);
    if (!m) return;
    m.checkedOut = true;
    if (this.#leakSweep !== undefined) {
      m.handedOutAt = Date.now();
      m.holder = holder;
      m.leakReported = false;
      if (!this.#sweeping) {
        this.#sweeping = true;
        this.#leakSweep.start();
      }
    }
  }

  /** Why a returned connection must be closed instead of reused, if it must. */
  #unusable(client: PoolClient, err: unknown): CloseReason | undefined {
    if (err !== undefined) return 'error';
    if (client.getTransactionStatus() !== 'I') return 'dirty';
    const m = meta.get(client);
    if (m === undefined) return undefined;
    if (Date.now() >= m.expiresAt) return 'recycled';
    if (m.lease !== undefined) {
      if (m.lease.lost) return 'lease_lost';
      // Other processes wait for this tenant's leases and this one holds more than its share.
      if (this.open > this.min && this.#leases!.giveBack(m.lease)) return 'lease_wanted';
    }
    return undefined;
  }

  /** The error an acquire fails with when the source could not give a connection. */
  #acquireError(err: Error | null | undefined): LensfleetError {
    if (err instanceof LensfleetError) return err;
    // Opening errors arrive typed (the ledger types them); anything else is pg.Pool's own.
    return new LensfleetError('CONNECTION_FAILED', `tenant ${this.tenant}: cannot connect: ${err?.message ?? 'no connection returned'}`, {
      cause: err,
      details: { tenant: this.tenant },
    });
  }
}

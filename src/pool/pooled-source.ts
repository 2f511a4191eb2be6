/**
 * The pooled connection source: a `pg.Pool` of `PooledClient`s, wrapped, not rewritten. Around it:
 * warm-up and refill to minSize, overflow connections closed once demand falls, recycling by
 * lifetime, pre-ping of connections that sat idle, `RESET ALL` on return when configured, and
 * closing idle connections on demand (for the process budget).
 */
import pg from 'pg';
import type { PoolSettings } from '../config.js';
import { withTimeout } from '../timeout.js';
import { OverflowTrim, Refill } from './housekeeping.js';
import type { PoolLedger } from './ledger.js';
import { closeReasons, meta, OpenNotNeeded, PooledClient, type PooledClientOptions } from './pooled-client.js';
import type { ConnectCallback, ConnectionSource, SourceHost, SourceOptions } from './source.js';
import type { CloseReason, PoolClient } from './types.js';

/** A pre-ping slower than this counts as failed (the connection is destroyed, another is used). */
const PING_TIMEOUT_MS = 2000;
/** Longest wait for an evicted connection's socket to close. */
const EVICT_WAIT_MS = 1000;

export class PooledSource implements ConnectionSource {
  readonly sharesConnections = true;
  readonly #pool: pg.Pool;
  readonly #settings: PoolSettings;
  readonly #min: number;
  /** Connections the overflow trim never goes below: maxSize, or minSize when that is larger (kept warm). */
  readonly #keep: number;
  readonly #ledger: PoolLedger;
  readonly #host: SourceHost;
  readonly #trim: OverflowTrim;
  readonly #refill: Refill;

  constructor(opts: SourceOptions) {
    this.#settings = opts.settings;
    this.#min = opts.min;
    this.#keep = Math.max(opts.settings.maxSize, opts.min);
    this.#ledger = opts.ledger;
    this.#host = opts.host;
    const poolOptions: PooledClientOptions = {
      ...opts.client,
      Client: PooledClient as unknown as typeof pg.Client,
      max: opts.max,
      min: opts.min,
      idleTimeoutMillis: opts.settings.idleTimeoutMs,
    };
    this.#pool = new pg.Pool(poolOptions);
    // An idle client's error (server restart, pg_terminate_backend) is emitted here; without a
    // listener it would crash the process. pg-pool removes that client itself.
    this.#pool.on('error', (err, client) => {
      closeReasons.set(client, 'error');
      this.#ledger.idleError(err);
    });
    this.#pool.on('remove', (client) => this.#removed(client));
    const failed = this.#ledger.taskFailed;
    this.#trim = new OverflowTrim(
      {
        keep: this.#keep,
        excess: () => this.#pool.totalCount - this.#keep,
        takePeakDemand: () => this.#host.takePeakDemand(),
        closeOverflow: (count) => void this.closeIdle(count, 'overflow'),
      },
      this.#settings.overflowLingerMs,
      failed,
    );
    this.#refill = new Refill({ needsRefill: () => this.#needsRefill(), fill: () => this.#fill().then((r) => r.error === undefined) }, failed);
  }

  get size(): number {
    return this.#pool.totalCount;
  }

  get idleCount(): number {
    return this.#pool.idleCount;
  }

  connect(done: ConnectCallback): void {
    // pg.Pool's callback form: no promise of its own per checkout.
    this.#pool.connect(done);
  }

  /** Lifetime check and, for a connection idle longer than prePingIdleMs, a ping. */
  validate(client: PoolClient): boolean | Promise<boolean> {
    const m = meta.get(client);
    if (m === undefined) return true;
    const now = Date.now();
    if (now >= m.expiresAt) {
      this.destroy(client, 'recycled');
      return false;
    }
    if (m.lease?.lost) {
      this.destroy(client, 'lease_lost');
      return false;
    }
    if (!this.#settings.prePing || now - m.releasedAt < this.#settings.prePingIdleMs) return true; // no round trip
    // A connection that stopped answering (network partition) must not stall the acquire.
    return withTimeout(client.query(';'), PING_TIMEOUT_MS).then(
      () => true,
      () => {
        this.#ledger.counters.pings_failed_total++;
        this.destroy(client, 'ping_failed');
        return false;
      },
    );
  }

  reuse(client: PoolClient): void {
    if (this.#isSurplus()) return this.destroy(client, 'overflow');
    if (this.#settings.resetOnReturn) {
      // Session state a job set (SET outside a transaction, SET ROLE…) must not reach the next
      // job: reset to the connection's startup defaults (read-only, statement timeout). The
      // command is queued on the connection, so the next user's query runs after it; if it
      // fails, the connection errors and is replaced. Prepared statements survive RESET ALL.
      client.query('RESET ALL').catch(() => {});
    }
    const m = meta.get(client);
    if (m) m.releasedAt = Date.now();
    // Acquires wait, none in pg.Pool's queue: they wait for opens still in flight (a fleet
    // lease, a slow connect; pg.Pool binds each acquire to the connection it opens for it), or
    // had theirs dropped, or their connection is being pinged. pg.Pool would keep this one idle
    // meanwhile: hand it to the longest waiting one now (HikariCP's hand-off); the connection
    // that acquire was waiting for goes idle, or to the next one, when it arrives.
    // Only for a tenant with a fleet cap, whose opens can wait for a lease for long: for the
    // others the hand-off churned connections under the process budget (an open that got its
    // budget slot by evicting another tenant's idle connection arrived unneeded; the demo's
    // drain fell from ~650 to ~170 jobs/s with 8 acquire timeouts), and pg.Pool's own binding is
    // what the pool was measured and tuned with.
    if (this.#ledger.fleetLeases !== undefined && this.#host.waiting > 0 && this.#pool.waitingCount === 0 && this.#host.handOff(client)) return;
    client.release();
    if (this.#hasOverflow() && this.#settings.overflowLingerMs > 0) this.#trim.arm();
  }

  destroy(client: PoolClient, reason: CloseReason): void {
    closeReasons.set(client, reason);
    client.release(true);
  }

  async warm(): Promise<void> {
    const { error } = await this.#fill();
    if (error === undefined) return;
    // One open connection serves: accept the pool with what opened (a role whose CONNECTION
    // LIMIT is below minSize, a server refusing some with 53300) and open the rest later, with
    // backoff. Only a pool that could open nothing fails (and is not kept by the registry).
    if (!this.#hasOpenConnection()) throw error;
    this.#refill.retryLater();
  }

  /**
   * Close up to `count` idle connections; resolves with how many closed, once their sockets have
   * ended (so the server has that many connections fewer), or after EVICT_WAIT_MS at most: they no
   * longer count here either way. Checked out through pg.Pool, which hands out idle connections
   * before it opens any: so only while no acquire waits, and at most as many as are idle.
   */
  closeIdle(count: number, reason: CloseReason): Promise<number> {
    const pool = this.#pool;
    if (this.#host.closed || this.#hasWaiters()) return Promise.resolve(0);
    const closing = Array.from({ length: Math.min(count, pool.idleCount) }, () =>
      pool.connect().then(
        (client) => this.#closeNow(client, reason),
        () => 0,
      ),
    );
    return Promise.all(closing).then(sum);
  }

  /**
   * Close the idle connections `which` selects (those whose fleet lease was lost), as closeIdle
   * does: every idle connection is borrowed, the others go straight back (keeping their idle age).
   */
  closeIdleWhere(which: (client: PoolClient) => boolean, reason: CloseReason): Promise<number> {
    const pool = this.#pool;
    if (this.#host.closed || this.#hasWaiters()) return Promise.resolve(0);
    const closing = Array.from({ length: pool.idleCount }, () =>
      pool.connect().then(
        (client) => {
          if (which(client)) return this.#closeNow(client, reason);
          client.release();
          return 0;
        },
        () => 0,
      ),
    );
    return Promise.all(closing).then(sum);
  }

  /** Destroy a borrowed connection; resolves 1 once its socket ended, or after EVICT_WAIT_MS. */
  #closeNow(client: PoolClient, reason: CloseReason): Promise<number> {
    return new Promise<number>((resolve) => {
      const timer = setTimeout(() => resolve(1), EVICT_WAIT_MS).unref();
      client.once('end', () => {
        clearTimeout(timer);
        resolve(1);
      });
      this.destroy(client, reason);
    });
  }

  async end(): Promise<void> {
    this.#trim.stop();
    this.#refill.stop();
    await this.#pool.end();
  }

  /**
   * Open connections up to minSize (pg.Pool's `min` does not pre-open), within the free process
   * budget (a full budget is no failure: the next closed connection asks again). Resolves with
   * the first error if a connection failed to open.
   */
  async #fill(): Promise<{ error: unknown }> {
    const pool = this.#pool;
    const need = Math.min(this.#min - pool.totalCount, this.#ledger.budgetFree());
    if (need <= 0) return { error: undefined };
    // pg.Pool hands out idle connections before it opens new ones: borrow those too, so that
    // `need` new connections really open. Each goes straight back when it arrives (without
    // touching releasedAt: a borrowed connection keeps its idle age, and so its pre-ping), so
    // jobs do not wait behind the new connects: pg.Pool dispatches every one of these requests
    // (on process.nextTick) before the first promise callback runs.
    const borrow = pool.idleCount;
    const results = await Promise.allSettled(
      Array.from({ length: need + borrow }, () =>
        pool.connect().then((client) => {
          client.release();
        }),
      ),
    );
    // An open dropped as not needed (no fleet lease free, and no acquire waiting for it) is held
    // back like one the process budget has no room for: no failure.
    const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected' && !(r.reason instanceof OpenNotNeeded));
    return { error: failure?.reason };
  }

  #removed(client: pg.Client): void {
    this.#ledger.closed(client, closeReasons.get(client) ?? (this.#host.closed ? 'pool_closed' : 'idle'));
    this.#ledger.freed(client);
    this.#refill.request();
  }

  // Named conditions (pg-pool's _isFull() style).

  /** Below minSize, with no acquire waiting (with acquires waiting, the pool opens connections anyway). */
  #needsRefill(): boolean {
    return !this.#host.closed && this.#pool.totalCount < this.#min && this.#host.waiting === 0;
  }

  /** More connections than the overflow trim keeps. */
  #hasOverflow(): boolean {
    return this.#pool.totalCount > this.#keep;
  }

  /**
   * With overflowLingerMs = 0, SQLAlchemy's QueuePool rule: a returned connection is closed as
   * overflow when the pool already keeps maxSize idle ones and nobody waits. (Otherwise the
   * overflow trim closes overflow once demand has stayed at or below maxSize for the linger.)
   */
  #isSurplus(): boolean {
    return (
      this.#settings.overflowLingerMs === 0 &&
      this.#pool.totalCount > this.#settings.maxSize &&
      this.#pool.idleCount >= this.#settings.maxSize &&
      this.#host.waiting === 0
    );
  }

  #hasWaiters(): boolean {
    return this.#pool.waitingCount > 0 || this.#host.waiting > 0;
  }

  #hasOpenConnection(): boolean {
    return this.#pool.totalCount > this.#ledger.opening;
  }
}

function sum(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

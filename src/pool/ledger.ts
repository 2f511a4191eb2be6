/**
 * A tenant pool's books, shared by the pool and its connection source: the connection counters,
 * the metadata of every open connection, the connections still opening, the process budget
 * slots they hold and, for a tenant with a fleet connection cap, their fleet leases. Every
 * connection of either source opens through `open` and every close is recorded through `closed`,
 * so both modes count the same way.
 */
import { performance } from 'node:perf_hooks';
import type pg from 'pg';
import type { PoolSettings } from '../config.js';
import { type ErrorCode, LensfleetError, markConnectionLoss } from '../errors.js';
import { type ClientMeta, ConnectTimeoutError, meta, OpenNotNeeded, type PooledClient } from './pooled-client.js';
import {
  connectionCounters,
  type BudgetMember,
  type CloseReason,
  type ConnectionBudget,
  type ConnectionErrorKind,
  type ConnectionLease,
  type LeaseMember,
  type PoolEvent,
  type PoolLeases,
  type PoolObserver,
} from './types.js';

/** The connection error kind (metrics label) of each error an open can fail with; anything else is `connect`. */
const OPEN_ERROR_KINDS: Partial<Record<ErrorCode, ConnectionErrorKind>> = {
  CONNECT_TIMEOUT: 'connect_timeout',
  PROCESS_BUDGET_TIMEOUT: 'process_budget_timeout',
  FLEET_UNAVAILABLE: 'fleet_unavailable',
};

export interface LedgerOptions {
  readonly tenant: string;
  readonly settings: PoolSettings;
  /** The pool, as the process budget and the fleet's leases see it. */
  readonly member: BudgetMember & LeaseMember;
  readonly observer?: PoolObserver | undefined;
  readonly budget?: ConnectionBudget | undefined;
  /** The tenant's fleet connection cap (none: no cap). */
  readonly leases?: PoolLeases | undefined;
  readonly onEvent?: ((event: PoolEvent) => void) | undefined;
}

export class PoolLedger {
  readonly tenant: string;
  readonly settings: PoolSettings;
  /**
   * Metadata of every open connection, for the leak sweep (which looks at the checked-out ones).
   * Changed on open and close only: a Set add/delete per checkout cost ~0.8 µs (V8 reallocates a
   * small Set's table as it empties and refills).
   */
  readonly connections = new Set<ClientMeta>();
  /** Connections counted in the pool's size that are still waiting for the budget or a lease, or connecting. */
  opening = 0;
  /** Opens waiting for a fleet lease now. */
  leaseWaiting = 0;
  /** Fleet leases held: by connections open, and by opens that got one and are connecting. */
  leases = 0;
  readonly counters = connectionCounters();
  readonly #member: BudgetMember & LeaseMember;
  readonly #observer: PoolObserver;
  readonly #budget: ConnectionBudget | undefined;
  readonly #leases: PoolLeases | undefined;
  readonly #onEvent: (event: PoolEvent) => void;

  constructor(opts: LedgerOptions) {
    this.tenant = opts.tenant;
    this.settings = opts.settings;
    this.#member = opts.member;
    this.#observer = opts.observer ?? {};
    this.#budget = opts.budget;
    this.#leases = opts.leases;
    this.#onEvent = opts.onEvent ?? (() => {});
  }

  /** The pool's fleet leases, when its tenant has a fleet cap. */
  get fleetLeases(): PoolLeases | undefined {
    return this.#leases;
  }

  /** Connections the process budget still allows to open without evicting anything. */
  budgetFree(): number {
    return this.#budget?.free() ?? Infinity;
  }

  /**
   * Reserve a budget slot, take a fleet lease (a capped tenant), then open, time and register one
   * connection (`PooledClient`'s hook). `done` gets a LensfleetError (CONNECTION_FAILED,
   * CONNECT_TIMEOUT, PROCESS_BUDGET_TIMEOUT, FLEET_CAP_TIMEOUT, FLEET_UNAVAILABLE), OpenNotNeeded,
   * or null; an error was counted and reported once, here.
   */
  readonly open = (client: PooledClient, connect: (cb: (err: Error | null) => void) => void, done: (err: Error | null) => void): void => {
    this.opening++;
    const budget = this.#budget;
    if (budget === undefined) return this.#lease(client, connect, done);
    budget.reserve(this.#member, this.settings.connectTimeoutMs).then(
      () => this.#lease(client, connect, done),
      (err: unknown) => {
        this.opening--;
        this.#failed(err, done);
      },
    );
  };

  /**
   * Budget first, then the lease: a slot is counted in the pool's size from the moment pg-pool
   * creates the client, whatever the order, and the budget's wait is short (it evicts) while a
   * lease may wait for another process.
   */
  #lease(client: PooledClient, connect: (cb: (err: Error | null) => void) => void, done: (err: Error | null) => void): void {
    const leases = this.#leases;
    if (leases === undefined) return this.#connect(client, connect, done, undefined);
    let waiting = false;
    const stopWaiting = () => {
      if (waiting) {
        waiting = false;
        this.leaseWaiting--;
      }
    };
    // Still needed while the acquires waiting outnumber the other opens waiting for a lease
    // (each waiting acquire justifies one new connection); a waiting open counts itself.
    const needed = () => {
      if (this.#member.waiting >= this.leaseWaiting) return true;
      // Dropped from now on (the contract of `needed`): the next open's check must not count it.
      stopWaiting();
      return false;
    };
    const onWait = () => {
      waiting = true;
      this.leaseWaiting++;
      this.counters.lease_waits_total++;
    };
    leases.acquire(needed, this.settings.connectTimeoutMs, onWait).then(
      (lease) => {
        stopWaiting();
        if (lease === undefined) {
          this.opening--;
          done(new OpenNotNeeded());
          this.#budget?.released();
          return;
        }
        this.leases++;
        this.#connect(client, connect, done, lease);
      },
      (err: unknown) => {
        stopWaiting();
        this.opening--;
        if (!(err instanceof LensfleetError && err.code === 'FLEET_CAP_TIMEOUT')) return this.#failed(err, done);
        // The cap held, as it should: back-pressure, not a connection error (its own counter).
        this.counters.lease_timeouts_total++;
        done(err);
        this.#budget?.released();
      },
    );
  }

  #connect(
    client: PooledClient,
    connect: (cb: (err: Error | null) => void) => void,
    done: (err: Error | null) => void,
    lease: ConnectionLease | undefined,
  ): void {
    const started = performance.now();
    connect((err) => {
      this.opening--;
      if (err) {
        this.#giveBack(lease);
        return this.#failed(err, done);
      }
      this.#connected(client, started, lease);
      done(null);
    });
  }

  #giveBack(lease: ConnectionLease | undefined): void {
    if (lease === undefined) return;
    this.leases--;
    lease.release();
  }

  #failed(err: unknown, done: (err: Error | null) => void): void {
    const typed = this.#typed(err);
    this.#error(OPEN_ERROR_KINDS[typed.code] ?? 'connect', typed);
    done(typed);
    // After `done`: the source has dropped the slot by then, so woken openers see room.
    this.#budget?.released();
  }

  /** The error an acquire fails with when opening a connection failed. */
  #typed(err: unknown): LensfleetError {
    if (err instanceof LensfleetError) return err;
    if (err instanceof ConnectTimeoutError) {
      return new LensfleetError('CONNECT_TIMEOUT', `tenant ${this.tenant}: opening a connection took longer than ${err.timeoutMs} ms`, {
        cause: err,
        details: { tenant: this.tenant },
      });
    }
    const e = err as { code?: unknown; message?: unknown } | undefined;
    const code = typeof e?.code === 'string' ? e.code : 'error';
    const message = String(e?.message ?? err);
    return new LensfleetError('CONNECTION_FAILED', `tenant ${this.tenant}: cannot connect (${code}): ${message}${tlsHint(code, message)}`, {
      cause: err,
      details: { tenant: this.tenant },
    });
  }

  #connected(client: PooledClient, started: number, lease: ConnectionLease | undefined): void {
    this.counters.connections_opened_total++;
    this.#observer.connected?.(this.tenant, (performance.now() - started) / 1000);
    // Lifetime jittered by up to −5 % so a pool's connections don't all reconnect together.
    const lifetimeMs = this.settings.recycleSeconds * 1000 * (1 - Math.random() * 0.05);
    const m: ClientMeta = {
      client,
      expiresAt: this.settings.recycleSeconds > 0 ? Date.now() + lifetimeMs : Infinity,
      releasedAt: Date.now(),
      handedOutAt: 0,
      holder: undefined,
      leakReported: false,
      checkedOut: false,
      lost: false,
      lease,
    };
    meta.set(client, m);
    this.connections.add(m);
    // pg emits a connection's socket failure as the client's 'error' (before it fails the queries
    // in flight with the same error object): without a listener a server restart would crash the
    // worker. pg-pool listens (and counts `idle`) only while the connection is idle.
    client.on('error', (err: Error) => {
      m.lost = true;
      markConnectionLoss(err);
      if (m.checkedOut) this.#error('active', err);
    });
  }

  /** An idle connection failed (pg-pool's 'error' event; pg-pool removes it). */
  idleError(err: Error): void {
    this.#error('idle', err);
  }

  /** A connection is closed (or closing): count why, and forget it. */
  closed(client: pg.ClientBase, reason: CloseReason): void {
    this.counters.connections_closed_total[reason] = (this.counters.connections_closed_total[reason] ?? 0) + 1;
    const m = meta.get(client);
    if (m !== undefined) this.connections.delete(m);
    if (reason !== 'unpooled') this.#onEvent({ type: 'closed_connection', reason });
  }

  /**
   * A closed connection's socket is gone: its fleet lease goes back (only now: the server has
   * ended the backend, so the fleet never counts fewer connections than the database sees), and
   * openers waiting for room in the process budget wake.
   */
  freed(client: pg.ClientBase): void {
    const m = meta.get(client);
    if (m?.lease !== undefined) {
      this.#giveBack(m.lease);
      m.lease = undefined;
    }
    this.#budget?.released();
  }

  event(event: PoolEvent): void {
    this.#onEvent(event);
  }

  /** A housekeeping task failed unexpectedly (housekeeping.ts's TaskFailed). */
  readonly taskFailed = (task: string, err: unknown): void => {
    this.#onEvent({ type: 'task_failed', task, message: String((err as Error | undefined)?.message ?? err) });
  };

  #error(kind: ConnectionErrorKind, err: Error): void {
    this.counters.connection_errors_total[kind] = (this.counters.connection_errors_total[kind] ?? 0) + 1;
    const typed = err instanceof LensfleetError;
    this.#onEvent({
      type: 'connection_error',
      kind,
      code: typed ? err.code : undefined,
      cause: codeOf(typed ? err.cause : err),
      message: err.message,
    });
  }
}

function codeOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** Node's codes for a server certificate that could not be verified. */
const CERT_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_UNTRUSTED',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** What to change in the tenant's URL when opening failed over TLS (node-pg's sslmode differs from libpq's). */
export function tlsHint(code: string, message: string): string {
  if (CERT_CODES.has(code)) {
    return (
      " — the database server's TLS certificate was not verified. node-pg verifies it for every sslmode but disable and no-verify " +
      "(its sslmode=require is libpq's verify-full): give the CA that signed it with sslrootcert=<file> in the URL, " +
      "connect by the name the certificate carries, or add uselibpqcompat=true for libpq's meaning of sslmode (require: encrypt without verifying)"
    );
  }
  if (/server does not support SSL/i.test(message))
    return ' — the URL asks for TLS (sslmode) and the server has ssl = off: turn it on there, or set sslmode=disable';
  return '';
}

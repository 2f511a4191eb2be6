/**
 * The pooled connection itself: the one pg.Client subclass every tenant pool creates (in both
 * connection sources), and the per-connection metadata the pool keeps beside it (lifetime, idle
 * age, checkout, leak state, close reason) in WeakMaps, so pg's own objects are not extended.
 */
import pg from 'pg';
import type { CloseReason, ConnectionLease } from './types.js';

/** Metadata of one open connection, keyed by its pg client. */
export interface ClientMeta {
  /** The connection itself (to end it when its pool closes without waiting for its job). */
  readonly client: pg.Client;
  expiresAt: number;
  releasedAt: number;
  /** When a job got it (for leak detection); 0 while idle. */
  handedOutAt: number;
  holder: Readonly<Record<string, unknown>> | undefined;
  leakReported: boolean;
  /** Checked out by a job (errors then count as `active`; idle ones are pg-pool's `idle`). */
  checkedOut: boolean;
  /** The connection emitted an error (its socket failed or ended): an error a job releases it with reports that loss. */
  lost: boolean;
  /** Its fleet lease (a tenant with a fleet connection cap), given back when it closes. */
  lease: ConnectionLease | undefined;
}

export const meta = new WeakMap<pg.ClientBase, ClientMeta>();

/** Why the pool closed a connection, read when pg-pool reports it removed. */
export const closeReasons = new WeakMap<pg.ClientBase, CloseReason>();

/**
 * Opening a connection took longer than the connect timeout. Raised by our own timer, so it is
 * recognised by its class: pg's `connectionTimeoutMillis` fails with a plain Error whose only
 * mark is its text ('timeout expired').
 */
export class ConnectTimeoutError extends Error {
  readonly timeoutMs: number;
  constructor(timeoutMs: number) {
    super(`no connection within ${timeoutMs} ms`);
    this.name = 'ConnectTimeoutError';
    this.timeoutMs = timeoutMs;
  }
}

/**
 * An open that was dropped before it connected because nothing needs it any more: it waited for
 * a fleet lease and the acquires it was for were served by connections other jobs released. Not
 * a connection error: not counted, not reported; a waiter that still waits tries again.
 */
export class OpenNotNeeded extends Error {
  constructor() {
    super('connection not opened: no acquire needs it any more');
    this.name = 'OpenNotNeeded';
  }
}

/** Reserve room, then `open` the connection, then report to `done`: the ledger's `open`. */
export type OpenCounted = (client: PooledClient, open: (cb: (err: Error | null) => void) => void, done: (err: Error | null) => void) => void;

/** pg.Pool hands its own options to every client it creates (`new Client(poolOptions)`); the unpooled source passes the same. */
export interface PooledClientOptions extends pg.PoolConfig {
  readonly clientConfig: () => pg.ClientConfig;
  readonly openCounted: OpenCounted;
  /** Longest time the connect itself (TCP, TLS, authentication) may take; 0 = no limit. */
  readonly connectTimeoutMs: number;
}

/**
 * The client of every connection. A subclass keeps the connect timeout separate from pg.Pool's
 * connectionTimeoutMillis (which would also cap queue waiting) and typed (its own error class),
 * and lets the process budget be reserved before the connection opens. One class for all pools
 * and both modes, not one per pool: with a class per tenant, pg's hot paths would see as many
 * object shapes as tenants and V8's inline caches would go megamorphic.
 */
export class PooledClient extends pg.Client {
  readonly #openCounted: OpenCounted;
  readonly #connectTimeoutMs: number;
  constructor(options: PooledClientOptions) {
    super(options.clientConfig());
    this.#openCounted = options.openCounted;
    this.#connectTimeoutMs = options.connectTimeoutMs;
  }
  // pg-pool and the unpooled source always connect with a callback.
  // biome-ignore lint/suspicious/noExplicitAny: pg.Client's connect overloads (promise and callback) leave no narrower override
  override connect(callback?: any): never {
    this.#openCounted(this, (open) => this.#connectWithin(open), callback as (e: Error | null) => void);
    return undefined as never;
  }

  /**
   * Connect, failing with ConnectTimeoutError after the connect timeout. Destroying the socket
   * with that error is what pg's own timer does with its plain one: pg then fails the connect
   * with it, and the socket is gone (a server that never answers keeps no half-open connection).
   */
  #connectWithin(done: (err: Error | null) => void): void {
    const ms = this.#connectTimeoutMs;
    const timer = ms > 0 ? setTimeout(() => this.connection.stream.destroy(new ConnectTimeoutError(ms)), ms) : undefined;
    timer?.unref();
    super.connect((err: Error | null) => {
      clearTimeout(timer);
      done(err);
    });
  }
}

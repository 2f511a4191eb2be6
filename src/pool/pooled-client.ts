/**
 * The pooled connection itself: the one pg.Client subclass every tenant pool creates, and the
 * per-connection metadata TenantPool keeps beside it (lifetime, idle age, checkout, leak
 * state, close reason) in WeakMaps, so pg's own objects are not extended.
 */
import pg from 'pg';
import type { CloseReason } from './types.js';

/** Metadata of one open connection, keyed by its pg client. */
export interface ClientMeta {
  expiresAt: number;
  releasedAt: number;
  /** When a job got it (for leak detection); 0 while idle. */
  handedOutAt: number;
  holder: Readonly<Record<string, unknown>> | undefined;
  leakReported: boolean;
  /** Checked out by a job (errors then count as `active`; idle ones are pg-pool's `idle`). */
  checkedOut: boolean;
}

export const meta = new WeakMap<pg.ClientBase, ClientMeta>();

/** Why TenantPool closed a connection, read when pg-pool reports it removed. */
export const closeReasons = new WeakMap<pg.ClientBase, CloseReason>();

export type OpenCounted = (client: pg.Client, open: (cb: (err: Error | null) => void) => void, done: (err: Error | null) => void) => void;

/** pg.Pool hands its own options to every client it creates (`new Client(poolOptions)`). */
export interface PooledClientOptions extends pg.PoolConfig {
  readonly clientConfig: () => pg.ClientConfig;
  readonly openCounted: OpenCounted;
}

/**
 * The client of every pooled connection. A subclass keeps the connect timeout separate from
 * pg.Pool's connectionTimeoutMillis (which would also cap queue waiting), and lets the process
 * budget be reserved before the connection opens. One class for all pools, not one per pool:
 * with a class per tenant, pg's hot paths would see as many object shapes as tenants and V8's
 * inline caches would go megamorphic.
 */
export class PooledClient extends pg.Client {
  readonly #openCounted: OpenCounted;
  constructor(options: PooledClientOptions) {
    super(options.clientConfig());
    this.#openCounted = options.openCounted;
  }
  // pg-pool always connects with a callback.
  // biome-ignore lint/suspicious/noExplicitAny: pg.Client's connect overloads (promise and callback) leave no narrower override
  override connect(callback?: any): never {
    this.#openCounted(this, (open) => super.connect(open), callback as (e: Error | null) => void);
    return undefined as never;
  }
}

/**
 * A tenant pool's connection source: where its connections come from and where they go when a
 * job is done with them. Two implementations, one per mode, so the pool never asks which mode it
 * is in (psycopg_pool's NullConnectionPool beside ConnectionPool):
 * - `PooledSource` (pooled-source.ts) keeps connections in a `pg.Pool` for reuse (and keeps it at minSize, trims
 *   overflow, pre-pings, recycles);
 * - `UnpooledSource` (unpooled-source.ts) opens a fresh connection per job and closes it after (the guide's rollback
 *   plan, `pooling: false`).
 * The pool picks one when it is created (tenant-pool.ts) and never looks again.
 */
import type { PoolSettings } from '../config.js';
import type { PoolLedger } from './ledger.js';
import type { PooledClientOptions } from './pooled-client.js';
import type { CloseReason, PoolClient } from './types.js';

/** Receives exactly one of an error or a connection (pg.Pool's connect callback shape). */
export type ConnectCallback = (err: Error | null | undefined, client: PoolClient | undefined) => void;

export interface ConnectionSource {
  /**
   * A connection one job releases may serve another (pooled): an acquire may wait for the next
   * release instead of opening its own. False without pooling (every acquire opens its own).
   */
  readonly sharesConnections: boolean;
  /** Connection slots taken, including connections still opening (what the process budget counts). */
  readonly size: number;
  /** Open connections no job holds. */
  readonly idleCount: number;
  /** An idle connection, or a new one. Calls back once, on this stack or later. The hot path: no promise. */
  connect(done: ConnectCallback): void;
  /**
   * Check a connection before it is handed out; false = it was discarded (the pool asks for
   * another). A promise only when a round trip is needed (a pre-ping).
   */
  validate(client: PoolClient): boolean | Promise<boolean>;
  /** A healthy connection a job is done with: keep it for the next job, or close it. */
  reuse(client: PoolClient): void;
  /** Close a connection that must not be reused, counted under `reason`. */
  destroy(client: PoolClient, reason: CloseReason): void;
  /**
   * Open connections up to minSize within the budget. Resolves once at least one is open (the
   * rest are retried in the background with backoff); rejects with the first error when none is.
   */
  warm(): Promise<void>;
  /** Close up to `count` idle connections; resolves with how many closed. */
  closeIdle(count: number, reason: CloseReason): Promise<number>;
  /** Close the idle connections `which` selects; resolves with how many closed. */
  closeIdleWhere(which: (client: PoolClient) => boolean, reason: CloseReason): Promise<number>;
  /** Close every idle connection now and each checked-out one as it comes back; stop housekeeping. */
  end(): Promise<void>;
}

/** What a source sees of the pool that owns it. */
export interface SourceHost {
  /** Acquires waiting now. */
  readonly waiting: number;
  readonly closed: boolean;
  /** Highest demand (in use + waiting) since the last call; counting restarts from the current demand. */
  takePeakDemand(): number;
  /**
   * Give a connection a job just released straight to the acquire whose deadline comes first;
   * false when no acquire waits. The connection that acquire was waiting for (an open, a ping)
   * goes back to the pool when it arrives.
   */
  handOff(client: PoolClient): boolean;
}

export interface SourceOptions {
  readonly settings: PoolSettings;
  readonly max: number;
  readonly min: number;
  readonly ledger: PoolLedger;
  readonly host: SourceHost;
  readonly client: PooledClientOptions;
}

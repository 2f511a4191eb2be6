/**
 * One Supabase tenant's HTTP connections in this process: an undici `Pool` (keep-alive sockets to
 * the tenant's origin, at most `max` of them) behind supabase-js, with the same bounds and stats
 * as a Postgres `TenantPool` so `/pools`, metrics and alerts read both alike.
 *
 * - At most `max` requests are in flight (one per socket, no pipelining); more wait here, in
 *   order, for at most `acquireTimeoutMs` or a job's shorter deadline (`POOL_TIMEOUT`), and at
 *   most `maxWaiting` of them (`POOL_BUSY`). undici's own queue stays empty, so waiting is
 *   bounded and counted here.
 * - One reused service client (`createClient`) for service jobs; per user job a client whose
 *   every request carries that job's token (`userClient`). Identity never lives on shared state.
 * - No retries anywhere below BullMQ: supabase-js 2.100 has none, undici's `fetch` has none.
 * - Response bodies are read up to `maxResponseBytes` (`RESULT_TOO_LARGE` beyond), never more.
 * - Sockets live `recycleSeconds` at most (undici's `clientTtl`) and close after `idleTimeoutMs`
 *   idle (keep-alive timeout, or sooner when the server says so).
 *
 * It knows nothing of lenses or BullMQ (`executeRestLens` in ./execute.ts runs a lens on it).
 */
import { performance } from 'node:perf_hooks';
import { PostgrestClient } from '@supabase/postgrest-js';
import { createClient } from '@supabase/supabase-js';
import { buildConnector, type Dispatcher, Pool, Response, fetch as undiciFetch } from 'undici';
import type { PoolSettings } from '../config.js';
import { LensfleetError } from '../errors.js';
import { DeadlineQueues } from '../pool/deadline-queue.js';
import {
  connectionCounters,
  poolStats,
  type CloseReason,
  type ConnectionErrorKind,
  type ManagedPool,
  type PoolEvent,
  type PoolFactory,
  type PoolObserver,
  type PoolStats,
  type PoolTenant,
} from '../pool/types.js';
import { fingerprintOf, type Secret } from '../secret.js';
import type { SupabaseTenant } from '../tenants.js';
import type { RestClient } from './client.js';
import { findCode, type RequestIdentity, restFailureError, restStatusError } from './errors.js';

/** Largest response body read by default (8 MiB): a lens result is rows for a job, not a dump. */
export const DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024;

export interface RestTenantPoolOptions {
  readonly tenant: string;
  readonly key: string;
  /** The tenant's `<ID>_SUPABASE_URL`, e.g. `https://<ref>.supabase.co`. */
  readonly supabaseUrl: string;
  /** The tenant's `<ID>_SUPABASE_SERVICE_KEY` (a `service_role` JWT). */
  readonly serviceKey: Secret;
  readonly settings: PoolSettings;
  /** Effective ceiling on sockets and requests in flight, already clamped by the registry. */
  readonly max: number;
  /** false = a fresh connection per request, closed after it (the guide's rollback plan). @defaultValue true */
  readonly pooling?: boolean;
  /** A larger response body fails the job with `RESULT_TOO_LARGE`. @defaultValue 8 MiB */
  readonly maxResponseBytes?: number;
  readonly observer?: PoolObserver;
  readonly onEvent?: (event: PoolEvent) => void;
}

/** A request slot; `release()` once the request is done (a second call does nothing). */
export interface RestLease {
  release(): void;
}

/** `fetch` as supabase-js and postgrest-js call it. */
type FetchFn = typeof globalThis.fetch;

interface Waiter {
  readonly started: number;
  readonly deadline: number;
  /** How long this request may wait (acquireTimeoutMs, or a job's shorter deadline). */
  readonly timeoutMs: number;
  settled: boolean;
  resolve: ((lease: RestLease) => void) | undefined;
  reject: ((err: LensfleetError) => void) | undefined;
}

/**
 * Supabase tenants' pools, for the registry: one `RestTenantPool` each. Its sockets do not count
 * in the process connection budget (`budgetMember` is undefined): they end at the tenant's HTTP
 * gateway, whose PostgREST keeps its own database pool, and undici cannot close one idle socket on
 * demand to make room for another tenant. Each REST pool is still bounded by its effective max.
 */
export const restPools: PoolFactory<SupabaseTenant, RestTenantPool> = {
  serves: (t: PoolTenant): t is SupabaseTenant => t.backend === 'supabase',
  // A digest: the registry keeps it for the pool's life, and the service key is a secret.
  fingerprint: (t) => fingerprintOf('supabase', t.supabaseUrl, t.serviceKey.reveal(), t.pooling, t.pool),
  create: (t, ctx) =>
    new RestTenantPool({
      tenant: t.id,
      key: ctx.key,
      supabaseUrl: t.supabaseUrl,
      serviceKey: t.serviceKey,
      settings: t.pool,
      max: ctx.max,
      pooling: t.pooling,
      ...(ctx.observer ? { observer: ctx.observer } : {}),
      onEvent: ctx.onEvent,
    }),
};

export class RestTenantPool implements ManagedPool {
  /** Which backend's pool this is (the job processor dispatches on it). */
  readonly backend = 'supabase' as const;
  /** HTTP sockets are not opened ahead of demand: a first request opens one in a round trip. */
  readonly min = 0;
  /** Its sockets do not count in the process connection budget (see `restPools`). */
  readonly budgetMember = undefined;
  readonly tenant: string;
  readonly key: string;
  readonly max: number;
  readonly settings: PoolSettings;
  readonly pooling: boolean;
  readonly maxResponseBytes: number;
  readonly #serviceClient: RestClient;
  readonly #serviceKey: Secret;
  readonly #restUrl: string;
  readonly #agent: Pool;
  /** What requests are sent through: the pool, or (pooling off) the pool with one request per socket. */
  readonly #dispatcher: Dispatcher;
  readonly #observer: PoolObserver;
  readonly #onEvent: (event: PoolEvent) => void;
  #closed = false;
  #closing: Promise<void> | undefined;
  #inUse = 0;
  #waiting = 0;
  #opening = 0;
  #lastUsedAt = Date.now();
  /** Waiters in arrival order (grant order); `#head` is the first not yet taken out. */
  #queue: (Waiter | undefined)[] = [];
  #head = 0;
  readonly #deadlines = new DeadlineQueues<Waiter>((w) => this.#expired(w));
  readonly #stats = {
    requests_total: 0,
    requests_wait_ms_total: 0,
    acquire_timeouts_total: 0,
    pool_busy_total: 0,
    // (lease counters stay 0: the fleet connection cap is for direct Postgres connections; PostgREST pools its own)
    ...connectionCounters(),
  };

  constructor(opts: RestTenantPoolOptions) {
    this.tenant = opts.tenant;
    this.key = opts.key;
    this.settings = opts.settings;
    this.max = Math.max(1, opts.max);
    this.pooling = opts.pooling ?? true;
    this.maxResponseBytes = opts.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
    this.#serviceKey = opts.serviceKey;
    this.#observer = opts.observer ?? {};
    this.#onEvent = opts.onEvent ?? (() => {});
    const base = new URL(opts.supabaseUrl.endsWith('/') ? opts.supabaseUrl : `${opts.supabaseUrl}/`);
    this.#restUrl = new URL('rest/v1', base).href;
    const connector = buildConnector({ timeout: opts.settings.connectTimeoutMs });
    this.#agent = new Pool(base.origin, {
      connections: this.max,
      pipelining: 1,
      // Count and time every connect here: undici's events carry neither the duration nor (for
      // a refused connect) a reliable one-per-attempt signal.
      connect: (options, callback) => {
        this.#opening++;
        const started = performance.now();
        connector(options, (err, socket) => {
          this.#opening--;
          if (err) this.#error(findCode(err) === 'UND_ERR_CONNECT_TIMEOUT' ? 'connect_timeout' : 'connect', err);
          else {
            this.#stats.connections_opened_total++;
            this.#observe(() => this.#observer.connected?.(this.tenant, (performance.now() - started) / 1000));
          }
          (callback as (e: Error | null, s: unknown) => void)(err, socket);
        });
      },
      keepAliveTimeout: opts.settings.idleTimeoutMs,
      keepAliveMaxTimeout: opts.settings.idleTimeoutMs,
      clientTtl: opts.settings.recycleSeconds > 0 ? opts.settings.recycleSeconds * 1000 : null,
    });
    // Pooling off: every request asks for `Connection: close` (undici's maxRequestsPerClient: 1
    // still sends a second request on the socket before closing it).
    this.#dispatcher = this.pooling ? this.#agent : this.#agent.compose((dispatch) => (options, handler) => dispatch({ ...options, reset: true }, handler));
    this.#agent.on('disconnect', (_origin, _targets, err) => this.#count(this.#closeReason(err)));
    this.#serviceClient = createClient(opts.supabaseUrl, opts.serviceKey.reveal(), {
      // No auth client at all: lensfleet never signs in, so a service request's token is the
      // service key itself. (Without `accessToken`, supabase-js asks its auth client for a
      // session on every request: ~28 µs each, measured in docs/SUPABASE.md.)
      accessToken: () => Promise.resolve(opts.serviceKey.reveal()),
      auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
      global: { fetch: this.#fetch as FetchFn },
    });
  }

  /**
   * The one reused client of service jobs (its token is the service key). Not an own property:
   * the client holds the key in plain, and a dump of the pool must not show it.
   */
  get serviceClient(): RestClient {
    return this.#serviceClient;
  }

  /**
   * A client for one user job: every request it sends carries `Authorization: Bearer <token>`,
   * set by its own `fetch` on each request (whatever headers the query set), over this pool's
   * shared sockets. Cheap (a postgrest-js client, ~4 µs): make one per job, never share it.
   */
  userClient(token: Secret): RestClient {
    const bearer = `Bearer ${token.reveal()}`;
    const apikey = this.#serviceKey.reveal();
    const send = this.#send;
    const fetch = (input: Parameters<FetchFn>[0], init?: RequestInit): Promise<Response> => {
      const headers = new Headers(init?.headers);
      headers.set('apikey', apikey);
      headers.set('Authorization', bearer);
      return send(input, { ...init, headers }, 'user');
    };
    return new PostgrestClient(this.#restUrl, { fetch: fetch as FetchFn }) as unknown as RestClient;
  }

  /**
   * A request slot, waiting at most `acquireTimeoutMs` (`POOL_TIMEOUT`) behind at most
   * `maxWaiting` others (`POOL_BUSY`). `timeoutMs` shortens the wait (a job's own deadline),
   * never lengthens it.
   */
  acquire(timeoutMs?: number): Promise<RestLease> {
    if (this.#closed) return Promise.reject(new LensfleetError('POOL_CLOSED', `pool ${this.key} is closed`, { details: { tenant: this.tenant } }));
    this.#stats.requests_total++;
    this.#lastUsedAt = Date.now();
    if (this.#inUse < this.max && this.#waiting === 0) {
      this.#inUse++;
      this.#observe(() => this.#observer.acquired?.(this.tenant, 0));
      return Promise.resolve(this.#lease());
    }
    if (this.#waiting >= this.settings.maxWaiting) {
      this.#stats.pool_busy_total++;
      return Promise.reject(
        new LensfleetError('POOL_BUSY', `pool ${this.key} has ${this.#waiting} requests waiting (maxWaiting=${this.settings.maxWaiting}); try again later`, {
          details: { tenant: this.tenant, ...this.#numbers() },
        }),
      );
    }
    const limit = timeoutMs !== undefined && timeoutMs < this.settings.acquireTimeoutMs ? Math.max(0, timeoutMs) : this.settings.acquireTimeoutMs;
    return new Promise<RestLease>((resolve, reject) => {
      const now = performance.now();
      const w: Waiter = { started: now, deadline: now + limit, timeoutMs: limit, settled: false, resolve, reject };
      this.#waiting++;
      this.#queue.push(w);
      this.#deadlines.add(w, limit);
    });
  }

  /** A request slot is free and no request waits for one, or fewer than `maxQueued` do (`ManagedPool.canStartNow`). */
  canStartNow(maxQueued = 0): boolean {
    return this.#closed || (this.#inUse < this.max && this.#waiting === 0) || this.#waiting < maxQueued;
  }

  /** Nothing to open ahead of demand (see `min`): ready at once. */
  warm(): Promise<void> {
    return Promise.resolve();
  }

  /** Close every socket once its request is done; waiting and later acquires fail with `POOL_CLOSED`. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      const closed = new LensfleetError('POOL_CLOSED', `pool ${this.key} was closed while this request waited`, { details: { tenant: this.tenant } });
      this.#deadlines.drain((w) => this.#settle(w).reject?.(closed));
      this.#queue = [];
      this.#head = 0;
      await this.#agent.close();
    })();
    return this.#closing;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Open sockets. */
  get size(): number {
    return this.#agent.stats.connected;
  }

  /** Open sockets (`ManagedPool.open`). */
  get open(): number {
    return this.#agent.stats.connected;
  }

  get idleCount(): number {
    return this.#agent.stats.free;
  }

  get lastUsedAt(): number {
    return this.#lastUsedAt;
  }

  /** Requests waiting for a slot now. */
  get waiting(): number {
    return this.#waiting;
  }

  get busy(): boolean {
    return this.#inUse > 0 || this.#waiting > 0;
  }

  /** The same shape as `TenantPool.stats()`: sockets are the connections. */
  stats(): PoolStats {
    return poolStats(this, this.#numbers(), this.#stats, this.#lastUsedAt);
  }

  #numbers() {
    const s = this.#agent.stats;
    return { total: s.connected, opening: this.#opening, active: this.#inUse, idle: s.free, waiting: this.#waiting };
  }

  #lease(): RestLease {
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.#releaseSlot();
      },
    };
  }

  /** A slot came free: the longest waiting request gets it, else it is returned. */
  #releaseSlot(): void {
    this.#lastUsedAt = Date.now();
    const q = this.#queue;
    while (this.#head < q.length) {
      const w = q[this.#head];
      q[this.#head++] = undefined;
      if (w === undefined || w.settled) continue;
      this.#compact();
      const { resolve } = this.#settle(w);
      this.#observe(() => this.#observer.acquired?.(this.tenant, (performance.now() - w.started) / 1000));
      resolve?.(this.#lease());
      return;
    }
    q.length = 0;
    this.#head = 0;
    this.#inUse--;
  }

  /** Drop the consumed prefix of the queue once it is half of it (steady waiting never empties it). */
  #compact(): void {
    if (this.#head >= 1024 && 2 * this.#head >= this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
  }

  #settle(w: Waiter): Pick<Waiter, 'resolve' | 'reject'> {
    const { resolve, reject } = w;
    w.settled = true;
    w.resolve = undefined;
    w.reject = undefined;
    this.#waiting--;
    this.#stats.requests_wait_ms_total += performance.now() - w.started;
    return { resolve, reject };
  }

  #expired(w: Waiter): void {
    const { reject } = this.#settle(w);
    this.#stats.acquire_timeouts_total++;
    const n = this.#numbers();
    reject?.(
      new LensfleetError(
        'POOL_TIMEOUT',
        `pool ${this.key} timed out after ${w.timeoutMs} ms waiting for a request slot (sockets=${n.total}, active=${n.active}, idle=${n.idle}, waiting=${n.waiting}, max=${this.max})`,
        { details: { tenant: this.tenant, ...n } },
      ),
    );
  }

  /**
   * Every request of this pool goes through here: undici's fetch on the shared sockets, the
   * body read up to maxResponseBytes, a non-2xx status turned into a typed error. Errors are
   * thrown as `LensfleetError`s; the query runs with `throwOnError`, so they reach the job as
   * they are.
   */
  readonly #send = async (input: Parameters<FetchFn>[0], init: RequestInit | undefined, identity: RequestIdentity): Promise<Response> => {
    let res: Awaited<ReturnType<typeof undiciFetch>>;
    try {
      res = await undiciFetch(input as string, { ...(init as object), dispatcher: this.#dispatcher });
    } catch (err) {
      throw this.#failure(err);
    }
    const body = await this.#readBody(res);
    if (!res.ok) throw restStatusError(res.status, body, { tenant: this.tenant }, this.#secrets(init), identity);
    return new Response(res.status === 204 ? null : body, { status: res.status, statusText: res.statusText, headers: res.headers });
  };

  /** The service client's fetch: its requests carry the service key. */
  readonly #fetch = (input: Parameters<FetchFn>[0], init?: RequestInit): Promise<Response> => this.#send(input, init, 'service');

  async #readBody(res: Awaited<ReturnType<typeof undiciFetch>>): Promise<string> {
    const cap = this.maxResponseBytes;
    const declared = Number(res.headers.get('content-length') ?? Number.NaN);
    try {
      if (declared > cap) {
        await res.body?.cancel().catch(() => {});
        throw this.#tooLarge(`declares ${declared} bytes`);
      }
      // With a declared length within the cap undici reads exactly that much: read it at once.
      if (declared >= 0 || res.body === null) return await res.text();
      const reader = res.body.getReader();
      const chunks: Uint8Array[] = [];
      let total = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        total += value.byteLength;
        if (total > cap) {
          await reader.cancel().catch(() => {});
          throw this.#tooLarge(`exceeded ${cap} bytes`);
        }
        chunks.push(value);
      }
      return Buffer.concat(chunks, total).toString('utf8');
    } catch (err) {
      throw this.#failure(err);
    }
  }

  #tooLarge(what: string): LensfleetError {
    return new LensfleetError(
      'RESULT_TOO_LARGE',
      `tenant ${this.tenant}: REST response ${what}, more than maxResponseBytes (${this.maxResponseBytes}); narrow the params`,
      {
        details: { tenant: this.tenant, maxResponseBytes: this.maxResponseBytes },
      },
    );
  }

  /** A request that got no complete response; a connection lost mid-request counts as an `active` connection error. */
  #failure(err: unknown): LensfleetError {
    const e = restFailureError(err, { tenant: this.tenant });
    if (e !== err && (e.code === 'QUERY_FAILED_TRANSIENT' || e.code === 'QUERY_TIMEOUT')) this.#error('active', err as Error);
    return e;
  }

  /** The secrets a server's error text must not carry: the service key and the request's token. */
  #secrets(init: RequestInit | undefined): string[] {
    const out = [this.#serviceKey.reveal()];
    const auth = new Headers(init?.headers).get('authorization');
    if (auth?.startsWith('Bearer ')) out.push(auth.slice(7));
    return out;
  }

  /**
   * Why undici closed a socket. Its own closes (keep-alive timeout, `Connection: close`, one
   * request per socket when not pooling) come as informational errors; the end of its lifetime
   * and our close as a closed client; anything else is a socket error.
   */
  #closeReason(err: unknown): CloseReason {
    if (this.#closed) return 'pool_closed';
    if (!this.pooling) return 'unpooled';
    const code = findCode(err);
    if (code === 'UND_ERR_INFO') return 'idle';
    if (code === 'UND_ERR_CLOSED' || code === 'UND_ERR_DESTROYED') return 'recycled';
    return 'error';
  }

  #count(reason: CloseReason): void {
    this.#stats.connections_closed_total[reason] = (this.#stats.connections_closed_total[reason] ?? 0) + 1;
    if (reason !== 'unpooled') this.#observe(() => this.#onEvent({ type: 'closed_connection', reason }));
  }

  #error(kind: ConnectionErrorKind, err: Error): void {
    this.#stats.connection_errors_total[kind] = (this.#stats.connection_errors_total[kind] ?? 0) + 1;
    const opening = kind === 'connect' || kind === 'connect_timeout';
    const code = opening ? (kind === 'connect_timeout' ? 'CONNECT_TIMEOUT' : 'CONNECTION_FAILED') : undefined;
    this.#observe(() => this.#onEvent({ type: 'connection_error', kind, code, cause: findCode(err), message: err.message }));
  }

  /** An observer (metrics, logs) must never break a request, nor throw inside undici's event handlers. */
  #observe(fn: () => void): void {
    try {
      fn();
    } catch {
      // ignored on purpose
    }
  }
}

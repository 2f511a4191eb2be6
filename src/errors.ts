/**
 * Every failure lensfleet reports is a `LensfleetError` with a stable `code`.
 *
 * Codes are a contract (producers match on them, dashboards count them): a code is never renamed
 * or reused for another meaning. Whether a job is retried is decided here, from the class, and
 * nowhere else.
 */

/** Registry of codes: code → whether a job failing with it should be retried. */
export const ERROR_CODES = {
  /** Job data is not an object, has the wrong version, or misses fields. */
  INVALID_JOB: false,
  /** Job data is larger than the configured limit. */
  PAYLOAD_TOO_LARGE: false,
  /** The job names a tenant this process does not know. */
  TENANT_NOT_FOUND: false,
  /**
   * The tenant's backend is not served where it was asked for (a pool registry built without that
   * backend's factory, `TenantDirectory.getPg` on a Supabase tenant). The worker serves Postgres
   * and Supabase tenants and no longer raises it for either; kept so the code is never reused.
   */
  TENANT_UNSUPPORTED: false,
  /** The job names a lens that is not in the catalog. */
  UNKNOWN_LENS: false,
  /** Retired: raised before per-user identity was supported. Kept so the code is never reused. */
  AUTH_UNSUPPORTED: false,
  /** The user token is unusable: too large, malformed, bad signature, another tenant's token, wrong alg, aud/iss mismatch, missing exp or role. */
  AUTH_INVALID: false,
  /** The user token's exp is past, beyond the tenant's clock skew. */
  AUTH_EXPIRED: false,
  /** The user token's nbf (or iat) is ahead, beyond the tenant's clock skew. */
  AUTH_NOT_YET_VALID: false,
  /** The user token asks for a database role that is not in the tenant's allowlist. */
  AUTH_ROLE_FORBIDDEN: false,
  /** The tenant's JWKS could not be fetched (network, timeout, bad response): the token could not be checked yet. */
  AUTH_KEYS_UNAVAILABLE: true,
  /** The job carries a user token but its tenant has no JWT key configured. */
  AUTH_NOT_CONFIGURED: false,
  /** The lens needs a user (auth.jwt) and the job carries none. */
  AUTH_REQUIRED: false,
  /** The lens runs as the service only and the job carries a user token. */
  AUTH_NOT_ALLOWED: false,
  /** The lens parameters fail the lens schema. */
  INVALID_PARAMS: false,
  /**
   * The lens itself is broken (its SQL builder throws, or its definition is inconsistent): a bug
   * in the lens module, which no retry fixes.
   */
  LENS_INVALID: false,
  /** Configuration is contradictory or malformed (raised at start, never per job). */
  INVALID_CONFIG: false,
  /** No connection became free within the acquire timeout. */
  POOL_TIMEOUT: true,
  /** Too many acquires already waiting for this tenant. */
  POOL_BUSY: true,
  /** The pool (or the registry) is closed or draining. */
  POOL_CLOSED: true,
  /** Opening a connection took longer than the connect timeout. */
  CONNECT_TIMEOUT: true,
  /**
   * The process connection budget (LENSFLEET_PROCESS_MAX_CONNECTIONS) stayed full, with no idle
   * connection of another tenant to close, for the connect timeout.
   */
  PROCESS_BUDGET_TIMEOUT: true,
  /**
   * The tenant's fleet connection cap (fleetMaxConnections) stayed reached, fleet-wide, for the
   * connect timeout: no lease for a new connection.
   */
  FLEET_CAP_TIMEOUT: true,
  /**
   * The fleet's Redis could not be asked for a connection lease of a capped tenant within the
   * connect timeout; the connection is not opened (the cap fails closed).
   */
  FLEET_UNAVAILABLE: true,
  /** Opening a connection failed (refused, reset, auth, too many connections). */
  CONNECTION_FAILED: true,
  /** The lens query hit its statement timeout. */
  QUERY_TIMEOUT: true,
  /** The query failed for a reason that may pass on retry (connection lost, 53300, 40001…). */
  QUERY_FAILED_TRANSIENT: true,
  /** The query failed in a way a retry will not fix (syntax, permission, undefined column). */
  QUERY_FAILED: false,
  /** The lens returned more rows than its maxRows. */
  RESULT_TOO_LARGE: false,
  /** The lens has no form for its tenant's backend (no `rest` form, run on a Supabase tenant). */
  LENS_BACKEND_UNSUPPORTED: false,
  /** An unexpected internal failure. Retried: it may be a passing fault. */
  INTERNAL: true,
  /**
   * Never a job's: the producer's `run` got no result within its wait time (the job goes on; the
   * error says whether it is waiting, delayed, active or failed, and its last failure's code).
   */
  RUN_TIMEOUT: false,
  /**
   * Never a job's: an add with an idempotency key whose job (still in Redis) was added for a
   * different request (another lens or other params); nothing is added.
   */
  IDEMPOTENCY_CONFLICT: false,
} as const satisfies Record<string, boolean>;

export type ErrorCode = keyof typeof ERROR_CODES;

/**
 * What a job's outcome says about its tenant's database, for the tenant's circuit breaker
 * (src/breaker.ts), by code and nowhere else:
 * - `unreachable`: no connection could be opened — refused, reset, the server's auth failure of
 *   the connection (all CONNECTION_FAILED, with the driver's or server's own code as its cause),
 *   or no answer within the connect timeout;
 * - `reached`: a connection was open and the database answered (a query error is the lens's or
 *   the data's business, not the database's reachability);
 * - anything else says nothing either way: this process's or the fleet's own limits (the pool's
 *   queue, the process budget, the fleet cap), a closing pool, an internal fault.
 * (A job that completed reached its database.)
 */
export type Reachability = 'unreachable' | 'reached' | 'unknown';

const REACHABILITY: Partial<Record<ErrorCode, Reachability>> = {
  CONNECTION_FAILED: 'unreachable',
  CONNECT_TIMEOUT: 'unreachable',
  QUERY_TIMEOUT: 'reached',
  QUERY_FAILED_TRANSIENT: 'reached',
  QUERY_FAILED: 'reached',
  RESULT_TOO_LARGE: 'reached',
};

/** What a failure with `code` says about the tenant's database (see `Reachability`). */
export function reachabilityOf(code: ErrorCode): Reachability {
  return REACHABILITY[code] ?? 'unknown';
}

export interface LensfleetErrorOptions {
  cause?: unknown;
  /** Structured, secret-free facts for logs (tenant, lens, pool numbers…). */
  details?: Record<string, unknown>;
}

export class LensfleetError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: LensfleetErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'LensfleetError';
    this.code = code;
    this.details = options.details ?? {};
  }

  /** True when a job that failed with this error should be attempted again. */
  get retryable(): boolean {
    return ERROR_CODES[this.code];
  }

  /** `CODE: message` — the form stored as a BullMQ job's failedReason. */
  override toString(): string {
    return `${this.code}: ${this.message}`;
  }
}

export function isLensfleetError(err: unknown): err is LensfleetError {
  return err instanceof LensfleetError;
}

// Postgres SQLSTATE classes a retry can fix: connection exceptions (08), insufficient resources
// (53: 53300 too_many_connections), operator intervention (57: admin shutdown, crash recovery,
// cannot connect now), serialization/deadlock (40).
const TRANSIENT_SQLSTATE = /^(08|53|57|40)/;
const TRANSIENT_NODE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);

/**
 * Errors known to report a lost connection. pg gives such errors no code ("Connection terminated
 * unexpectedly", "… is not queryable"), so they are recognised by where they came from, not by
 * their text: the tenant pool marks every error a connection emits as its own 'error' event (pg
 * emits it when the socket fails or ends, before it fails the queries in flight with the same
 * object), and every error a job releases a connection with after that connection lost its socket.
 */
const lostConnectionErrors = new WeakSet<object>();

/** Record that `err` reports the loss of the connection it came from (called by the tenant pool). */
export function markConnectionLoss(err: unknown): void {
  if (typeof err === 'object' && err !== null) lostConnectionErrors.add(err);
}

/** True when `err` was marked by `markConnectionLoss`. */
export function isConnectionLoss(err: unknown): boolean {
  return typeof err === 'object' && err !== null && lostConnectionErrors.has(err);
}

/**
 * Map an error thrown by `pg` while running a lens query to a typed error: by SQLSTATE or Node
 * error code, or as a lost connection when the pool marked it so. Release the connection to its
 * pool with the error first (`pool.release(client, err)`): a query sent on a connection that had
 * already lost its socket fails with a fresh, unmarked error, which the release marks. Messages
 * are taken from the server error only (never from connection config), so they cannot carry
 * secrets.
 */
export function classifyQueryError(err: unknown, context: Record<string, unknown>): LensfleetError {
  if (isLensfleetError(err)) return err;
  const e = err as { code?: unknown; message?: unknown } | undefined;
  const code = typeof e?.code === 'string' ? e.code : undefined;
  const message = typeof e?.message === 'string' ? e.message : String(err);
  if (code === '57014') {
    return new LensfleetError('QUERY_TIMEOUT', `lens query cancelled by statement timeout: ${message}`, {
      cause: err,
      details: context,
    });
  }
  if ((code !== undefined && (TRANSIENT_SQLSTATE.test(code) || TRANSIENT_NODE_CODES.has(code))) || isConnectionLoss(err)) {
    return new LensfleetError('QUERY_FAILED_TRANSIENT', `lens query failed (${code ?? 'connection'}): ${message}`, {
      cause: err,
      details: context,
    });
  }
  return new LensfleetError('QUERY_FAILED', `lens query failed${code ? ` (${code})` : ''}: ${message}`, {
    cause: err,
    details: context,
  });
}

/** `text`, or its first `max` characters and its length: for input echoed into messages. */
export function clip(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max)}…(${text.length} characters)` : text;
}

/**
 * A schema validation error's issues (zod's shape), formatted for a message: at most five, each
 * with its path. What they quote from the input is clipped (zod puts an unknown key into its
 * message whole: a 20 KB key made a 20 KB failedReason, stored in Redis, logged, shown to producers).
 */
export function formatIssues(error: { readonly issues: readonly { readonly path: readonly PropertyKey[]; readonly message: string }[] }): string {
  return error.issues
    .slice(0, 5)
    .map((i) => `${i.path.length ? i.path.map((p) => clip(String(p), 64)).join('.') : '(root)'}: ${clip(i.message, 200)}`)
    .join('; ');
}

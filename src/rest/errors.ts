/**
 * HTTP failures of the REST backend mapped onto lensfleet's codes: by status code, PostgREST's
 * `code` field and undici's error codes — never by message text. Text a server sent is kept only
 * as a bounded excerpt with the tenant's secrets blanked out, so a server that echoes a header
 * cannot put a token into a job's failedReason.
 */
import { type ErrorCode, LensfleetError } from '../errors.js';

export interface RestErrorContext {
  readonly tenant: string;
  readonly lens?: string;
}

/** PostgREST's error body (the shape of a Postgres error). */
interface PostgrestErrorBody {
  readonly code?: unknown;
  readonly message?: unknown;
}

/** Longest excerpt of a server's message kept in an error. */
const SERVER_TEXT_MAX = 200;

/** Connection could not be opened: nothing was sent. */
const CONNECT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL']);
/** Timeouts of undici's own safety nets (the lens timeout aborts with its own error first). */
const RESPONSE_TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

/** Whose token a request carried: the tenant's service key, or a job's verified user token. */
export type RequestIdentity = 'service' | 'user';

/**
 * The error for a response that is not 2xx.
 *
 * - A privilege the database refused (PostgREST `code` 42501, answered 401 for `anon` and 403
 *   otherwise) or a role it may not assume (0P*, 403): on a user request → `AUTH_ROLE_FORBIDDEN`
 *   (the token's role is refused, as on the Postgres path when the database refuses the role —
 *   over REST both causes are 42501 and cannot be told apart by code); on a service request →
 *   `QUERY_FAILED` (the tenant's grants, as 42501 on the Postgres path).
 * - any other 401 (PostgREST: the JWT is invalid, PGRST301; the gateway: the API key is invalid)
 *   → `AUTH_INVALID`; PGRST303 (JWT expired) → `AUTH_EXPIRED`. Not retried: the worker verified
 *   the token first, so the tenant's key settings here and the project's differ.
 * - 408, 429 (a gateway's timeout or rate limit) → `QUERY_FAILED_TRANSIENT` (retried).
 * - other 4xx (bad filter, unknown column 42703, unknown table PGRST205, range 416, another 403)
 *   → `QUERY_FAILED`.
 * - 5xx with PostgREST code 57014 (statement timeout) → `QUERY_TIMEOUT`; any other 5xx (503:
 *   database unreachable, 500: internal, 502/504/520 from a proxy) → `QUERY_FAILED_TRANSIENT`.
 */
export function restStatusError(
  status: number,
  body: string,
  context: RestErrorContext,
  secrets: readonly string[],
  identity: RequestIdentity = 'service',
): LensfleetError {
  const parsed = parseErrorBody(body);
  const pgrst = typeof parsed?.code === 'string' ? parsed.code.slice(0, 16) : undefined;
  const code = statusCode(status, pgrst, identity);
  const serverText = typeof parsed?.message === 'string' ? excerpt(parsed.message, secrets) : undefined;
  const what = `REST request failed with HTTP ${status}${pgrst ? ` (${scrub(pgrst, secrets)})` : ''}${serverText ? `: ${serverText}` : ''}`;
  return new LensfleetError(code, `${where(context)}${what}${hint(code, identity, context.tenant)}`, {
    details: { ...context, httpStatus: status, ...(pgrst === undefined ? {} : { serverCode: scrub(pgrst, secrets) }) },
  });
}

function statusCode(status: number, pgrst: string | undefined, identity: RequestIdentity): ErrorCode {
  if (status >= 500) return pgrst === '57014' ? 'QUERY_TIMEOUT' : 'QUERY_FAILED_TRANSIENT';
  if ((status === 401 || status === 403) && (pgrst === '42501' || pgrst?.startsWith('0P'))) return identity === 'user' ? 'AUTH_ROLE_FORBIDDEN' : 'QUERY_FAILED';
  if (status === 401) return pgrst === 'PGRST303' ? 'AUTH_EXPIRED' : 'AUTH_INVALID';
  if (status === 408 || status === 429) return 'QUERY_FAILED_TRANSIENT';
  return 'QUERY_FAILED';
}

/** What to look at, for the codes whose cause is this worker's settings against the tenant's. */
function hint(code: ErrorCode, identity: RequestIdentity, tenant: string): string {
  if (code === 'AUTH_INVALID' || code === 'AUTH_EXPIRED') {
    return identity === 'user'
      ? ` (the token passed this worker's check, so ${tenant}'s JWT settings here, ${tenant}_JWT_SECRET or ${tenant}_JWKS_URL, differ from the project's, or the clocks do)`
      : ` (the tenant refused its service key: check ${tenant}_SUPABASE_SERVICE_KEY)`;
  }
  if (code === 'AUTH_ROLE_FORBIDDEN') {
    return " (the token's role may not be assumed by the tenant's API, or lacks a grant on what the lens reads: fix the role's grants or the tenant's jwtRoles)";
  }
  return '';
}

/**
 * The error for a request that got no complete response (undici's fetch rejected, or reading the
 * body failed). undici wraps the cause: `TypeError('fetch failed', { cause })`, the cause carrying
 * a Node system code (`ECONNRESET`) or undici's (`UND_ERR_SOCKET`); happy-eyeballs connects may
 * reject with an `AggregateError` of several.
 *
 * - could not connect → `CONNECTION_FAILED`; connect timeout → `CONNECT_TIMEOUT`;
 * - lost mid-request (reset, closed by the other side) → `QUERY_FAILED_TRANSIENT`;
 * - undici's header/body timeouts → `QUERY_TIMEOUT`.
 */
export function restFailureError(err: unknown, context: RestErrorContext): LensfleetError {
  if (err instanceof LensfleetError) return err;
  const sysCode = findCode(err);
  let code: ErrorCode = 'QUERY_FAILED_TRANSIENT';
  let what = `REST request failed (${sysCode ?? 'no response'})`;
  if (sysCode === 'UND_ERR_CONNECT_TIMEOUT') {
    code = 'CONNECT_TIMEOUT';
    what = 'opening an HTTP connection timed out';
  } else if (sysCode !== undefined && CONNECT_CODES.has(sysCode)) {
    code = 'CONNECTION_FAILED';
    what = `cannot open an HTTP connection (${sysCode})`;
  } else if (sysCode !== undefined && RESPONSE_TIMEOUT_CODES.has(sysCode)) {
    code = 'QUERY_TIMEOUT';
    what = `REST response timed out (${sysCode})`;
  } else if (err instanceof SyntaxError) {
    what = 'REST response is not valid JSON';
  }
  return new LensfleetError(code, `${where(context)}${what}`, { cause: err, details: { ...context, ...(sysCode ? { cause: sysCode } : {}) } });
}

/** The first string `code` on the error, its cause chain, or an AggregateError's first error. */
export function findCode(err: unknown): string | undefined {
  let e: unknown = err;
  for (let depth = 0; depth < 5 && typeof e === 'object' && e !== null; depth++) {
    const x = e as { code?: unknown; cause?: unknown; errors?: unknown };
    if (typeof x.code === 'string' && x.code !== '') return x.code;
    e = x.cause ?? (Array.isArray(x.errors) ? x.errors[0] : undefined);
  }
  return undefined;
}

function where(context: RestErrorContext): string {
  return `tenant ${context.tenant}${context.lens ? `, lens ${context.lens}` : ''}: `;
}

function parseErrorBody(body: string): PostgrestErrorBody | undefined {
  if (body === '') return undefined;
  try {
    const v: unknown = JSON.parse(body);
    return typeof v === 'object' && v !== null ? (v as PostgrestErrorBody) : undefined;
  } catch {
    return undefined;
  }
}

function excerpt(text: string, secrets: readonly string[]): string {
  // Scrub before cutting: a secret cut in half would no longer match.
  const clean = scrub(text, secrets).replace(/\s+/g, ' ').trim();
  return clean.length > SERVER_TEXT_MAX ? `${clean.slice(0, SERVER_TEXT_MAX)}…` : clean;
}

/** Anything shaped like a JWT (or its first two segments), whoever's it is. */
const JWT_LIKE = /eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*)?/g;

function scrub(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets) if (s.length >= 8 && out.includes(s)) out = out.split(s).join('[REDACTED]');
  return out.replace(JWT_LIKE, '[REDACTED]');
}

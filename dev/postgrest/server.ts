/**
 * A PostgREST stand-in: a small HTTP server of ours that speaks the part of PostgREST's protocol
 * lensfleet's demo lenses use, on top of a real tenant Postgres with its row-level security, so
 * that a user's identity goes end to end in tests and the demo: HTTP → verified JWT → database
 * role and claims → RLS policy. (No PostgREST binary can be installed where lensfleet is built.)
 *
 * Per request, as PostgREST does it: `apikey` + `Authorization: Bearer <jwt>` → the JWT verified
 * with the project's HS256 secret → one transaction on a connection of the authenticator role
 * (the tenant's login role): `BEGIN READ ONLY`; `set_config('role', <role claim>, true)` (a
 * `service_role` token keeps the authenticator's own role, which bypasses RLS; no role claim →
 * `anon`); `set_config('request.jwt.claims', <claims>, true)`; the read; `COMMIT`. Errors have
 * PostgREST's JSON shape and status codes.
 *
 * For tests it records every TCP connection opened and every request (path, bearer token,
 * status), in memory only, and takes injected faults (a status, a delay, a destroyed socket).
 */
import { createSecretKey, type KeyObject } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { errors as joseErrors, type JWTPayload, jwtVerify } from 'jose';
import pg from 'pg';
import { GrammarError, parseReadRequest } from './grammar.js';
import { ApiError, buildRead, loadSchemaCache, type SchemaCache } from './sql.js';

export interface StandInOptions {
  /** The tenant database, as its authenticator (login) role: postgres://role:pw@host:port/db. */
  readonly databaseUrl: string;
  /** The project's JWT secret (HS256). */
  readonly jwtSecret: string;
  /** @defaultValue 127.0.0.1 */
  readonly host?: string;
  /** 0 = any free port. @defaultValue 0 */
  readonly port?: number;
  /** Database connections of the stand-in (PostgREST's db-pool). @defaultValue 10 */
  readonly dbPoolMax?: number;
  /** Statement timeout per request, as Supabase sets it per role. @defaultValue 8000 */
  readonly statementTimeoutMs?: number;
  /** Role of a token without a `role` claim (PostgREST's db-anon-role). @defaultValue anon */
  readonly anonRole?: string;
  /** Idle keep-alive sockets close after this long (node's default is 5 s). @defaultValue 5000 */
  readonly keepAliveTimeoutMs?: number;
}

/** One request as the stand-in saw it. */
export interface StandInRequest {
  readonly method: string;
  /** Path and query string. */
  readonly path: string;
  /** The bearer token of the Authorization header, as sent (kept in memory for tests only). */
  readonly token: string | undefined;
  /** The `X-Request-Id` header, as sent (tests tag requests with it to match them to jobs). */
  readonly requestId: string | undefined;
  /** The `Range` header, as sent. */
  readonly range: string | undefined;
  /** The database role the request ran as (undefined when it did not reach the database). */
  readonly role: string | undefined;
  /** Rows in the response (undefined for an error). */
  readonly rows: number | undefined;
  /** The response status; 0 when the socket was destroyed by a fault. */
  readonly status: number;
}

/** What the next request(s) get instead of (or before) a normal answer. */
export interface StandInFault {
  /** Wait this long before answering (then answer normally, or with `status`). */
  readonly delayMs?: number;
  /** Answer with this status and `body` (default: a PostgREST error body), without touching the database. */
  readonly status?: number;
  readonly body?: string;
  /** Destroy the socket instead of answering (a connection reset). */
  readonly destroy?: boolean;
  /** Send `body` chunked (no Content-Length), as a proxy may. */
  readonly chunked?: boolean;
}

export interface PostgrestStandIn {
  /** The project URL (what `<ID>_SUPABASE_URL` holds): http://host:port */
  readonly url: string;
  /** TCP connections accepted since start. */
  connectionsOpened(): number;
  /** Connections open now. */
  connectionsOpen(): number;
  /** Requests answered (or cut) since start (or since `clearRecords`). */
  requests(): readonly StandInRequest[];
  clearRecords(): void;
  /** The next `times` requests get `fault`. */
  injectFault(fault: StandInFault, times?: number): void;
  close(): Promise<void>;
}

const JSON_TYPE = 'application/json; charset=utf-8';
const SINGULAR = 'application/vnd.pgrst.object+json';

/** Start a stand-in for one tenant database. */
export async function startPostgrestStandIn(opts: StandInOptions): Promise<PostgrestStandIn> {
  const db = new pg.Pool({ connectionString: opts.databaseUrl, max: opts.dbPoolMax ?? 10, application_name: 'postgrest-stand-in' });
  db.on('error', () => {}); // an idle connection dropped by the server: the pool replaces it
  let cache: SchemaCache;
  try {
    cache = await loadSchemaCache(db);
  } catch (err) {
    await db.end();
    throw err;
  }
  // A KeyObject, imported once: given bytes, jose imports a WebCrypto key on every verify (6 % of the CPU).
  const key = createSecretKey(Buffer.from(opts.jwtSecret, 'utf8'));
  const anonRole = opts.anonRole ?? 'anon';
  const statementTimeoutMs = opts.statementTimeoutMs ?? 8000;
  const sockets = new Set<Socket>();
  const faults: StandInFault[] = [];
  let records: StandInRequest[] = [];
  let opened = 0;

  const server = http.createServer((req, res) => {
    void handle(req, res).catch(() => {
      if (!res.headersSent && !res.destroyed) sendError(res, new ApiError(500, 'PGRSTX00', 'stand-in internal error'));
    });
  });
  server.keepAliveTimeout = opts.keepAliveTimeoutMs ?? 5000;
  server.on('connection', (socket: Socket) => {
    opened++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const token = bearer(req.headers.authorization);
    let role: string | undefined;
    let rows: number | undefined;
    let recorded = false;
    const record = (status: number) => {
      if (recorded) return;
      recorded = true;
      records.push({
        method: req.method ?? '',
        path: req.url ?? '',
        token,
        requestId: header(req.headers['x-request-id']),
        range: header(req.headers.range),
        role,
        rows,
        status,
      });
    };
    res.on('finish', () => record(res.statusCode));
    res.on('close', () => record(res.writableFinished ? res.statusCode : 0));

    const fault = faults.shift();
    if (fault?.delayMs) await new Promise((r) => setTimeout(r, fault.delayMs));
    if (res.destroyed) return;
    if (fault?.destroy) {
      req.socket.destroy();
      return;
    }
    if (fault?.status !== undefined) {
      const body = fault.body ?? JSON.stringify({ code: null, details: null, hint: null, message: `injected fault ${fault.status}` });
      res.writeHead(fault.status, { 'Content-Type': JSON_TYPE, ...(fault.chunked ? {} : { 'Content-Length': Buffer.byteLength(body) }) });
      if (fault.chunked) for (let i = 0; i < body.length; i += 256) res.write(body.slice(i, i + 256));
      res.end(fault.chunked ? undefined : body);
      return;
    }

    try {
      const url = new URL(req.url ?? '/', 'http://stand-in');
      if (req.method !== 'GET' && req.method !== 'HEAD') throw new ApiError(405, 'PGRST117', `Unsupported HTTP method: ${req.method}`);
      const m = /^\/rest\/v1\/([^/]+)$/.exec(url.pathname);
      if (!m) throw new ApiError(404, 'PGRST125', `Invalid path specified in request URL`);
      const table = decodeURIComponent(m[1]!);
      const profile = req.headers['accept-profile'];
      if (profile !== undefined && profile !== 'public') throw new ApiError(406, 'PGRST106', 'The schema must be one of the following: public');

      // The gateway's check (Supabase's Kong): an API key must come with every request.
      const apikey = header(req.headers.apikey);
      if (apikey === undefined) throw new ApiError(401, 'PGRST301', 'No API key found in request', null, 'No `apikey` request header was found.');
      const claims = await verify(token ?? apikey, key);
      role = claims.role === 'service_role' ? 'service_role' : typeof claims.role === 'string' ? claims.role : anonRole;

      const request = parseReadRequest(url.searchParams);
      const range = effectiveRange(request.limit, request.offset, header(req.headers.range));
      const statement = buildRead(cache, table, request, range);
      const { body, n } = await inTransaction(db, role, claims, statementTimeoutMs, statement.text, statement.values);
      rows = n;

      const singular = header(req.headers.accept)?.includes(SINGULAR) ?? false;
      if (singular && n !== 1) {
        throw new ApiError(406, 'PGRST116', 'Cannot coerce the result to a single JSON object', `The result contains ${n} rows`);
      }
      const payload = singular ? JSON.stringify((JSON.parse(body) as unknown[])[0]) : body;
      res.writeHead(200, {
        'Content-Type': singular ? `${SINGULAR}; charset=utf-8` : JSON_TYPE,
        'Content-Range': n > 0 ? `${range.offset}-${range.offset + n - 1}/*` : '*/*',
        'Content-Length': Buffer.byteLength(payload),
      });
      res.end(req.method === 'HEAD' ? undefined : payload);
    } catch (err) {
      sendError(res, toApiError(err, role !== undefined && role !== anonRole));
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
  });
  const addr = server.address() as AddressInfo;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${addr.address}:${addr.port}`,
    connectionsOpened: () => opened,
    connectionsOpen: () => sockets.size,
    requests: () => records,
    clearRecords: () => {
      records = [];
    },
    injectFault: (fault, times = 1) => {
      for (let i = 0; i < times; i++) faults.push(fault);
    },
    close() {
      closing ??= (async () => {
        const closed = new Promise<void>((r) => server.close(() => r()));
        server.closeAllConnections();
        await closed;
        await db.end();
      })();
      return closing;
    },
  };
}

/**
 * The rows to read, as PostgREST computes them: the `Range` header (GET only) intersected with
 * limit/offset. An empty intersection is `416 PGRST103` (except `limit=0`).
 */
function effectiveRange(limit: number | undefined, offset: number | undefined, rangeHeader: string | undefined): { offset: number; limit: number | undefined } {
  let lo = offset ?? 0;
  let hi = limit === undefined ? Infinity : lo + limit - 1;
  const m = rangeHeader === undefined ? null : /^(\d+)-(\d*)$/.exec(rangeHeader);
  if (m) {
    lo = Math.max(lo, Number(m[1]));
    if (m[2] !== '') hi = Math.min(hi, Number(m[2]));
  }
  if (limit === 0) return { offset: lo, limit: 0 };
  if (hi < lo) throw new ApiError(416, 'PGRST103', 'Requested range not satisfiable', 'An offset beyond the limit was requested');
  return { offset: lo, limit: hi === Infinity ? undefined : hi - lo + 1 };
}

async function verify(token: string, key: KeyObject): Promise<JWTPayload> {
  try {
    const { payload } = await jwtVerify(token, key, { algorithms: ['HS256'] });
    return payload;
  } catch (err) {
    if (err instanceof joseErrors.JWTExpired) throw new ApiError(401, 'PGRST303', 'JWT expired');
    throw new ApiError(401, 'PGRST301', 'JWT could not be decoded or is invalid', err instanceof joseErrors.JOSEError ? err.code : null);
  }
}

/** PostgREST's transaction for a read: the role and claims are transaction-local, so they end with it. */
async function inTransaction(
  db: pg.Pool,
  role: string,
  claims: JWTPayload,
  statementTimeoutMs: number,
  text: string,
  values: unknown[],
): Promise<{ body: string; n: number }> {
  let client: pg.PoolClient;
  try {
    client = await db.connect();
  } catch (err) {
    throw new ApiError(503, 'PGRST000', 'Database client error. Retrying the connection.', (err as { code?: string }).code ?? null);
  }
  let broken: unknown;
  try {
    await client.query('BEGIN READ ONLY');
    if (role === 'service_role') {
      await client.query("SELECT set_config('request.jwt.claims', $1, true), set_config('statement_timeout', $2, true)", [
        JSON.stringify(claims),
        String(statementTimeoutMs),
      ]);
    } else {
      await client.query("SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true), set_config('statement_timeout', $3, true)", [
        role,
        JSON.stringify(claims),
        String(statementTimeoutMs),
      ]);
    }
    const r = await client.query<{ body: string; n: number }>(text, values);
    await client.query('COMMIT');
    return r.rows[0] ?? { body: '[]', n: 0 };
  } catch (err) {
    await client.query('ROLLBACK').catch((e: unknown) => {
      broken = e;
    });
    throw err;
  } finally {
    client.release(broken === undefined ? undefined : (broken as Error));
  }
}

function toApiError(err: unknown, authenticated: boolean): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof GrammarError) return new ApiError(400, 'PGRST100', err.message, err.details);
  const e = err as { code?: unknown; message?: unknown; detail?: unknown; hint?: unknown };
  const code = typeof e.code === 'string' ? e.code : '';
  const message = typeof e.message === 'string' ? e.message : 'error';
  if (!/^[0-9A-Z]{5}$/.test(code)) return new ApiError(503, 'PGRST001', 'Database client error', message);
  return new ApiError(pgStatus(code, authenticated), code, message, typeof e.detail === 'string' ? e.detail : null, typeof e.hint === 'string' ? e.hint : null);
}

/** PostgREST's table of SQLSTATE → HTTP status (docs: Errors → HTTP Status Codes). */
function pgStatus(code: string, authenticated: boolean): number {
  const cls = code.slice(0, 2);
  if (code === '42501') return authenticated ? 403 : 401;
  if (code === '42883' || code === '42P01') return 404;
  if (code === '42P17' || code === '53400') return 500;
  if (code === '23503' || code === '23505') return 409;
  if (code === '25006') return 405;
  if (code === 'P0001') return 400;
  if (cls === '08' || cls === '53') return 503;
  if (cls === '0L' || cls === '0P' || cls === '28') return 403;
  if (['09', '25', '2D', '38', '39', '3B', '40', '54', '55', '57', '58', 'F0', 'HV', 'XX', 'P0'].includes(cls)) return 500;
  return 400;
}

function sendError(res: http.ServerResponse, err: ApiError): void {
  if (res.headersSent || res.destroyed) return;
  const headers: Record<string, string> = { 'Content-Type': JSON_TYPE };
  if (err.status === 401) headers['WWW-Authenticate'] = `Bearer error="invalid_token", error_description="${err.message}"`;
  res.writeHead(err.status, headers);
  res.end(JSON.stringify({ code: err.code, details: err.details, hint: err.hint, message: err.message }));
}

function bearer(value: string | undefined): string | undefined {
  const m = value === undefined ? null : /^bearer\s+(\S+)$/i.exec(value.trim());
  return m?.[1];
}

function header(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

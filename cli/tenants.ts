/**
 * `lensfleet tenants check`: connect to every configured tenant as a worker would and report
 * what an operator asks first — is it reachable, does it accept our credentials, how far away is
 * it, how full is its server.
 *
 * Tenants are read by the worker's own code (src/config.ts, src/tenants.ts), and a Postgres
 * tenant is reached through a `TenantPool` with the tenant's own settings (connect timeout,
 * session defaults, a transaction pooler's rules), so a failure carries the code a job would fail
 * with (CONNECTION_FAILED with the server's SQLSTATE, CONNECT_TIMEOUT…). A Supabase tenant is
 * asked over REST with its service key, as the worker asks. Every tenant has a deadline
 * (--timeout-ms), so a server that never answers costs that long and no longer. Secrets are never
 * printed: servers appear as host:port/database, messages are scrubbed of the URLs' passwords.
 */
import { performance } from 'node:perf_hooks';
import { TLSSocket } from 'node:tls';
import { Agent, fetch } from 'undici';
import { loadWorkerConfig } from '../src/config.js';
import { type ErrorCode, LensfleetError } from '../src/errors.js';
import { poolKey } from '../src/pool/registry.js';
import { TenantPool } from '../src/pool/tenant-pool.js';
import { findCode, restFailureError, restStatusError } from '../src/rest/errors.js';
import type { Env } from '../src/settings.js';
import { loadTenantDirectory, type PgTenant, type SupabaseTenant, type Tenant, type TenantDirectory } from '../src/tenants.js';
import { location, safeMessage, table } from './format.js';
import { parseCommandArgs } from './args.js';

export const TENANTS_EXIT = {
  /** Every tenant checked is reachable and accepted its credentials. */
  OK: 0,
  /** At least one tenant failed (its line says why, with the error code a job would fail with). */
  FAILED: 1,
  /** Bad usage. */
  USAGE: 2,
  /** The configuration is invalid (the worker would exit 78 too). */
  CONFIG: 78,
} as const;

export const TENANTS_USAGE = `usage: lensfleet tenants check [--tenant <id>]… [--timeout-ms <ms>] [--json]

Connects to every configured tenant (LENSFLEET_TENANTS and LENSFLEET_TENANTS_FILE, read as the
worker reads them) and reports, per tenant:
  Postgres (<ID>_DATABASE_URL): server version, max_connections, client connections now, TLS
    on/off (of this connection), connect time, round-trip latency (median of 3 SELECT 1), and
    whether the server accepted the credentials; a failure with the error code a job would get
    (CONNECTION_FAILED with the server's code, e.g. 28P01 for a wrong password; CONNECT_TIMEOUT).
  Supabase (<ID>_SUPABASE_URL): what REST shows — the API answers, accepts the service key
    (AUTH_INVALID if not), TLS (https), round-trip latency; the database behind it is PostgREST's.
Progress goes to stderr, one line per tenant; the report to stdout. Secrets are never printed.

options:
  --tenant <id>      check only this tenant (repeatable)
  --timeout-ms <ms>  the most one tenant may take (default 10000; its connect timeout is at most this)
  --json             one JSON object instead of a table
  --help             this text
environment: LENSFLEET_TENANTS, <ID>_DATABASE_URL / <ID>_SUPABASE_URL + <ID>_SUPABASE_SERVICE_KEY,
LENSFLEET_TENANTS_FILE, LENSFLEET_POOL_* (as the worker; run it with the workers' environment)
exit codes: 0 every tenant checked is fine, 1 some tenant failed, 2 bad usage, 78 the configuration
is invalid (as the worker would exit)`;

/** Tenants checked at once: enough to be quick with many, few enough not to look like a storm. */
const CHECKS_AT_ONCE = 8;
const APPLICATION_NAME = 'lensfleet-check';
/** A table no schema has: PostgREST answers 404 PGRST205 once the key is accepted, reading no data. */
const REST_PROBE_TABLE = '_lensfleet_tenants_check';

export interface TenantCheck {
  readonly tenant: string;
  readonly backend: 'pg' | 'supabase';
  /** host:port/database or the API's origin: never credentials. */
  readonly server: string;
  readonly ok: boolean;
  /** Whether the server accepted the tenant's credentials; null: it was not reached to say. */
  readonly authOk: boolean | null;
  readonly serverVersion: string | null;
  readonly maxConnections: number | null;
  /** Client connections on the server now (this check's included). */
  readonly connections: number | null;
  readonly tls: boolean | null;
  readonly tlsProtocol: string | null;
  readonly connectMs: number | null;
  readonly roundTripMs: number | null;
  readonly httpStatus?: number;
  /** The error code a job would fail with, and the driver's or server's own code. */
  readonly code?: ErrorCode;
  readonly cause?: string;
  readonly error?: string;
}

export async function tenantsCommand(argv: readonly string[], env: Env): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === '--help' || sub === '-h' || sub === 'help') {
    console.log(TENANTS_USAGE);
    return TENANTS_EXIT.OK;
  }
  if (sub !== 'check') {
    console.error(`${sub === undefined ? 'a subcommand is needed' : `unknown subcommand "${sub}"`}\n\n${TENANTS_USAGE}`);
    return TENANTS_EXIT.USAGE;
  }
  const parsed = parseCommandArgs<{ tenant?: string[]; 'timeout-ms': string; json: boolean }>(
    rest,
    {
      tenant: { type: 'string', multiple: true },
      'timeout-ms': { type: 'string', default: '10000' },
      json: { type: 'boolean', default: false },
    },
    TENANTS_USAGE,
  );
  if ('exit' in parsed) return parsed.exit;
  const { values } = parsed;
  const timeoutMs = Number(values['timeout-ms']);
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 600_000) {
    console.error('--timeout-ms must be a whole number of milliseconds from 1 to 600000');
    return TENANTS_EXIT.USAGE;
  }
  let directory: TenantDirectory;
  try {
    directory = loadTenantDirectory(loadWorkerConfig(env), env);
  } catch (err) {
    if (!(err instanceof LensfleetError) || err.code !== 'INVALID_CONFIG') throw err;
    console.error(`lensfleet tenants check: ${err.message}`);
    return TENANTS_EXIT.CONFIG;
  }
  let tenants = directory.list().sort((a, b) => (a.id < b.id ? -1 : 1));
  if (values.tenant !== undefined) {
    const missing = values.tenant.filter((id) => !directory.has(id));
    if (missing.length > 0) {
      console.error(`--tenant: not configured: ${missing.join(', ')} (configured: ${directory.ids().join(', ') || 'none'})`);
      return TENANTS_EXIT.USAGE;
    }
    tenants = tenants.filter((t) => values.tenant!.includes(t.id));
  }
  if (tenants.length === 0) console.error('no tenants configured (LENSFLEET_TENANTS / LENSFLEET_TENANTS_FILE): nothing to check');
  else console.error(`checking ${tenants.length} tenant${tenants.length === 1 ? '' : 's'} (${CHECKS_AT_ONCE} at a time, at most ${timeoutMs} ms each)…`);

  const results: TenantCheck[] = [];
  let done = 0;
  for (let i = 0; i < tenants.length; i += CHECKS_AT_ONCE) {
    await Promise.all(
      tenants.slice(i, i + CHECKS_AT_ONCE).map(async (t) => {
        const r = await checkTenant(t, timeoutMs);
        results.push(r);
        console.error(`[${++done}/${tenants.length}] ${progressLine(r)}`);
      }),
    );
  }
  results.sort((a, b) => (a.tenant < b.tenant ? -1 : 1));
  const failed = results.filter((r) => !r.ok).length;
  console.log(values.json ? JSON.stringify({ tenants: results, failed }, null, 2) : render(results));
  return failed > 0 ? TENANTS_EXIT.FAILED : TENANTS_EXIT.OK;
}

/** Check one tenant within `timeoutMs`; never throws. */
export function checkTenant(t: Tenant, timeoutMs: number): Promise<TenantCheck> {
  return t.backend === 'pg' ? checkPg(t, timeoutMs) : checkRest(t, timeoutMs);
}

const SERVER_SQL = `SELECT current_setting('server_version') AS version,
  current_setting('max_connections')::int AS max_connections,
  (SELECT count(*) FROM pg_stat_activity a
    WHERE a.backend_type = 'client backend' OR (a.backend_type IS NULL AND a.datname IS NOT NULL AND a.usename IS NOT NULL))::int AS connections`;

async function checkPg(t: PgTenant, timeoutMs: number): Promise<TenantCheck> {
  const url = t.databaseUrl.reveal();
  const server = location(url).replace(/^postgres(ql)?:\/\//, '');
  const empty = { tenant: t.id, backend: 'pg' as const, server, serverVersion: null, maxConnections: null, connections: null, tls: null, tlsProtocol: null };
  // A pool of one connection opened for this check and closed after it: the tenant's own
  // settings, its connect timeout bounded by the check's deadline (whichever is shorter).
  const pool = new TenantPool({
    tenant: t.id,
    key: poolKey(t),
    databaseUrl: t.databaseUrl,
    settings: { ...t.pool, connectTimeoutMs: Math.min(t.pool.connectTimeoutMs, timeoutMs), acquireTimeoutMs: timeoutMs + 1000 },
    max: 1,
    pooling: false,
    applicationName: APPLICATION_NAME,
  });
  let phase = 'connecting' as 'connecting' | 'querying';
  let connectMs: number | null = null;
  const work = (async (): Promise<TenantCheck> => {
    const t0 = performance.now();
    const client = await pool.acquire({ check: 'tenants' });
    connectMs = round(performance.now() - t0);
    phase = 'querying';
    try {
      const stream = (client as unknown as { connection: { stream: unknown } }).connection.stream;
      const tls = stream instanceof TLSSocket;
      const row = (await client.query<{ version: string; max_connections: number; connections: number }>(SERVER_SQL)).rows[0]!;
      const trips: number[] = [];
      for (let i = 0; i < 3; i++) {
        const s = performance.now();
        await client.query('SELECT 1');
        trips.push(performance.now() - s);
      }
      pool.release(client);
      return {
        ...empty,
        ok: true,
        authOk: true,
        serverVersion: row.version,
        maxConnections: row.max_connections,
        connections: row.connections,
        tls,
        tlsProtocol: tls ? ((stream as TLSSocket).getProtocol() ?? null) : null,
        connectMs,
        roundTripMs: round(trips.sort((a, b) => a - b)[1]!),
      };
    } catch (err) {
      pool.release(client, err);
      throw err;
    }
  })();
  work.catch(() => {}); // settled below, or abandoned at the deadline
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<'deadline'>((resolve) => {
    timer = setTimeout(() => resolve('deadline'), timeoutMs);
  });
  try {
    const r = await Promise.race([work, deadline]);
    if (r !== 'deadline') return r;
    const code: ErrorCode = phase === 'connecting' ? 'CONNECT_TIMEOUT' : 'QUERY_TIMEOUT';
    return {
      ...empty,
      ok: false,
      authOk: phase === 'connecting' ? null : true,
      connectMs,
      roundTripMs: null,
      code,
      error: `no answer within ${timeoutMs} ms (${phase})`,
    };
  } catch (err) {
    const { code, cause } = codesOf(err);
    return {
      ...empty,
      ok: false,
      // 28xxx: invalid authorization (28P01 wrong password, 28000 no pg_hba.conf entry / role).
      authOk: cause?.startsWith('28') ? false : phase === 'querying' ? true : null,
      connectMs,
      roundTripMs: null,
      code,
      ...(cause === undefined ? {} : { cause }),
      error: safeMessage(err, [url]),
    };
  } finally {
    clearTimeout(timer);
    // Not awaited past a moment: a connection still opening to a silent server ends with its own timeout.
    void pool.close({ abandonCheckedOut: true }).catch(() => {});
  }
}

async function checkRest(t: SupabaseTenant, timeoutMs: number): Promise<TenantCheck> {
  const key = t.serviceKey.reveal();
  const origin = location(t.supabaseUrl);
  const base = {
    tenant: t.id,
    backend: 'supabase' as const,
    server: origin,
    serverVersion: null,
    maxConnections: null,
    connections: null,
    tls: origin.startsWith('https:'),
    tlsProtocol: null,
    connectMs: null,
  };
  const probe = `${t.supabaseUrl.replace(/\/+$/, '')}/rest/v1/${REST_PROBE_TABLE}?limit=0`;
  const context = { tenant: t.id };
  const trips: number[] = [];
  // The tenant's connect timeout (bounded by the deadline), as its REST pool connects: a host that
  // never accepts fails with CONNECT_TIMEOUT, one that accepts and never answers with QUERY_TIMEOUT.
  const dispatcher = new Agent({ connect: { timeout: Math.min(t.pool.connectTimeoutMs, timeoutMs) } });
  try {
    let status = 0;
    let body = '';
    let server: string | null = null;
    // Up to three requests (the first one opens the connection): latency is the median. One
    // deadline for all of them; no further request once half of it is spent.
    const signal = AbortSignal.timeout(timeoutMs);
    const started = performance.now();
    for (let i = 0; i < 3 && (i === 0 || performance.now() - started < timeoutMs / 2); i++) {
      const s = performance.now();
      const res = await fetch(probe, {
        headers: { apikey: key, Authorization: `Bearer ${key}`, Accept: 'application/json' },
        signal,
        dispatcher,
      });
      body = (await res.text()).slice(0, 4096);
      trips.push(performance.now() - s);
      status = res.status;
      server = res.headers.get('server');
      if (!reachedAndAccepted(status, body)) break;
    }
    const roundTripMs = round([...trips].sort((a, b) => a - b)[Math.floor(trips.length / 2)]!);
    if (reachedAndAccepted(status, body)) return { ...base, ok: true, authOk: true, serverVersion: server, roundTripMs, httpStatus: status };
    const err = restStatusError(status, body, context, [key]);
    const authFailed = err.code === 'AUTH_INVALID' || err.code === 'AUTH_EXPIRED';
    return {
      ...base,
      ok: false,
      authOk: authFailed ? false : null,
      serverVersion: server,
      roundTripMs,
      httpStatus: status,
      code: err.code,
      error: err.message,
    };
  } catch (err) {
    const aborted = findCode(err) === 'ABORT_ERR' || (err as Error).name === 'TimeoutError';
    const typed = aborted ? new LensfleetError('QUERY_TIMEOUT', `tenant ${t.id}: no HTTP answer within ${timeoutMs} ms`) : restFailureError(err, context);
    const cause = findCode(err);
    return {
      ...base,
      ok: false,
      authOk: null,
      roundTripMs: null,
      code: typed.code,
      ...(cause === undefined || aborted ? {} : { cause }),
      error: safeMessage(typed, [t.supabaseUrl]).split(key).join('***'),
    };
  } finally {
    void dispatcher.close().catch(() => {});
  }
}

/** 2xx, or PostgREST's "no such table" (the probe's table does not exist): the API answered as the service. */
function reachedAndAccepted(status: number, body: string): boolean {
  if (status >= 200 && status < 300) return true;
  if (status !== 404) return false;
  try {
    const code = (JSON.parse(body) as { code?: unknown }).code;
    return code === 'PGRST205' || code === '42P01';
  } catch {
    return false;
  }
}

function codesOf(err: unknown): { code: ErrorCode; cause: string | undefined } {
  if (err instanceof LensfleetError) {
    const cause = (err.cause as { code?: unknown } | undefined)?.code;
    return { code: err.code, cause: typeof cause === 'string' ? cause : undefined };
  }
  const own = (err as { code?: unknown } | undefined)?.code;
  // An error of the check's own queries (the connection was open): what a lens query would get.
  return { code: 'QUERY_FAILED', cause: typeof own === 'string' ? own : undefined };
}

const round = (ms: number): number => Math.round(ms * 100) / 100;

function progressLine(r: TenantCheck): string {
  if (r.ok) return `${r.tenant}: ok (${r.backend} ${r.server}, round trip ${r.roundTripMs} ms)`;
  return `${r.tenant}: FAILED ${r.code}${r.cause ? ` (${r.cause})` : ''} (${r.backend} ${r.server})`;
}

function render(results: readonly TenantCheck[]): string {
  const out: string[] = [];
  if (results.length === 0) return 'no tenants checked';
  out.push(
    table(
      ['TENANT', 'BACKEND', 'SERVER', 'VERSION', 'MAX_CONN', 'CONNS', 'TLS', 'CONNECT_MS', 'RTT_MS', 'AUTH', 'RESULT'],
      results.map((r) => [
        r.tenant,
        r.backend,
        r.server,
        r.serverVersion ?? '-',
        r.maxConnections ?? '-',
        r.connections ?? '-',
        r.tls === null ? '-' : r.tls ? (r.tlsProtocol ?? 'on') : 'off',
        r.connectMs ?? '-',
        r.roundTripMs ?? '-',
        r.authOk === null ? '-' : r.authOk ? 'ok' : 'failed',
        r.ok ? 'ok' : `${r.code}${r.cause ? ` (${r.cause})` : ''}`,
      ]),
    ),
  );
  const failed = results.filter((r) => !r.ok);
  out.push('');
  // (the pool's and the REST errors' messages start with the tenant already)
  for (const r of failed) out.push(`error: tenant ${r.tenant}: ${r.code}${r.cause ? ` (${r.cause})` : ''}: ${r.error?.replace(`tenant ${r.tenant}: `, '')}`);
  out.push(
    failed.length === 0 ? `every tenant is reachable and accepted its credentials (${results.length})` : `${failed.length} of ${results.length} tenants failed`,
  );
  return out.join('\n');
}

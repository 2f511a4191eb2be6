/**
 * How a tenant's connections travel: whether they are encrypted, and whether the server's identity
 * is verified, read from the tenant's URL as node-pg and fetch will use it. It is read statically,
 * so a worker can say at start which tenants' queries, results and credentials would cross the
 * network in clear.
 *
 * node-pg's reading of a Postgres URL (pg-connection-string), which differs from libpq's:
 * - no `sslmode` and no `ssl`: `PGSSLMODE` from the environment, else **no TLS**;
 * - `sslmode=disable`: no TLS (said on purpose);
 * - `sslmode=prefer|require|verify-ca|verify-full`: TLS with the certificate and the host name
 *   verified (libpq's `verify-full`; `require` against a self-signed server fails to connect);
 * - `sslmode=no-verify`: TLS without verification; any other sslmode, or `sslrootcert`/`sslcert`/
 *   `sslkey` without one: verified;
 * - with `uselibpqcompat=true`, libpq's meanings: `prefer`/`require` encrypt without verifying,
 *   `verify-ca` verifies the certificate but not the host name, `verify-full` both;
 * - `ssl=true|1`: verified, `ssl=0`: no TLS, `ssl=no-verify`: unverified.
 */
import type { Env } from './config.js';
import type { Tenant } from './tenants.js';

/** `off`: in clear; `unverified`: encrypted, but a man in the middle could pose as the server; `verified`: both. */
export type TlsLevel = 'off' | 'unverified' | 'verified';

export interface TransportSecurity {
  /** The server's host (never the credentials). */
  readonly host: string;
  /** Loopback or a Unix socket: nothing crosses a network. */
  readonly local: boolean;
  readonly tls: TlsLevel;
  /** Whether the URL says it itself (`sslmode`/`ssl`, or the https/http scheme): `sslmode=disable` is a choice, a missing sslmode is not. */
  readonly explicit: boolean;
}

function isLocalHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === '' || h.startsWith('/') || h === 'localhost' || h.endsWith('.localhost') || h === '::1' || /^127(\.\d{1,3}){3}$/.test(h);
}

/** What an sslmode makes of node-pg's TLS (pg-connection-string's two readings). */
function levelOfMode(mode: string | null, libpq: boolean): TlsLevel {
  if (mode === 'disable') return 'off';
  if (libpq) {
    // prefer/require: encrypt only; verify-ca: the certificate but not the host name.
    if (mode === 'prefer' || mode === 'require' || mode === 'verify-ca') return 'unverified';
    return 'verified';
  }
  return mode === 'no-verify' ? 'unverified' : 'verified';
}

/** The PGSSLMODE values node-pg reads (any other is no TLS). */
const PGSSLMODES = new Set(['disable', 'prefer', 'require', 'verify-ca', 'verify-full', 'no-verify']);

/** A Postgres URL's transport, as node-pg connects with it (`env` for PGSSLMODE). */
export function postgresTransport(url: string, env: Env = process.env): TransportSecurity {
  const u = new URL(url);
  const q = u.searchParams;
  // A `host` parameter (a Unix socket directory, or another host) wins over the URL's host.
  const host = q.get('host') ?? decodeURIComponent(u.hostname);
  const local = isLocalHost(host);
  const said = (tls: TlsLevel, explicit = true): TransportSecurity => ({ host, local, tls, explicit });
  const mode = q.get('sslmode');
  if (mode !== null || q.get('sslcert') || q.get('sslkey') || q.get('sslrootcert')) return said(levelOfMode(mode, q.get('uselibpqcompat') === 'true'));
  const ssl = q.get('ssl');
  if (ssl !== null) return said(ssl === '0' ? 'off' : ssl === 'no-verify' ? 'unverified' : 'verified');
  if (q.get('sslnegotiation') === 'direct') return said('verified');
  // pg's own fallback: PGSSLMODE (read as node-pg reads an sslmode), else no TLS.
  const envMode = env.PGSSLMODE;
  return envMode !== undefined && PGSSLMODES.has(envMode) ? said(levelOfMode(envMode, false)) : said('off', false);
}

/** A tenant's transport: its Postgres URL, or its Supabase URL's scheme (fetch verifies https). */
export function tenantTransport(tenant: Tenant, env: Env = process.env): TransportSecurity {
  if (tenant.backend === 'pg') return postgresTransport(tenant.databaseUrl.reveal(), env);
  const u = new URL(tenant.supabaseUrl);
  const https = u.protocol === 'https:';
  // http to another host sends the service key in clear: never a stated choice.
  return { host: u.hostname, local: isLocalHost(u.hostname), tls: https ? 'verified' : 'off', explicit: https };
}

/**
 * The tenants whose connections would cross a network in clear or to an unverified server, for
 * the worker's warning at start: in clear without saying so (no sslmode), or encrypted without
 * verification. `sslmode=disable` to another host is a stated choice (a private network), not warned.
 */
export function transportWarnings(tenants: readonly Tenant[], env: Env = process.env): { clear: string[]; unverified: string[] } {
  const clear: string[] = [];
  const unverified: string[] = [];
  for (const t of tenants) {
    let s: TransportSecurity;
    try {
      s = tenantTransport(t, env);
    } catch {
      continue; // a URL the directory accepted; nothing to say here
    }
    if (s.local) continue;
    if (s.tls === 'off' && !s.explicit) clear.push(t.id);
    else if (s.tls === 'unverified') unverified.push(t.id);
  }
  return { clear, unverified };
}

/**
 * A tenant's JWT settings: which key verifies its users' tokens, which claims are expected, and
 * which database roles a token may ask for. Parsed once, at the edge, from the environment
 * (`<ID>_JWT_SECRET`, …) and the tenants file (`jwtSecret`, `jwksUrl`, …); the verifier receives
 * the frozen result. See docs/IDENTITY.md.
 */
import { LensfleetError } from '../errors.js';
import { Secret } from '../secret.js';
import type { Env } from '../config.js';

/** A tenant's verified-identity settings (undefined for a tenant that takes no user tokens). */
export interface TenantAuthSettings {
  /** HS256/384/512 shared secret (`<ID>_JWT_SECRET`, tenants file `jwtSecret`); at least 32 characters. */
  readonly jwtSecret?: Secret;
  /** Remote JWKS (`<ID>_JWKS_URL`, tenants file `jwksUrl`) for RS*, PS*, ES* and EdDSA tokens, fetched and cached. */
  readonly jwksUrl?: string;
  /** Expected `aud`: the token must name this audience (or one of these). @defaultValue not checked */
  readonly audience?: string | readonly string[];
  /** Expected `iss`. @defaultValue not checked */
  readonly issuer?: string;
  /** Database roles a token may ask for in its `role` claim. @defaultValue ['authenticated', 'anon'] */
  readonly roles: readonly string[];
  /**
   * Role of a verified token without a `role` claim (PostgREST's `db-anon-role` behaviour); must be
   * in `roles`. @defaultValue unset: a token without a `role` claim is rejected (`AUTH_INVALID`)
   */
  readonly defaultRole?: string;
  /** Allowed clock skew for exp/nbf/iat, in seconds. @defaultValue 30 */
  readonly clockSkewSeconds: number;
}

export const DEFAULT_AUTH_ROLES: readonly string[] = Object.freeze(['authenticated', 'anon']);
export const DEFAULT_CLOCK_SKEW_SECONDS = 30;
/** RFC 7518 §3.2 wants an HMAC key at least as long as the hash; PostgREST enforces 32 characters too. */
export const MIN_JWT_SECRET_LENGTH = 32;
const MAX_CLOCK_SKEW_SECONDS = 600;

/**
 * Raw values as read from the tenants file (these names) or the environment (see
 * {@link AUTH_SETTINGS}); `parseTenantAuth` validates them. Strings from the environment are
 * accepted where the file has numbers or lists (lists comma-separated).
 */
export interface RawTenantAuth {
  readonly jwtSecret?: string | undefined;
  readonly jwksUrl?: string | undefined;
  readonly jwtAudience?: string | readonly string[] | undefined;
  readonly jwtIssuer?: string | undefined;
  readonly jwtRoles?: string | readonly string[] | undefined;
  readonly jwtDefaultRole?: string | undefined;
  readonly jwtClockSkewSeconds?: number | string | undefined;
}

/** Every auth setting: tenants-file key → environment suffix (`<ID>_<suffix>`). One table, looped over. */
export const AUTH_SETTINGS: Readonly<Record<keyof RawTenantAuth, string>> = Object.freeze({
  jwtSecret: 'JWT_SECRET',
  jwksUrl: 'JWKS_URL',
  jwtAudience: 'JWT_AUDIENCE',
  jwtIssuer: 'JWT_ISSUER',
  jwtRoles: 'JWT_ROLES',
  jwtDefaultRole: 'JWT_DEFAULT_ROLE',
  jwtClockSkewSeconds: 'JWT_CLOCK_SKEW_SECONDS',
});

/**
 * Role names a token may never obtain, whatever the allowlist says: superusers and the roles of
 * managed platforms that bypass row-level security or administer the database. A role is refused
 * when its lower-cased name is listed here or starts with a listed prefix.
 */
const PRIVILEGED_ROLES = new Set([
  'postgres',
  'service_role',
  'authenticator',
  'dashboard_user',
  'pgbouncer',
  'rdsadmin',
  'rds_superuser',
  'cloudsqlsuperuser',
  'cloudsqladmin',
  'azure_superuser',
  'azure_pg_admin',
  'root',
  'admin',
  'superuser',
]);
const PRIVILEGED_PREFIXES = ['pg_', 'supabase_', 'pgsodium_', 'rds_', 'cloudsql', 'azure_'];
/** Postgres identifiers are at most 63 bytes (NAMEDATALEN − 1). */
const MAX_ROLE_NAME_BYTES = 63;

/** True for a role name no token may obtain (see PRIVILEGED_ROLES). */
export function isPrivilegedRole(role: string): boolean {
  const r = role.toLowerCase();
  return PRIVILEGED_ROLES.has(r) || PRIVILEGED_PREFIXES.some((p) => r.startsWith(p));
}

/** The raw auth settings of tenant `tenantId` found in the environment (`<ID>_JWT_SECRET`, …). */
export function readTenantAuthEnv(tenantId: string, env: Env): RawTenantAuth {
  const out: Record<string, string> = {};
  for (const [key, suffix] of Object.entries(AUTH_SETTINGS)) {
    const v = env[`${tenantId}_${suffix}`];
    if (v !== undefined && v.trim() !== '') out[key] = v;
  }
  return out;
}

/**
 * Validate a tenant's auth settings. Returns undefined when the tenant has no key (it takes no
 * user tokens; a job with one fails with `AUTH_NOT_CONFIGURED`). Throws `INVALID_CONFIG` naming
 * the tenant and the setting, never echoing the secret.
 */
export function parseTenantAuth(tenantId: string, raw: RawTenantAuth): TenantAuthSettings | undefined {
  const name = (key: keyof RawTenantAuth): string => `tenant "${tenantId}": ${key} (${tenantId}_${AUTH_SETTINGS[key]})`;
  const fail = (key: keyof RawTenantAuth, what: string): never => {
    throw new LensfleetError('INVALID_CONFIG', `${name(key)} ${what}`, { details: { tenant: tenantId, setting: key } });
  };

  const secret = raw.jwtSecret;
  if (secret !== undefined) {
    if (typeof secret !== 'string') fail('jwtSecret', 'must be a string');
    else if (secret.length < MIN_JWT_SECRET_LENGTH) fail('jwtSecret', `must be at least ${MIN_JWT_SECRET_LENGTH} characters (got ${secret.length})`);
  }
  const jwksUrl = raw.jwksUrl === undefined ? undefined : checkJwksUrl(raw.jwksUrl, (what) => fail('jwksUrl', what));

  if (secret === undefined && jwksUrl === undefined) {
    // Claims settings without a key would silently do nothing: say so rather than ignore them.
    const orphan = (Object.keys(AUTH_SETTINGS) as (keyof RawTenantAuth)[]).find((k) => raw[k] !== undefined);
    if (orphan !== undefined) fail(orphan, `is set but the tenant has no key: set jwtSecret (${tenantId}_JWT_SECRET) or jwksUrl (${tenantId}_JWKS_URL)`);
    return undefined;
  }

  const audience = raw.jwtAudience === undefined ? undefined : nonEmptyList(raw.jwtAudience, (what) => fail('jwtAudience', what));
  const issuer = raw.jwtIssuer === undefined ? undefined : raw.jwtIssuer;
  if (issuer !== undefined && (typeof issuer !== 'string' || issuer.trim() === '')) fail('jwtIssuer', 'must be a non-empty string');

  const roles = raw.jwtRoles === undefined ? [...DEFAULT_AUTH_ROLES] : nonEmptyList(raw.jwtRoles, (what) => fail('jwtRoles', what));
  for (const role of roles) {
    if (Buffer.byteLength(role) > MAX_ROLE_NAME_BYTES) fail('jwtRoles', `lists a role name longer than ${MAX_ROLE_NAME_BYTES} bytes`);
    if (isPrivilegedRole(role)) {
      fail(
        'jwtRoles',
        `lists "${role}", a superuser or platform role that bypasses row-level security; user tokens may only take unprivileged roles such as authenticated, anon`,
      );
    }
  }

  const defaultRole = raw.jwtDefaultRole;
  if (defaultRole !== undefined && (typeof defaultRole !== 'string' || !roles.includes(defaultRole))) {
    fail('jwtDefaultRole', `must be one of the allowed roles (${roles.join(', ')})`);
  }

  let clockSkewSeconds = DEFAULT_CLOCK_SKEW_SECONDS;
  if (raw.jwtClockSkewSeconds !== undefined) {
    const v = typeof raw.jwtClockSkewSeconds === 'string' && raw.jwtClockSkewSeconds.trim() !== '' ? Number(raw.jwtClockSkewSeconds) : raw.jwtClockSkewSeconds;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > MAX_CLOCK_SKEW_SECONDS) {
      fail('jwtClockSkewSeconds', `must be a whole number of seconds from 0 to ${MAX_CLOCK_SKEW_SECONDS}`);
    }
    clockSkewSeconds = v as number;
  }

  const settings: TenantAuthSettings = {
    ...(secret !== undefined ? { jwtSecret: new Secret(secret) } : {}),
    ...(jwksUrl !== undefined ? { jwksUrl } : {}),
    ...(audience !== undefined ? { audience: audience.length === 1 ? audience[0]! : Object.freeze(audience) } : {}),
    ...(issuer !== undefined ? { issuer } : {}),
    roles: Object.freeze(roles),
    ...(defaultRole !== undefined ? { defaultRole } : {}),
    clockSkewSeconds,
  };
  return Object.freeze(settings);
}

/**
 * Two tenants that accept the same key must each expect their own `aud` or `iss`, or a user token
 * of one is a valid token of the other. Throws `INVALID_CONFIG` naming both tenants.
 */
export function assertDistinctTenantKeys(tenants: Iterable<readonly [string, TenantAuthSettings | undefined]>): void {
  const seen: [string, TenantAuthSettings][] = [];
  for (const [id, s] of tenants) {
    if (s === undefined) continue;
    for (const [otherId, other] of seen) {
      const sameSecret = s.jwtSecret !== undefined && other.jwtSecret !== undefined && s.jwtSecret.reveal() === other.jwtSecret.reveal();
      const sameJwks = s.jwksUrl !== undefined && s.jwksUrl === other.jwksUrl;
      if ((sameSecret || sameJwks) && !distinguishes(s, other)) {
        throw new LensfleetError(
          'INVALID_CONFIG',
          `tenants "${otherId}" and "${id}" accept the same ${sameSecret ? 'jwtSecret' : 'jwksUrl'}, so a user token of one would be accepted by the other; give each its own key, or a distinct jwtIssuer or jwtAudience`,
          { details: { tenants: [otherId, id] } },
        );
      }
    }
    seen.push([id, s]);
  }
}

function distinguishes(a: TenantAuthSettings, b: TenantAuthSettings): boolean {
  if (a.issuer !== undefined && b.issuer !== undefined && a.issuer !== b.issuer) return true;
  if (a.audience === undefined || b.audience === undefined) return false;
  const bs = new Set(typeof b.audience === 'string' ? [b.audience] : b.audience);
  return (typeof a.audience === 'string' ? [a.audience] : a.audience).every((x) => !bs.has(x));
}

function nonEmptyList(value: unknown, fail: (what: string) => never): string[] {
  const items = typeof value === 'string' ? value.split(',').map((s) => s.trim()) : value;
  if (!Array.isArray(items) || items.length === 0 || items.some((s) => typeof s !== 'string' || s.trim() === '')) {
    return fail('must be a non-empty list of non-empty strings (comma-separated in the environment)');
  }
  return [...new Set(items as string[])];
}

const LOOPBACK_HOSTS = new Set(['localhost', '[::1]']);

function checkJwksUrl(value: unknown, fail: (what: string) => never): string {
  if (typeof value !== 'string') return fail('must be a string');
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return fail('is not a valid URL (expected https://host/.well-known/jwks.json)');
  }
  const loopback = LOOPBACK_HOSTS.has(url.hostname) || /^127\.\d+\.\d+\.\d+$/.test(url.hostname);
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && loopback)) {
    // Keys fetched over plain HTTP can be swapped by anyone on the path, who could then mint tokens.
    return fail('must use https:// (plain http:// is accepted only for a loopback host)');
  }
  if (url.username !== '' || url.password !== '') return fail('must not carry credentials (a JWKS is public)');
  return url.href;
}

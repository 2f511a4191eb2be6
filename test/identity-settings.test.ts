/**
 * A tenant's JWT settings, parsed at the edge: defaults, every setting from the environment and
 * the tenants file, and refusals that name the tenant and the setting without echoing a secret.
 */
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { LensfleetError } from '../src/errors.js';
import {
  AUTH_SETTINGS,
  assertDistinctTenantKeys,
  DEFAULT_AUTH_ROLES,
  isPrivilegedRole,
  parseTenantAuth,
  type RawTenantAuth,
  readTenantAuthEnv,
  type TenantAuthSettings,
} from '../src/identity/settings.js';

const SECRET = 'a-tenant-secret-that-is-long-enough-123';

function configError(fn: () => unknown): LensfleetError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(LensfleetError);
    expect((err as LensfleetError).code).toBe('INVALID_CONFIG');
    return err as LensfleetError;
  }
  throw new Error('expected INVALID_CONFIG');
}

function parse(raw: RawTenantAuth, tenant = 'A'): TenantAuthSettings {
  const s = parseTenantAuth(tenant, raw);
  if (s === undefined) throw new Error('expected settings');
  return s;
}

describe('parseTenantAuth', () => {
  it('a tenant with no key takes no user tokens (undefined)', () => {
    expect(parseTenantAuth('A', {})).toBeUndefined();
  });

  it('defaults: roles authenticated and anon, skew 30 s, no aud/iss, no default role; frozen; the secret is a Secret', () => {
    const s = parse({ jwtSecret: SECRET });
    expect(s.roles).toEqual(['authenticated', 'anon']);
    expect(DEFAULT_AUTH_ROLES).toEqual(['authenticated', 'anon']);
    expect(s).toMatchObject({ clockSkewSeconds: 30 });
    expect(s.audience).toBeUndefined();
    expect(s.issuer).toBeUndefined();
    expect(s.defaultRole).toBeUndefined();
    expect(s.jwksUrl).toBeUndefined();
    expect(s.jwtSecret?.reveal()).toBe(SECRET);
    expect(Object.isFrozen(s)).toBe(true);
    expect(Object.isFrozen(s.roles)).toBe(true);
    // Printing the settings never shows the secret.
    expect(JSON.stringify(s)).not.toContain(SECRET);
    expect(inspect(s)).not.toContain(SECRET);
  });

  it('reads every setting (file values, and the environment’s strings and comma lists)', () => {
    const s = parse({
      jwksUrl: 'https://auth.example.com/.well-known/jwks.json',
      jwtAudience: 'authenticated, app ',
      jwtIssuer: 'https://auth.example.com/auth/v1',
      jwtRoles: 'authenticated,anon,reader',
      jwtDefaultRole: 'anon',
      jwtClockSkewSeconds: '5',
    });
    expect(s).toMatchObject({
      jwksUrl: 'https://auth.example.com/.well-known/jwks.json',
      audience: ['authenticated', 'app'],
      issuer: 'https://auth.example.com/auth/v1',
      roles: ['authenticated', 'anon', 'reader'],
      defaultRole: 'anon',
      clockSkewSeconds: 5,
    });
    expect(s.jwtSecret).toBeUndefined();
    expect(parse({ jwtSecret: SECRET, jwtAudience: ['authenticated'], jwtRoles: ['reader'], jwtClockSkewSeconds: 0 })).toMatchObject({
      audience: 'authenticated',
      roles: ['reader'],
      clockSkewSeconds: 0,
    });
  });

  it('a secret shorter than 32 characters is refused, without echoing it', () => {
    const e = configError(() => parseTenantAuth('A', { jwtSecret: 'short-secret-xyz' }));
    expect(e.message).toContain('tenant "A"');
    expect(e.message).toContain('A_JWT_SECRET');
    expect(e.message).toContain('32');
    expect(e.message).not.toContain('short-secret-xyz');
  });

  it('jwksUrl must be https (http only on loopback), a valid URL, without credentials', () => {
    expect(parse({ jwksUrl: 'http://127.0.0.1:8080/jwks.json' }).jwksUrl).toBe('http://127.0.0.1:8080/jwks.json');
    expect(parse({ jwksUrl: 'http://localhost/jwks.json' }).jwksUrl).toBe('http://localhost/jwks.json');
    expect(parse({ jwksUrl: 'http://[::1]:9/jwks.json' }).jwksUrl).toBe('http://[::1]:9/jwks.json');
    for (const bad of [
      'http://auth.example.com/jwks.json',
      'http://127.0.0.1.evil.example/jwks',
      'ftp://127.0.0.1/jwks',
      'not a url',
      'file:///etc/jwks.json',
    ]) {
      const e = configError(() => parseTenantAuth('A', { jwksUrl: bad }));
      expect(e.message).toContain('jwksUrl (A_JWKS_URL)');
    }
    const e = configError(() => parseTenantAuth('A', { jwksUrl: 'https://user:hunter2-password@auth.example.com/jwks' }));
    expect(e.message).toContain('credentials');
    expect(e.message).not.toContain('hunter2');
  });

  it('a roles allowlist naming a superuser or platform role is refused (any case, pg_ / supabase_ prefixes)', () => {
    for (const role of [
      'postgres',
      'Postgres',
      'service_role',
      'supabase_admin',
      'supabase_auth_admin',
      'authenticator',
      'pg_read_all_data',
      'PG_MONITOR',
      'rds_superuser',
    ]) {
      const e = configError(() => parseTenantAuth('A', { jwtSecret: SECRET, jwtRoles: ['authenticated', role] }));
      expect(e.message).toContain('jwtRoles (A_JWT_ROLES)');
      expect(e.message).toContain(role);
      expect(isPrivilegedRole(role)).toBe(true);
    }
    for (const role of ['authenticated', 'anon', 'reader', 'app_user']) expect(isPrivilegedRole(role)).toBe(false);
  });

  it('refuses empty lists, blank entries, over-long role names, a default role outside the allowlist, a bad skew', () => {
    configError(() => parseTenantAuth('A', { jwtSecret: SECRET, jwtRoles: [] }));
    configError(() => parseTenantAuth('A', { jwtSecret: SECRET, jwtRoles: 'authenticated,,anon' }));
    configError(() => parseTenantAuth('A', { jwtSecret: SECRET, jwtRoles: ['r'.repeat(64)] }));
    configError(() => parseTenantAuth('A', { jwtSecret: SECRET, jwtAudience: ' ' }));
    configError(() => parseTenantAuth('A', { jwtSecret: SECRET, jwtIssuer: '' }));
    expect(configError(() => parseTenantAuth('A', { jwtSecret: SECRET, jwtDefaultRole: 'reader' })).message).toContain('jwtDefaultRole (A_JWT_DEFAULT_ROLE)');
    for (const skew of ['-1', '1.5', 'abc', '601', -1, 601, '']) {
      expect(configError(() => parseTenantAuth('A', { jwtSecret: SECRET, jwtClockSkewSeconds: skew })).message).toContain('jwtClockSkewSeconds');
    }
  });

  it('claims settings without a key are refused rather than silently ignored', () => {
    const e = configError(() => parseTenantAuth('A', { jwtAudience: 'authenticated' }));
    expect(e.message).toContain('no key');
    expect(e.message).toContain('A_JWT_SECRET');
  });
});

describe('readTenantAuthEnv', () => {
  it('reads <ID>_JWT_SECRET, <ID>_JWKS_URL, … for that tenant only (ids are case-sensitive)', () => {
    const env = {
      yA_JWT_SECRET: SECRET,
      yA_JWKS_URL: 'https://a.example/jwks',
      yA_JWT_AUDIENCE: 'authenticated',
      yA_JWT_ISSUER: 'https://a.example',
      yA_JWT_ROLES: 'authenticated,anon',
      yA_JWT_DEFAULT_ROLE: 'anon',
      yA_JWT_CLOCK_SKEW_SECONDS: '10',
      YA_JWT_SECRET: 'another-tenants-secret-0123456789-012',
      yB_JWT_SECRET: 'b-secret',
      yA_JWT_ISSUER_EXTRA: 'x',
    };
    const raw = readTenantAuthEnv('yA', env);
    expect(raw).toEqual({
      jwtSecret: SECRET,
      jwksUrl: 'https://a.example/jwks',
      jwtAudience: 'authenticated',
      jwtIssuer: 'https://a.example',
      jwtRoles: 'authenticated,anon',
      jwtDefaultRole: 'anon',
      jwtClockSkewSeconds: '10',
    });
    expect(Object.keys(raw).sort()).toEqual(Object.keys(AUTH_SETTINGS).sort());
    expect(parse(raw, 'yA')).toMatchObject({ clockSkewSeconds: 10, defaultRole: 'anon' });
    expect(readTenantAuthEnv('yC', { ...env, yC_JWT_SECRET: '  ' })).toEqual({});
  });
});

describe('assertDistinctTenantKeys', () => {
  it('two tenants accepting the same key must expect distinct iss or aud', () => {
    const a = parse({ jwtSecret: SECRET });
    const b = parse({ jwtSecret: SECRET }, 'B');
    const e = configError(() =>
      assertDistinctTenantKeys([
        ['A', a],
        ['C', undefined],
        ['B', b],
      ]),
    );
    expect(e.message).toContain('"A" and "B"');
    expect(e.message).not.toContain(SECRET);
    const jwks = 'https://auth.example.com/jwks';
    configError(() =>
      assertDistinctTenantKeys([
        ['A', parse({ jwksUrl: jwks })],
        ['B', parse({ jwksUrl: jwks, jwtIssuer: 'https://b' }, 'B')],
      ]),
    );
    configError(() =>
      assertDistinctTenantKeys([
        ['A', parse({ jwksUrl: jwks, jwtAudience: 'x,y' })],
        ['B', parse({ jwksUrl: jwks, jwtAudience: 'y' }, 'B')],
      ]),
    );
    // Distinct issuers, disjoint audiences, or distinct keys: fine.
    assertDistinctTenantKeys([
      ['A', parse({ jwksUrl: jwks, jwtIssuer: 'https://a' })],
      ['B', parse({ jwksUrl: jwks, jwtIssuer: 'https://b' }, 'B')],
    ]);
    assertDistinctTenantKeys([
      ['A', parse({ jwksUrl: jwks, jwtAudience: 'a' })],
      ['B', parse({ jwksUrl: jwks, jwtAudience: 'b' }, 'B')],
    ]);
    assertDistinctTenantKeys([
      ['A', a],
      ['B', parse({ jwtSecret: `${SECRET}-b` }, 'B')],
    ]);
  });
});

/**
 * Issue 10 item 8c: the registry keeps each pool's fingerprint for the pool's life, so it must not
 * be the connection string (with its password) or the service key in a string: it is a digest, and
 * it still tells a rotated password apart.
 */
import { describe, expect, it } from 'vitest';
import { DEFAULT_POOL_SETTINGS } from '../src/config.js';
import { pgPools } from '../src/pool/registry.js';
import { restPools } from '../src/rest/pool.js';
import { Secret } from '../src/secret.js';
import type { PgTenant, SupabaseTenant } from '../src/tenants.js';

const PASSWORD = 'Sup3r-S3cret-Passw0rd';
const pg = (password: string): PgTenant => ({
  id: 'yFp',
  backend: 'pg',
  databaseUrl: new Secret(`postgres://reader:${password}@db.example:5432/yacht`),
  pool: DEFAULT_POOL_SETTINGS,
  pooling: true,
});
const supa = (key: string): SupabaseTenant => ({
  id: 'yFpS',
  backend: 'supabase',
  supabaseUrl: 'https://project.supabase.co',
  serviceKey: new Secret(key),
  pool: DEFAULT_POOL_SETTINGS,
  pooling: true,
});

describe('pool fingerprints', () => {
  it('a pg fingerprint holds no part of the database URL and changes with the password', () => {
    const fp = pgPools.fingerprint(pg(PASSWORD));
    expect(fp).toMatch(/^[0-9a-f]{64}$/);
    expect(fp).not.toContain(PASSWORD);
    expect(fp).not.toContain('db.example');
    expect(pgPools.fingerprint(pg(PASSWORD))).toBe(fp);
    expect(pgPools.fingerprint(pg(`${PASSWORD}-rotated`))).not.toBe(fp);
  });

  it('a Supabase fingerprint holds no part of the service key and changes with it', () => {
    const fp = restPools.fingerprint(supa(`eyJ.${PASSWORD}.sig`));
    expect(fp).toMatch(/^[0-9a-f]{64}$/);
    expect(fp).not.toContain(PASSWORD);
    expect(restPools.fingerprint(supa(`eyJ.${PASSWORD}.sig2`))).not.toBe(fp);
  });
});

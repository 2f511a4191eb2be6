/**
 * Supabase tenants for tests: a seeded tenant database each, a PostgREST stand-in in front of it
 * with its own JWT secret, the tenant's service key, and its demo users' tokens.
 */
import { randomBytes } from 'node:crypto';
import { serviceKeyFor, userTokenFor } from '../../dev/postgrest/jwt.js';
import { type PostgrestStandIn, type StandInOptions, startPostgrestStandIn } from '../../dev/postgrest/server.js';
import { demoUserId, type TenantDatabase } from '../../dev/local/tenant-db.js';
import { DEFAULT_POOL_SETTINGS, type PoolSettings } from '../../src/config.js';
import type { PoolEvent } from '../../src/pool/types.js';
import { RestTenantPool, type RestTenantPoolOptions } from '../../src/rest/pool.js';
import { Secret } from '../../src/secret.js';
import { createTenants } from './harness.js';

export interface RestTenant {
  readonly id: string;
  readonly db: TenantDatabase;
  readonly standIn: PostgrestStandIn;
  readonly jwtSecret: string;
  readonly serviceKey: string;
  /** Demo user n's id (1-based) and a valid token for them. */
  user(n: number): { id: string; token: string };
}

export interface RestTenants {
  readonly tenants: RestTenant[];
  close(): Promise<void>;
}

export async function startRestTenants(ids: string[], rows = 40, standIn: Partial<StandInOptions> = {}): Promise<RestTenants> {
  const created = await createTenants(ids, rows);
  const tenants: RestTenant[] = [];
  try {
    for (const db of created.dbs) {
      const jwtSecret = randomBytes(32).toString('base64url');
      const server = await startPostgrestStandIn({ databaseUrl: db.databaseUrl, jwtSecret, ...standIn });
      const serviceKey = await serviceKeyFor(jwtSecret);
      const users = await Promise.all(
        [1, 2].map(async (n) => ({ id: demoUserId(db.tenant, n), token: await userTokenFor(jwtSecret, demoUserId(db.tenant, n)) })),
      );
      tenants.push({
        id: db.tenant,
        db,
        standIn: server,
        jwtSecret,
        serviceKey,
        user: (n) => users[n - 1] ?? { id: demoUserId(db.tenant, n), token: '' },
      });
    }
  } catch (err) {
    await Promise.allSettled(tenants.map((t) => t.standIn.close()));
    await created.drop();
    throw err;
  }
  return {
    tenants,
    async close() {
      await Promise.allSettled(tenants.map((t) => t.standIn.close()));
      await created.drop();
    },
  };
}

/**
 * The environment that configures a worker for these Supabase tenants: `<ID>_SUPABASE_URL` (the
 * stand-in), `<ID>_SUPABASE_SERVICE_KEY` and `<ID>_JWT_SECRET` (the project's, so the worker
 * verifies user tokens with the key the stand-in checks them with).
 */
export function restTenantEnv(tenants: readonly RestTenant[]): Record<string, string> {
  const env: Record<string, string> = { LENSFLEET_TENANTS: tenants.map((t) => t.id).join(',') };
  for (const t of tenants) {
    env[`${t.id}_SUPABASE_URL`] = t.standIn.url;
    env[`${t.id}_SUPABASE_SERVICE_KEY`] = t.serviceKey;
    env[`${t.id}_JWT_SECRET`] = t.jwtSecret;
  }
  return env;
}

/** A REST pool for a stand-in tenant; its events are collected. */
export function makeRestPool(
  t: RestTenant,
  max: number,
  settings: Partial<PoolSettings> = {},
  extra: Partial<RestTenantPoolOptions> = {},
): { pool: RestTenantPool; events: PoolEvent[] } {
  const events: PoolEvent[] = [];
  const pool = new RestTenantPool({
    tenant: t.id,
    key: `${t.id}:service`,
    supabaseUrl: t.standIn.url,
    serviceKey: new Secret(t.serviceKey),
    settings: { ...DEFAULT_POOL_SETTINGS, minSize: 0, ...settings },
    max,
    onEvent: (e) => events.push(e),
    ...extra,
  });
  return { pool, events };
}

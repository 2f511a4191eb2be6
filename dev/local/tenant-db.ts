/**
 * Demo tenant databases: one database and one login role per tenant, seeded with a small maritime
 * maintenance schema (receiving, equipment, work orders). Every row carries `yacht_id` = the
 * tenant id, so a test can prove a job saw only its own tenant's data. Used by the demo, the
 * tests and the benchmarks; production tenants bring their own databases.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

export interface TenantDatabase {
  readonly tenant: string;
  readonly database: string;
  readonly role: string;
  readonly password: string;
  /** postgres://role:password@host:port/database — the tenant's `<ID>_DATABASE_URL`. */
  readonly databaseUrl: string;
}

export interface SeedOptions {
  /** Rows per table (receiving, equipment); work orders get 1.5×. @defaultValue 40 */
  readonly rows?: number;
  /** Drop an existing database of the same name first. @defaultValue true */
  readonly replace?: boolean;
  /** The reader role's CONNECTION LIMIT. @defaultValue 200 */
  readonly connectionLimit?: number;
}

const ident = (s: string) => `"${s.replace(/"/g, '""')}"`;
const literal = (s: string) => `'${s.replace(/'/g, "''")}'`;

/** Database name of a tenant: `lf_<id>` (ids are case-sensitive, so the name is quoted as written). */
export function tenantDatabaseName(tenant: string): string {
  return `lf_${tenant}`;
}

/** The demo schema, shared with docker compose: `deploy/postgres/init/00-schema.sql`. */
export function schemaSql(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  // dev/local (vitest) and dist/dev/local (compiled) sit at different depths below the root.
  for (let i = 0; i < 5; i++, dir = path.dirname(dir)) {
    const file = path.join(dir, 'deploy/postgres/init/00-schema.sql');
    if (existsSync(file)) return readFileSync(file, 'utf8');
  }
  throw new Error(`deploy/postgres/init/00-schema.sql not found above ${fileURLToPath(import.meta.url)}`);
}

/** Demo users per tenant: rows alternate between them (row i belongs to user 1 + i % DEMO_USERS). */
export const DEMO_USERS = 2;

/**
 * The user id (a uuid, the JWT's `sub`) of demo user `n` (1-based) of a tenant: md5 of
 * `<tenant>:user:<n>` read as a uuid, the same value the seed SQL computes. Different per tenant.
 */
export function demoUserId(tenant: string, n: number): string {
  const h = createHash('md5').update(`${tenant}:user:${n}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function seedSql(tenant: string, rows: number): string {
  const t = literal(tenant);
  const owner = `md5(${t} || ':user:' || (1 + i % ${DEMO_USERS}))::uuid`;
  return `
INSERT INTO equipment (yacht_id, name, category, location, serial_number, owner_id)
SELECT ${t},
       (ARRAY['Main engine','Generator','Watermaker','Bow thruster','Stabiliser','Fire pump','Radar','Tender crane'])[1 + i % 8] || ' ' || i,
       (ARRAY['propulsion','electrical','hotel','deck','safety','navigation'])[1 + i % 6],
       (ARRAY['engine room','bridge','lazarette','foredeck','crew mess'])[1 + i % 5],
       'SN-' || ${t} || '-' || lpad(i::text, 5, '0'),
       ${owner}
FROM generate_series(1, ${rows}) AS i;
INSERT INTO receiving (yacht_id, supplier, reference, status, received_at, owner_id)
SELECT ${t},
       (ARRAY['Marine Parts Ltd','Ocean Provisions','Harbour Fuel','Deck & Rigging Co'])[1 + i % 4],
       'PO-' || lpad(i::text, 6, '0'),
       (ARRAY['pending','received','received','rejected'])[1 + i % 4],
       timestamptz '2026-01-01 00:00:00+00' + (i || ' hours')::interval,
       ${owner}
FROM generate_series(1, ${rows}) AS i;
INSERT INTO work_orders (yacht_id, title, status, priority, equipment_id, due_at, owner_id)
SELECT ${t},
       'Service ' || e.name,
       (ARRAY['open','in_progress','done'])[1 + i % 3],
       (ARRAY['low','medium','high','critical'])[1 + i % 4],
       e.id,
       timestamptz '2026-02-01 00:00:00+00' + (i || ' days')::interval,
       e.owner_id
FROM generate_series(1, ${Math.ceil(rows * 1.5)}) AS i
JOIN equipment e ON e.id = 1 + (i % ${rows});
ANALYZE;
`;
}

/**
 * Create (or replace) a tenant's database and login role, seed it, and grant the role read
 * access only. `adminUrl` must be a superuser URL (e.g. LocalPostgres.adminUrl()).
 */
export async function createTenantDatabase(adminUrl: string, tenant: string, opts: SeedOptions = {}): Promise<TenantDatabase> {
  const database = tenantDatabaseName(tenant);
  const role = `lf_${tenant}_reader`;
  const password = randomBytes(18).toString('base64url');
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    if (opts.replace !== false) {
      await admin.query(`DROP DATABASE IF EXISTS ${ident(database)} WITH (FORCE)`);
    }
    await admin.query(`CREATE DATABASE ${ident(database)}`);
    const exists = await admin.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role]);
    await admin.query(
      `${exists.rowCount ? 'ALTER' : 'CREATE'} ROLE ${ident(role)} LOGIN PASSWORD ${literal(password)} CONNECTION LIMIT ${Math.trunc(opts.connectionLimit ?? 200)}`,
    );
  } finally {
    await admin.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${encodeURIComponent(database)}`;
  const db = new pg.Client({ connectionString: url.toString() });
  await db.connect();
  try {
    await db.query(schemaSql());
    await db.query(seedSql(tenant, opts.rows ?? 40));
    await db.query(`REVOKE ALL ON DATABASE ${ident(database)} FROM PUBLIC`);
    await db.query(`GRANT CONNECT ON DATABASE ${ident(database)} TO ${ident(role)}`);
    await db.query(`GRANT USAGE ON SCHEMA public TO ${ident(role)}`);
    await db.query(`GRANT SELECT ON ALL TABLES IN SCHEMA public TO ${ident(role)}`);
    // The service identity (like Supabase's service_role) sees every row, and may act as a user
    // for one transaction: set_config('role', 'authenticated' | 'anon', true).
    await db.query(`ALTER ROLE ${ident(role)} BYPASSRLS`);
    await db.query(`GRANT anon, authenticated TO ${ident(role)}`);
  } finally {
    await db.end();
  }
  const tenantUrl = new URL(url.toString());
  tenantUrl.username = encodeURIComponent(role);
  tenantUrl.password = encodeURIComponent(password);
  return { tenant, database, role, password, databaseUrl: tenantUrl.toString() };
}

/** Drop a tenant database and its role (terminating its connections). */
export async function dropTenantDatabase(adminUrl: string, tenant: string): Promise<void> {
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${ident(tenantDatabaseName(tenant))} WITH (FORCE)`);
    await admin.query(`DROP ROLE IF EXISTS ${ident(`lf_${tenant}_reader`)}`);
  } finally {
    await admin.end();
  }
}

/**
 * Tenant directory: which tenants this process serves and how to reach each one.
 *
 * Sources, both optional, merged: the environment (`LENSFLEET_TENANTS=a,b` with, per id,
 * `<ID>_DATABASE_URL`, or `<ID>_SUPABASE_URL` + `<ID>_SUPABASE_SERVICE_KEY` — the guide's names),
 * and a JSON tenants file (`LENSFLEET_TENANTS_FILE`) with per-tenant overrides. There is no
 * default tenant: a job for an id that is not listed fails with `TENANT_NOT_FOUND`.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import {
  checkPoolSettings,
  poolSettingsShape,
  TENANT_SETTINGS,
  TENANT_SOURCE_SETTINGS,
  tenantVariable,
  type Env,
  type PoolSettings,
  type WorkerConfig,
} from './config.js';
import { LensfleetError } from './errors.js';
import { TENANT_ID_PATTERN } from './ids.js';
import {
  AUTH_SETTINGS,
  assertDistinctTenantKeys,
  parseTenantAuth,
  readTenantAuthEnv,
  type RawTenantAuth,
  type TenantAuthSettings,
} from './identity/settings.js';
import { OTHER_TENANT } from './metrics-tenants.js';
import { Secret } from './secret.js';
import { clip, readSetting, readSettings, type Setting } from './settings.js';

export { TENANT_ID_PATTERN };

/**
 * Ids that are metrics labels of their own: `other` sums the tenants beyond the labelled ones,
 * `unknown` counts jobs that failed before their tenant was known. A tenant with such an id
 * would be indistinguishable from them on every dashboard.
 */
export const RESERVED_TENANT_IDS: readonly string[] = Object.freeze([OTHER_TENANT, 'unknown']);

interface TenantBase {
  readonly id: string;
  readonly pool: PoolSettings;
  /** false = connect per job for this tenant (the guide's rollback plan). */
  readonly pooling: boolean;
  /** How its users' tokens are verified; undefined = the tenant takes no user tokens (AUTH_NOT_CONFIGURED). */
  readonly auth?: TenantAuthSettings | undefined;
}

/** A tenant reached over the Postgres protocol. */
export interface PgTenant extends TenantBase {
  readonly backend: 'pg';
  readonly databaseUrl: Secret;
}

/** A tenant reached through Supabase's REST API (`RestTenantPool`, docs/SUPABASE.md). */
export interface SupabaseTenant extends TenantBase {
  readonly backend: 'supabase';
  readonly supabaseUrl: string;
  readonly serviceKey: Secret;
}

export type Tenant = PgTenant | SupabaseTenant;

export class TenantDirectory {
  readonly #tenants: ReadonlyMap<string, Tenant>;

  constructor(tenants: Iterable<Tenant>) {
    this.#tenants = new Map([...tenants].map((t) => [t.id, t]));
  }

  /** The tenant with this id, or `TENANT_NOT_FOUND`. */
  get(id: string): Tenant {
    const t = this.#tenants.get(id);
    if (t === undefined) {
      throw new LensfleetError(
        'TENANT_NOT_FOUND',
        `tenant "${id}" is not configured on this worker; add it to LENSFLEET_TENANTS (with ${id}_DATABASE_URL) or to the tenants file`,
        { details: { tenant: id } },
      );
    }
    return t;
  }

  /**
   * The Postgres tenant with this id, for callers that need one (tools, tests);
   * `TENANT_UNSUPPORTED` for a Supabase tenant. The worker serves both (`get`).
   */
  getPg(id: string): PgTenant {
    const t = this.get(id);
    if (t.backend !== 'pg') {
      throw new LensfleetError(
        'TENANT_UNSUPPORTED',
        `tenant "${id}" is configured for Supabase REST (${id}_SUPABASE_URL), not Postgres; set ${id}_DATABASE_URL to reach it over Postgres`,
        { details: { tenant: id } },
      );
    }
    return t;
  }

  has(id: string): boolean {
    return this.#tenants.has(id);
  }

  ids(): string[] {
    return [...this.#tenants.keys()];
  }

  list(): Tenant[] {
    return [...this.#tenants.values()];
  }
}

const tenantFileEntry = z
  .object({
    databaseUrl: z.string().min(1).optional(),
    supabaseUrl: z.string().min(1).optional(),
    supabaseServiceKey: z.string().min(1).optional(),
    pooling: z.boolean().optional(),
    pool: z.object(poolSettingsShape()).partial().strict().optional(),
    // Identity (docs/IDENTITY.md); validated by parseTenantAuth, which names the setting.
    jwtSecret: z.string().optional(),
    jwksUrl: z.string().optional(),
    jwtAudience: z.union([z.string(), z.array(z.string())]).optional(),
    jwtIssuer: z.string().optional(),
    jwtRoles: z.union([z.string(), z.array(z.string())]).optional(),
    jwtDefaultRole: z.string().optional(),
    jwtClockSkewSeconds: z.number().optional(),
  })
  .strict();

const tenantsFileSchema = z
  .object({
    tenants: z.record(z.string(), tenantFileEntry),
  })
  .strict();

export type TenantsFile = z.infer<typeof tenantsFileSchema>;

/** Parse a tenants file's JSON text. Messages name the tenant and the setting. */
export function parseTenantsFile(text: string, source: string): TenantsFile {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    // Only the position: V8's message can quote the start of the text, which may be a secret.
    const at = /position (\d+)/.exec((err as Error).message)?.[1];
    throw new LensfleetError('INVALID_CONFIG', `${source}: not valid JSON${at === undefined ? '' : ` (syntax error at character ${at})`}`);
  }
  const r = tenantsFileSchema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0];
    const path = issue?.path.join('.') ?? '';
    const what = issue?.code === 'unrecognized_keys' ? `unknown key(s) ${issue.keys.join(', ')}` : issue?.message;
    throw new LensfleetError('INVALID_CONFIG', `${source}: ${path ? `${path}: ` : ''}${what}`);
  }
  return r.data;
}

/**
 * Build the directory from the environment and (optionally) the tenants file. Every listed tenant
 * must be reachable; a missing or malformed connection setting is an `INVALID_CONFIG` naming the
 * tenant and the variable, never echoing its value.
 */
export function loadTenantDirectory(config: WorkerConfig, env: Env = process.env): TenantDirectory {
  const sources = readSettings(TENANT_SOURCE_SETTINGS, env);
  const ids = new Set(sources.tenants);
  const filePath = sources.tenantsFile;
  let file: TenantsFile = { tenants: {} };
  if (filePath) {
    let text: string;
    try {
      text = readFileSync(filePath, 'utf8');
    } catch (err) {
      throw new LensfleetError('INVALID_CONFIG', `LENSFLEET_TENANTS_FILE=${filePath}: cannot read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    file = parseTenantsFile(text, `tenants file ${filePath}`);
    for (const id of Object.keys(file.tenants)) ids.add(id);
  }

  const tenants: Tenant[] = [];
  for (const id of ids) {
    if (!TENANT_ID_PATTERN.test(id)) {
      throw new LensfleetError('INVALID_CONFIG', `tenant id "${clip(id, 80)}" is invalid: ids match ${TENANT_ID_PATTERN.source}`);
    }
    if (RESERVED_TENANT_IDS.includes(id)) {
      throw new LensfleetError(
        'INVALID_CONFIG',
        `tenant id "${id}" is reserved: metrics use tenant="${id}" for ${id === OTHER_TENANT ? 'the tenants beyond LENSFLEET_METRICS_MAX_TENANTS' : 'jobs whose tenant is not known'}; rename the tenant`,
      );
    }
    const entry = file.tenants[id] ?? {};
    const where = `tenant "${id}"`;
    const pool = checkPoolSettings({ ...config.pool, ...entry.pool } as PoolSettings, where);
    const pooling = config.pooling && entry.pooling !== false;
    // The tenants file overrides the environment setting by setting.
    const fileAuth = Object.fromEntries(
      (Object.keys(AUTH_SETTINGS) as (keyof RawTenantAuth)[]).filter((k) => entry[k] !== undefined).map((k) => [k, entry[k]]),
    );
    const auth = parseTenantAuth(id, { ...readTenantAuthEnv(id, env), ...fileAuth });
    const fromEnv = <T>(s: Setting<T>, key: keyof typeof TENANT_SETTINGS): T => readSetting({ ...s, env: tenantVariable(id, key) }, env);
    const databaseUrl = entry.databaseUrl === undefined ? fromEnv(TENANT_SETTINGS.databaseUrl, 'databaseUrl') : new Secret(entry.databaseUrl);
    const supabaseUrl = entry.supabaseUrl ?? fromEnv(TENANT_SETTINGS.supabaseUrl, 'supabaseUrl');
    const serviceKey =
      entry.supabaseServiceKey === undefined ? fromEnv(TENANT_SETTINGS.supabaseServiceKey, 'supabaseServiceKey') : new Secret(entry.supabaseServiceKey);
    const dbVar = tenantVariable(id, 'databaseUrl');
    const urlVar = tenantVariable(id, 'supabaseUrl');
    const keyVar = tenantVariable(id, 'supabaseServiceKey');
    if (databaseUrl) {
      checkDatabaseUrl(databaseUrl.reveal(), `${where}: ${dbVar}`);
      tenants.push(Object.freeze({ id, backend: 'pg', databaseUrl, pool, pooling, auth }));
    } else if (supabaseUrl && serviceKey) {
      tenants.push(Object.freeze({ id, backend: 'supabase', supabaseUrl, serviceKey, pool, pooling, auth }));
    } else if (supabaseUrl || serviceKey) {
      throw new LensfleetError('INVALID_CONFIG', `${where}: Supabase needs both ${urlVar} and ${keyVar} (only ${supabaseUrl ? urlVar : keyVar} is set)`);
    } else {
      throw new LensfleetError('INVALID_CONFIG', `${where} is listed but has no connection settings: set ${dbVar} (or ${urlVar} and ${keyVar})`);
    }
  }
  // A key shared by two tenants would let one tenant's users into the other.
  assertDistinctTenantKeys(tenants.map((t) => [t.id, t.auth] as const));
  return new TenantDirectory(tenants);
}

function checkDatabaseUrl(url: string, name: string): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    // Never echo the value: it holds a password.
    throw new LensfleetError('INVALID_CONFIG', `${name} is not a valid URL (expected postgres://user:password@host:port/database)`);
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw new LensfleetError('INVALID_CONFIG', `${name} must start with postgres:// or postgresql://`);
  }
}

/**
 * Configuration is read once, at the edge, from the environment (12-factor) and an optional
 * tenants file; the core receives typed, frozen objects. Contradictions are rejected with a
 * message naming the setting.
 *
 * Every variable is one row of a table below (name, schema, default, help, written once): the
 * loader loops over the tables, the README's configuration section is rendered from them
 * (`npm run docs:settings`), and the tests check both. One table per concern: process, tenants,
 * pools, jobs (retention and retries), HTTP.
 */
import path from 'node:path';
import { z } from 'zod';
import { DEFAULT_ATTEMPTS, DEFAULT_BACKOFF_MS, DEFAULT_KEEP_COMPLETED, DEFAULT_KEEP_FAILED } from '../queues/contract.js';
import { LensfleetError } from './errors.js';
import { defaultConnectionBudget, processLimits, type ProcessLimits } from './process-limits.js';
import { DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_QUEUE_NAME } from './ids.js';
import { type HostPort, REDIS_MODES, type RedisMode, type RedisSettings } from './redis.js';
import { Secret } from './secret.js';
import {
  rawSetting,
  readSettings,
  renderSettingsTable,
  schemas,
  setting,
  variableNames,
  type Env,
  type SettingsTable,
  type SettingValues,
} from './settings.js';
import { UI_SETTINGS } from './ui/settings.js';

export type { Env };

const { int, bool, oneOf, text, list, secret } = schemas;

/** A name of 1–128 characters of A-Z a-z 0-9 _ . - (a fleet, a Sentinel master), or unset. */
const optionalName = (label: string) =>
  text()(label)
    .regex(/^[A-Za-z0-9_.-]{1,128}$/, `${label} must be 1–128 characters of A-Z a-z 0-9 _ . -`)
    .optional();

// ---------------------------------------------------------------------------------------------
// Process

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** Settings of the worker process. */
export const PROCESS_SETTINGS = {
  queueName: setting({
    env: 'LENSFLEET_QUEUE',
    schema: (label) => text()(label).regex(/^[A-Za-z0-9_.-]{1,128}$/, `${label} must be 1–128 characters of A-Z a-z 0-9 _ . - (BullMQ forbids :)`),
    default: DEFAULT_QUEUE_NAME,
    help: 'queue name (the worker and the CLI read it; the producer SDK takes it as the `name` option)',
  }),
  concurrency: setting({
    env: 'LENSFLEET_CONCURRENCY',
    schema: int(1, 10_000),
    default: 8,
    help: 'jobs one worker runs at once; also the per-tenant pool ceiling',
  }),
  processMaxConnections: setting({
    env: 'LENSFLEET_PROCESS_MAX_CONNECTIONS',
    schema: (label) => int(1, 1_000_000)(label).optional(),
    default: undefined,
    defaultDoc:
      'max(2 × concurrency, min((open-file limit − 256) ÷ 2, 5 % of the V8 heap limit ÷ 64 KiB)): e.g. 3,315 with Node’s 4,144 MiB heap limit and ≥ 6,886 descriptors',
    help: 'database connections one process may hold over all tenants; when full, the least recently used idle connection of another tenant is closed first (must be ≥ concurrency). A Supabase tenant’s HTTP sockets are not counted (each REST pool is bounded by its own effective max)',
  }),
  pooling: setting({
    env: 'LENSFLEET_POOLING',
    schema: bool(),
    default: true,
    help: '`off` = the rollback plan: a fresh connection per job, closed after it',
  }),
  warmTenants: setting({
    env: 'LENSFLEET_WARM_TENANTS',
    schema: list(),
    default: [] as string[],
    help: 'tenants whose pools are created at start, in the background (the worker serves at once; a tenant whose warm-up fails is logged and counted, and its first job tries again); `*` = all',
  }),
  lensModules: setting({
    env: 'LENSFLEET_LENS_MODULES',
    schema: list(),
    default: [] as string[],
    help: 'comma-separated modules that export `lenses` (see “Adding a lens”): a path (relative ones resolve against `LENSFLEET_LENS_BASE_DIR`) or a package name',
  }),
  lensBaseDir: setting({
    env: 'LENSFLEET_LENS_BASE_DIR',
    schema: (label) => text()(label).refine((p) => path.isAbsolute(p), `${label} must be an absolute path`),
    default: undefined as string | undefined,
    defaultDoc: 'working directory at start',
    help: 'directory that relative `LENSFLEET_LENS_MODULES` paths resolve against',
  }),
  maxPayloadBytes: setting({
    env: 'LENSFLEET_MAX_PAYLOAD_BYTES',
    schema: int(256, 16 * 1024 * 1024),
    default: DEFAULT_MAX_PAYLOAD_BYTES,
    help: 'largest accepted job data; larger → `PAYLOAD_TOO_LARGE`',
  }),
  shutdownTimeoutMs: setting({
    env: 'LENSFLEET_SHUTDOWN_TIMEOUT_MS',
    schema: int(0, 3_600_000),
    default: 30_000,
    help: 'how long SIGTERM waits for active jobs; then their connections are ended and they are retried',
  }),
  metricsMaxTenants: setting({
    env: 'LENSFLEET_METRICS_MAX_TENANTS',
    schema: int(1, 100_000),
    default: 100,
    help: 'tenants exported under their own metrics label (the busiest); the rest are summed under `tenant="other"`',
  }),
  logLevel: setting({
    env: 'LOG_LEVEL',
    schema: oneOf(LOG_LEVELS),
    default: 'info' as (typeof LOG_LEVELS)[number],
    help: '`fatal error warn info debug trace silent` (pino JSON on stdout; one line per job at `debug`, failures at `warn`/`error` with their code, pool lifecycle at `info`; for humans: `… \\| npx pino-pretty`)',
  }),
} as const satisfies SettingsTable;

// ---------------------------------------------------------------------------------------------
// Redis: where the queue and the fleet live (src/redis.ts makes the connections)

/** `host:port` or `[ipv6]:port`. */
const HOST_PORT = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9_.-]+)):(\d{1,5})$/;

/** A comma-separated list of `host:port` (at least one). */
const hostPortList = (label: string) =>
  z.string().transform((value, ctx): HostPort[] => {
    const out: HostPort[] = [];
    for (const entry of schemas.list()(label).parse(value)) {
      const m = HOST_PORT.exec(entry);
      const port = Number(m?.[3]);
      if (!m || port < 1 || port > 65_535) {
        ctx.addIssue({
          code: 'custom',
          message: `${label}: ${JSON.stringify(entry.slice(0, 100))} is not host:port (an IPv6 address in brackets: [::1]:6379)`,
        });
        return z.NEVER;
      }
      out.push({ host: m[1] ?? m[2] ?? '', port });
    }
    if (out.length === 0) ctx.addIssue({ code: 'custom', message: `${label} lists no host:port` });
    return out;
  });

export const REDIS_SETTINGS = {
  mode: setting({
    env: 'LENSFLEET_REDIS_MODE',
    schema: oneOf(REDIS_MODES),
    default: 'standalone' as RedisMode,
    help: '`standalone`: one server at `REDIS_URL`; `cluster`: a Redis Cluster through the seed nodes in `LENSFLEET_REDIS_NODES` (queue keys get the hash-tagged prefix `{<queue>}`, see “Redis Cluster and Sentinel”); `sentinel`: the master `LENSFLEET_REDIS_SENTINEL_MASTER` found through the sentinels in `LENSFLEET_REDIS_NODES`, followed across failovers',
  }),
  url: setting({
    env: 'REDIS_URL',
    schema: (label) =>
      z
        .string()
        .trim()
        .pipe(z.url({ protocol: /^rediss?$/, error: `${label} must be a redis:// or rediss:// URL` })),
    default: 'redis://127.0.0.1:6379',
    help: 'Redis of the fleet in `standalone` mode (`redis://:password@host:6379/0`; URL-encode special characters of the password); not with the other modes',
    secret: true,
  }),
  nodes: setting({
    env: 'LENSFLEET_REDIS_NODES',
    schema: (label) => hostPortList(label).optional(),
    default: undefined as HostPort[] | undefined,
    help: 'comma-separated `host:port` list: in `cluster` mode some of the Cluster’s nodes (the rest are discovered), in `sentinel` mode the sentinels',
  }),
  sentinelMaster: setting({
    env: 'LENSFLEET_REDIS_SENTINEL_MASTER',
    schema: optionalName,
    default: undefined as string | undefined,
    help: 'in `sentinel` mode, the master’s name as the sentinels know it (`sentinel monitor <name> …`)',
  }),
  username: setting({
    env: 'LENSFLEET_REDIS_USERNAME',
    schema: (label) => text()(label).min(1, `${label} is empty`).optional(),
    default: undefined as string | undefined,
    help: 'ACL user of the Cluster’s nodes or of the Sentinel-managed servers (`cluster`/`sentinel`; in `standalone` mode it goes in `REDIS_URL`)',
  }),
  password: setting({
    env: 'LENSFLEET_REDIS_PASSWORD',
    schema: schemas.secret(),
    default: undefined as Secret | undefined,
    help: 'password of the Cluster’s nodes or of the Sentinel-managed servers (`cluster`/`sentinel`; in `standalone` mode it goes in `REDIS_URL`)',
    secret: true,
  }),
  sentinelPassword: setting({
    env: 'LENSFLEET_REDIS_SENTINEL_PASSWORD',
    schema: schemas.secret(),
    default: undefined as Secret | undefined,
    help: 'in `sentinel` mode, the sentinels’ own password (`requirepass` in sentinel.conf), when they have one',
    secret: true,
  }),
} as const satisfies SettingsTable;

/**
 * Where Redis is. Throws `INVALID_CONFIG` naming the settings when they contradict the mode: a
 * setting the mode does not read would otherwise be ignored without a word (a worker meant for a
 * Cluster would quietly use `REDIS_URL`'s default).
 */
export function loadRedisSettings(env: Env): RedisSettings {
  const s = readSettings(REDIS_SETTINGS, env);
  const isSet = (key: keyof typeof REDIS_SETTINGS) => {
    const row = REDIS_SETTINGS[key];
    return rawSetting(env, [...(row.aliases ?? []), row.env], row.secret) !== undefined;
  };
  const mode = `LENSFLEET_REDIS_MODE=${s.mode}`;
  const refuse = (keys: (keyof typeof REDIS_SETTINGS)[], why: string) => {
    const set = keys.filter(isSet).map((k) => REDIS_SETTINGS[k].env);
    if (set.length > 0) throw new LensfleetError('INVALID_CONFIG', `${set.join(', ')} ${set.length === 1 ? 'is' : 'are'} set, but ${mode} ${why}`);
  };
  const need = (key: keyof typeof REDIS_SETTINGS, what: string) => {
    if (!isSet(key)) throw new LensfleetError('INVALID_CONFIG', `${mode} needs ${REDIS_SETTINGS[key].env}: ${what}`);
  };
  switch (s.mode) {
    case 'standalone':
      refuse(
        ['nodes', 'sentinelMaster', 'username', 'password', 'sentinelPassword'],
        'reads only REDIS_URL (user and password go in the URL): set LENSFLEET_REDIS_MODE=cluster or sentinel, or unset them',
      );
      return Object.freeze({ mode: 'standalone', url: new Secret(s.url) });
    case 'cluster':
      refuse(['url'], 'reaches the Cluster through LENSFLEET_REDIS_NODES (user and password in LENSFLEET_REDIS_USERNAME/_PASSWORD): unset REDIS_URL');
      refuse(['sentinelMaster', 'sentinelPassword'], 'has no sentinels: unset them, or set LENSFLEET_REDIS_MODE=sentinel');
      need('nodes', 'some of the Cluster’s nodes, host:port,host:port');
      return Object.freeze({ mode: 'cluster', nodes: Object.freeze(s.nodes ?? []), username: s.username, password: s.password });
    case 'sentinel':
      refuse(
        ['url'],
        'finds the master through the sentinels in LENSFLEET_REDIS_NODES (user and password in LENSFLEET_REDIS_USERNAME/_PASSWORD): unset REDIS_URL',
      );
      need('nodes', 'the sentinels, host:port,host:port');
      need('sentinelMaster', 'the master’s name as the sentinels know it');
      return Object.freeze({
        mode: 'sentinel',
        sentinels: Object.freeze(s.nodes ?? []),
        masterName: s.sentinelMaster ?? '',
        username: s.username,
        password: s.password,
        sentinelPassword: s.sentinelPassword,
      });
  }
}

// ---------------------------------------------------------------------------------------------
// Tenants (read by src/tenants.ts)

/** Where the tenant list comes from. */
export const TENANT_SOURCE_SETTINGS = {
  tenants: setting({
    env: 'LENSFLEET_TENANTS',
    schema: list(),
    default: [] as string[],
    help: 'comma-separated tenant ids (`^[A-Za-z0-9_]{1,64}$`, case-sensitive; `other` and `unknown` are reserved for metrics)',
  }),
  tenantsFile: setting({
    env: 'LENSFLEET_TENANTS_FILE',
    schema: text(),
    default: undefined as string | undefined,
    help: 'JSON tenants file with per-tenant overrides (below)',
  }),
} as const satisfies SettingsTable;

/**
 * Per-tenant variables: the tenant id as written, then the suffix (`yTEST_YACHT_001_DATABASE_URL`).
 * Values are checked by the tenant directory (which knows which combination is valid).
 */
export const TENANT_SETTINGS = {
  databaseUrl: setting({
    env: '<ID>_DATABASE_URL',
    schema: secret(),
    default: undefined,
    help: '`postgres://user:password@host:port/db` of tenant `<ID>` (the id as written)',
    secret: true,
  }),
  supabaseUrl: setting({
    env: '<ID>_SUPABASE_URL',
    schema: (label) => text()(label).optional(),
    default: undefined,
    help: 'Supabase project URL of tenant `<ID>` (`https://<ref>.supabase.co`), instead of `<ID>_DATABASE_URL`: the tenant is reached over its REST API and lenses run their REST form; user tokens are verified with `<ID>_JWT_SECRET` (the project’s JWT secret) or `<ID>_JWKS_URL` (see `docs/SUPABASE.md`)',
  }),
  supabaseServiceKey: setting({
    env: '<ID>_SUPABASE_SERVICE_KEY',
    schema: secret(),
    default: undefined,
    help: 'Supabase `service_role` key of tenant `<ID>` (with `<ID>_SUPABASE_URL`): the identity of its service jobs and the `apikey` of every request',
    secret: true,
  }),
} as const satisfies SettingsTable;

/** The variable of a per-tenant setting for one tenant id. */
export function tenantVariable(id: string, key: keyof typeof TENANT_SETTINGS): string {
  return TENANT_SETTINGS[key].env.replace('<ID>', id);
}

// ---------------------------------------------------------------------------------------------
// Pools

/** Pool settings of one tenant: the guide's settings plus what the registry adds. */
export interface PoolSettings {
  /** Connections opened when the pool is created and kept warm. @defaultValue 5 */
  readonly minSize: number;
  /** Connections kept for reuse. @defaultValue 20 */
  readonly maxSize: number;
  /** Extra connections beyond maxSize, closed when released and no longer needed (see overflowLingerMs). @defaultValue 5 */
  readonly maxOverflow: number;
  /**
   * Overflow connections close once demand (connections in use plus acquires waiting) has not
   * exceeded maxSize for this long. 0 closes one on release as soon as maxSize others are idle
   * (SQLAlchemy's QueuePool rule), which churns connections when demand hovers around maxSize.
   * @defaultValue 1000
   */
  readonly overflowLingerMs: number;
  /** How long a job may wait for a free connection before `POOL_TIMEOUT`. @defaultValue 10000 */
  readonly acquireTimeoutMs: number;
  /** How long opening one connection may take before `CONNECT_TIMEOUT`. @defaultValue 10000 */
  readonly connectTimeoutMs: number;
  /** Maximum connection lifetime, jittered by up to −5 %. 0 disables. @defaultValue 3600 */
  readonly recycleSeconds: number;
  /** Validate a connection that sat idle before handing it out. @defaultValue true */
  readonly prePing: boolean;
  /** Idle time after which a connection is pinged before hand-out. @defaultValue 1000 */
  readonly prePingIdleMs: number;
  /** Idle connections above minSize close after this long. @defaultValue 30000 */
  readonly idleTimeoutMs: number;
  /** Acquires allowed to wait at once; beyond it `POOL_BUSY` at once. @defaultValue 1000 */
  readonly maxWaiting: number;
  /** Default statement timeout of a lens query (a lens may set its own). @defaultValue 5000 */
  readonly statementTimeoutMs: number;
  /** A connection held longer than this logs a leak warning; 0 disables. @defaultValue 60000 */
  readonly leakDetectionMs: number;
  /** A tenant pool unused for this long is closed and removed; 0 disables. @defaultValue 600000 */
  readonly poolIdleTimeoutMs: number;
  /**
   * `RESET ALL` before a connection is reused. Redundant with `hygiene` (every job ends in a
   * rollback that reverts settings); kept for connections used outside lens runs. @defaultValue false
   */
  readonly resetOnReturn: boolean;
  /**
   * Connections come back clean by construction: every lens runs in a read-only transaction that
   * is rolled back, with session advisory locks released and SQL-level prepared statements
   * detected in the same round trip (src/lens-run.ts). Off = the lens alone (user jobs always run
   * in a rolled-back transaction). @defaultValue true
   */
  readonly hygiene: boolean;
  /** Bytes of row data one result may have; over it → RESULT_TOO_LARGE. @defaultValue 16777216 */
  readonly maxResultBytes: number;
  /**
   * The tenant's URL points at a pooler in transaction mode (PgBouncer `pool_mode = transaction`,
   * Supavisor's transaction port): consecutive transactions of one connection may run on different
   * server connections. Statements are then unnamed (parsed in every batch), nothing is set at
   * connection start (read-only and the statement timeout are set in every transaction), and what a
   * lens leaves in the session is reset on the server in the same batch. Detected when the server
   * forgets a named statement (the pool switches and warns). @defaultValue false
   */
  readonly transactionPooler: boolean;
  /**
   * Connections the whole fleet may hold to the tenant's database at once: each connection takes
   * a lease in Redis before it opens (src/fleet/leases.ts). 0 = no fleet cap. @defaultValue 0
   */
  readonly fleetMaxConnections: number;
}

/**
 * Pool defaults of every tenant (a tenants-file entry's `pool` overrides them, key by key; the
 * same schemas check both).
 */
export const POOL_SETTINGS = {
  minSize: setting({
    env: 'LENSFLEET_POOL_MIN_SIZE',
    schema: int(0, 10_000),
    default: 5,
    help: 'connections opened when a tenant pool is created (clamped to the ceiling)',
  }),
  maxSize: setting({ env: 'LENSFLEET_POOL_MAX_SIZE', schema: int(1, 10_000), default: 20, help: 'connections kept for reuse' }),
  maxOverflow: setting({
    env: 'LENSFLEET_POOL_MAX_OVERFLOW',
    schema: int(0, 10_000),
    default: 5,
    help: 'extra connections beyond max size, closed when no longer needed',
  }),
  overflowLingerMs: setting({
    env: 'LENSFLEET_POOL_OVERFLOW_LINGER_MS',
    schema: int(0, 3_600_000),
    default: 1000,
    help: 'overflow connections close once demand stayed ≤ max size this long (`0`: on release, SQLAlchemy’s rule)',
  }),
  acquireTimeoutMs: setting({
    env: 'LENSFLEET_POOL_ACQUIRE_TIMEOUT_MS',
    schema: int(1, 3_600_000),
    default: 10_000,
    help: 'wait for a free connection, then `POOL_TIMEOUT` (retried); a lens’s own timeout shortens it (the lens timeout bounds wait + statement)',
  }),
  connectTimeoutMs: setting({
    env: 'LENSFLEET_POOL_CONNECT_TIMEOUT_MS',
    schema: int(1, 3_600_000),
    default: 10_000,
    help: 'opening one connection, then `CONNECT_TIMEOUT` (retried)',
  }),
  recycleSeconds: setting({
    env: 'LENSFLEET_POOL_RECYCLE_SECONDS',
    schema: int(0, 31_536_000),
    default: 3600,
    help: 'maximum connection lifetime, jittered by up to −5 %; `0` = unlimited',
  }),
  prePing: setting({ env: 'LENSFLEET_POOL_PRE_PING', schema: bool(), default: true, help: 'validate a connection that sat idle before handing it out' }),
  prePingIdleMs: setting({
    env: 'LENSFLEET_POOL_PRE_PING_IDLE_MS',
    schema: int(0, 3_600_000),
    default: 1000,
    help: 'idle time after which a connection is pinged',
  }),
  idleTimeoutMs: setting({
    env: 'LENSFLEET_POOL_IDLE_TIMEOUT_MS',
    schema: int(0, 86_400_000),
    default: 30_000,
    help: 'idle connections above min size close after this',
  }),
  maxWaiting: setting({
    env: 'LENSFLEET_POOL_MAX_WAITING',
    schema: int(0, 1_000_000),
    default: 1000,
    help: 'acquires allowed to wait per tenant; beyond it `POOL_BUSY` at once',
  }),
  statementTimeoutMs: setting({
    env: 'LENSFLEET_STATEMENT_TIMEOUT_MS',
    schema: int(1, 3_600_000),
    default: 5000,
    help: 'default timeout of a lens: it bounds the wait for a connection and the statement together (a wait over 5 % of it shortens the statement’s timeout to what is left)',
  }),
  leakDetectionMs: setting({
    env: 'LENSFLEET_POOL_LEAK_DETECTION_MS',
    schema: int(0, 86_400_000),
    default: 60_000,
    help: 'a connection held longer logs a warning (job id, tenant, lens) and counts a leak; `0` = off',
  }),
  poolIdleTimeoutMs: setting({
    env: 'LENSFLEET_POOL_IDLE_POOL_TIMEOUT_MS',
    schema: int(0, 604_800_000),
    default: 600_000,
    help: 'a tenant pool unused this long is closed and removed (not warm tenants); `0` = never',
  }),
  resetOnReturn: setting({
    env: 'LENSFLEET_POOL_RESET_ON_RETURN',
    schema: bool(),
    default: false,
    help: '`RESET ALL` before a connection is reused; redundant with `LENSFLEET_POOL_HYGIENE` (costs a statement per job)',
  }),
  hygiene: setting({
    env: 'LENSFLEET_POOL_HYGIENE',
    schema: bool(),
    default: true,
    help: 'every lens runs in a read-only transaction that is rolled back, session advisory locks are released and SQL-level prepared statements detected (the connection is then destroyed), in the same round trip: connections come back clean whatever the lens did; `off` = the lens alone (user jobs always run in a rolled-back transaction)',
  }),
  maxResultBytes: setting({
    env: 'LENSFLEET_MAX_RESULT_BYTES',
    schema: int(1024, 1_073_741_824),
    default: 16 * 1024 * 1024,
    help: 'bytes of row data one result may have; more → `RESULT_TOO_LARGE` (never a silent truncation; rows stop being kept at the cap)',
  }),
  transactionPooler: setting({
    env: 'LENSFLEET_POOL_TRANSACTION_POOLER',
    schema: bool(),
    default: false,
    help: 'the tenant’s URL points at PgBouncer (`pool_mode = transaction`) or another transaction-mode pooler: unnamed statements parsed in every batch, read-only and the statement timeout set in every transaction instead of at connection start, session state the lens left reset on the server in the same batch; detected (with a warning) when the server forgets a named statement; usually per tenant in the tenants file',
  }),
  fleetMaxConnections: setting({
    env: 'LENSFLEET_FLEET_MAX_CONNECTIONS',
    schema: int(0, 1_000_000),
    default: 0,
    defaultDoc: '`0` (no cap)',
    help: 'connections the whole fleet (every worker on this Redis with this `LENSFLEET_FLEET`) may hold to a tenant’s database at once: each connection takes a lease in Redis before it opens, and an open that gets none within the connect timeout fails with `FLEET_CAP_TIMEOUT` (retried); set it on every worker alike, usually per tenant in the tenants file (see “Scaling”); `0` = no fleet cap',
  }),
} as const satisfies Record<keyof PoolSettings, unknown> & SettingsTable;

export const DEFAULT_POOL_SETTINGS: PoolSettings = Object.freeze(
  Object.fromEntries(Object.entries(POOL_SETTINGS).map(([k, s]) => [k, s.default])) as unknown as PoolSettings,
);

/** Environment variable of each pool setting (defaults for every tenant). */
export const POOL_ENV: Readonly<Record<keyof PoolSettings, string>> = Object.freeze(
  Object.fromEntries(Object.entries(POOL_SETTINGS).map(([k, s]) => [k, s.env])) as Record<keyof PoolSettings, string>,
);

/** Zod shape of pool settings in the tenants file (messages name `<prefix><key>`). */
export function poolSettingsShape(prefix = ''): { [K in keyof PoolSettings]: z.ZodType<PoolSettings[K]> } {
  return Object.fromEntries(Object.entries(POOL_SETTINGS).map(([k, s]) => [k, s.schema(prefix + k)])) as {
    [K in keyof PoolSettings]: z.ZodType<PoolSettings[K]>;
  };
}

/** Reject contradictions between pool settings; `where` names the tenant or the environment. */
export function checkPoolSettings(s: PoolSettings, where: string): PoolSettings {
  if (s.minSize > s.maxSize + s.maxOverflow) {
    throw new LensfleetError(
      'INVALID_CONFIG',
      `${where}: minSize (${s.minSize}) is larger than maxSize + maxOverflow (${s.maxSize} + ${s.maxOverflow}); lower minSize or raise maxSize`,
    );
  }
  if (s.fleetMaxConnections > 0 && s.minSize > s.fleetMaxConnections) {
    // One worker could never keep minSize warm: it would keep asking the fleet for leases.
    throw new LensfleetError(
      'INVALID_CONFIG',
      `${where}: minSize (${s.minSize}) is larger than fleetMaxConnections (${s.fleetMaxConnections}), the connections the whole fleet may hold; lower minSize (0–1 suits a capped tenant)`,
    );
  }
  return Object.freeze({ ...s });
}

// ---------------------------------------------------------------------------------------------
// Jobs: retention and retries, applied by the worker to every job whatever its producer sent.

/** Retry of a job whose lens query hit its statement timeout (`QUERY_TIMEOUT`). */
export type QueryTimeoutRetry = 'off' | 'once' | 'on';

export const JOB_SETTINGS = {
  maxAttempts: setting({
    env: 'LENSFLEET_MAX_ATTEMPTS',
    schema: int(1, 100),
    default: DEFAULT_ATTEMPTS,
    help: 'ceiling on a job’s attempts, whatever its `opts.attempts` says: a job still failing at this attempt fails for good',
  }),
  keepCompletedSeconds: setting({
    env: 'LENSFLEET_KEEP_COMPLETED_SECONDS',
    schema: int(0, 31_536_000),
    default: DEFAULT_KEEP_COMPLETED.age,
    help: 'completed jobs are kept at most this long (a producer may ask for less, never more)',
  }),
  keepCompletedCount: setting({
    env: 'LENSFLEET_KEEP_COMPLETED_COUNT',
    schema: int(0, 10_000_000),
    default: DEFAULT_KEEP_COMPLETED.count,
    help: 'at most this many completed jobs are kept',
  }),
  keepFailedSeconds: setting({
    env: 'LENSFLEET_KEEP_FAILED_SECONDS',
    schema: int(0, 31_536_000),
    default: DEFAULT_KEEP_FAILED.age,
    help: 'failed jobs are kept at most this long (7 days)',
  }),
  keepFailedCount: setting({
    env: 'LENSFLEET_KEEP_FAILED_COUNT',
    schema: int(0, 10_000_000),
    default: DEFAULT_KEEP_FAILED.count,
    help: 'at most this many failed jobs are kept',
  }),
  backoffMs: setting({
    env: 'LENSFLEET_RETRY_BACKOFF_MS',
    schema: int(0, 3_600_000),
    default: DEFAULT_BACKOFF_MS,
    help: 'first retry delay of a job that brings no `backoff` of its own, doubling at each attempt (a job’s own backoff is used as it is)',
  }),
  queryTimeoutRetry: setting({
    env: 'LENSFLEET_RETRY_QUERY_TIMEOUT',
    schema: oneOf(['off', 'once', 'on']),
    default: 'once' as QueryTimeoutRetry,
    help: 'retry of a `QUERY_TIMEOUT` (the query ran for its whole statement timeout): `off` never; `once` only when the first attempt timed out; `on` like any transient fault. A retried timeout waits `LENSFLEET_RETRY_QUERY_TIMEOUT_DELAY_MS`, doubling per attempt',
  }),
  queryTimeoutDelayMs: setting({
    env: 'LENSFLEET_RETRY_QUERY_TIMEOUT_DELAY_MS',
    schema: int(0, 3_600_000),
    default: 10_000,
    help: 'first delay before a timed-out query runs again (the larger of this and the job’s own backoff); it doubles at each attempt so a slow query does not hammer the database',
  }),
  lockMs: setting({
    env: 'LENSFLEET_JOB_LOCK_MS',
    schema: int(1000, 600_000),
    default: 15_000,
    help: 'a running job’s lock in Redis (BullMQ `lockDuration`, renewed every half of it): when a worker dies (`kill -9`, a lost machine) its jobs run again elsewhere once their lock has expired and a stalled check found them (BullMQ marks at one check, moves at the next), so a crash delays them by up to this + 2 × `LENSFLEET_STALLED_CHECK_MS`. Shorter = faster recovery; too short and a worker whose event loop stalls longer than half of it loses its jobs’ locks, and they run twice (lenses are read-only: the cost is load). BullMQ’s default is 30000',
  }),
  stalledCheckMs: setting({
    env: 'LENSFLEET_STALLED_CHECK_MS',
    schema: int(500, 600_000),
    default: 5000,
    help: 'how often a worker looks for jobs whose lock expired (BullMQ `stalledInterval`) and puts them back to run; with `LENSFLEET_JOB_LOCK_MS`, the bound on a crashed worker’s jobs’ delay (lock + 2 × this: 25 s by default, 90 s with BullMQ’s defaults). BullMQ’s default is 30000',
  }),
} as const satisfies SettingsTable;

export type JobSettings = SettingValues<typeof JOB_SETTINGS>;

// ---------------------------------------------------------------------------------------------
// Admission: whether a job runs now or is put back in the queue (deferral, circuit breaker)

export const ADMISSION_SETTINGS = {
  deferWhenBusy: setting({
    env: 'LENSFLEET_DEFER_WHEN_BUSY',
    schema: bool(),
    default: true,
    help: 'a job whose tenant’s pool cannot serve it now (no idle connection, none opening for it, none may open — for a capped tenant, none while its opens wait for a fleet lease), with half the pool’s max already waiting for a release, is put back in the queue, delayed, without using up an attempt, instead of waiting in a worker slot: one tenant’s flood cannot take every slot. Its delay spaces the tenant’s deferred jobs by its recent job time ÷ its pool size (±20 %). `off` = every job waits for its connection in its slot',
  }),
  deferMaxPerJob: setting({
    env: 'LENSFLEET_DEFER_MAX_PER_JOB',
    schema: int(0, 10_000),
    default: 20,
    help: 'deferrals of one job (per attempt, counted by BullMQ’s own `attemptsStarted`, so they survive the job moving between workers) after which it waits for its connection in its slot: the busy tenant always progresses. `0` = no deferral',
  }),
  deferMaxDelayMs: setting({
    env: 'LENSFLEET_DEFER_MAX_DELAY_MS',
    schema: int(10, 600_000),
    default: 5000,
    help: 'longest delay of one deferral',
  }),
  deferPark: setting({
    env: 'LENSFLEET_DEFER_PARK',
    schema: bool(),
    default: true,
    help: 'when a job is deferred because its tenant’s pool is busy, also move that tenant’s other queued jobs out of the queue’s way, in Lua passes of 1,000 queued jobs: to the delayed set, at the tenant’s pace, each brought back to the head of the queue as soon as one of the tenant’s jobs ends on any worker (so the tenant keeps its pools busy, fleet-wide). A flood added at once then no longer sits in front of other tenants’ jobs. A job is parked at most `LENSFLEET_DEFER_MAX_PER_JOB` times. `off` = deferred one by one as they come up (needs `LENSFLEET_DEFER_WHEN_BUSY`)',
  }),
  breakerFailures: setting({
    env: 'LENSFLEET_BREAKER_FAILURES',
    schema: int(0, 10_000),
    default: 5,
    help: 'consecutive jobs of one tenant failing to connect (`CONNECTION_FAILED`: refused, reset, authentication of the connection; `CONNECT_TIMEOUT`) that open its circuit breaker in this worker: its jobs are then put back in the queue, delayed until the next probe, without running or using up an attempt; other tenants are not affected. `0` = no breaker',
  }),
  breakerCoolDownMs: setting({
    env: 'LENSFLEET_BREAKER_COOLDOWN_MS',
    schema: int(100, 3_600_000),
    default: 5000,
    help: 'how long an open breaker waits before one job probes the database (half-open): success closes it; a failed probe opens it again for twice as long',
  }),
  breakerMaxCoolDownMs: setting({
    env: 'LENSFLEET_BREAKER_MAX_COOLDOWN_MS',
    schema: int(100, 3_600_000),
    default: 60_000,
    help: 'longest cool-down of a breaker whose probes keep failing (≥ `LENSFLEET_BREAKER_COOLDOWN_MS`)',
  }),
} as const satisfies SettingsTable;

export type AdmissionSettings = SettingValues<typeof ADMISSION_SETTINGS>;

// ---------------------------------------------------------------------------------------------
// HTTP: /metrics /health /ready /pools

export const HTTP_SETTINGS = {
  port: setting({
    env: 'LENSFLEET_METRICS_PORT',
    aliases: ['PORT'],
    schema: int(0, 65_535),
    default: 9464,
    help: 'HTTP port (`PORT` wins, the Procfile convention)',
  }),
  host: setting({
    env: 'LENSFLEET_METRICS_HOST',
    schema: (label) => text()(label).min(1, `${label} is empty`),
    default: '0.0.0.0',
    help: 'HTTP bind address (see “HTTP endpoints” for why all interfaces)',
  }),
  token: setting({
    env: 'LENSFLEET_HTTP_TOKEN',
    schema: (label) => secret()(label).refine((s) => s === undefined || s.reveal().length >= 16, `${label} must be at least 16 characters`),
    default: undefined as Secret | undefined,
    help: 'bearer token for tenant detail (`/pools`, pool keys in `/health`); without it, tenant detail is served to loopback clients only',
    secret: true,
  }),
  maxConnections: setting({
    env: 'LENSFLEET_HTTP_MAX_CONNECTIONS',
    schema: int(1, 10_000),
    default: 64,
    help: 'open HTTP connections at once; more are refused',
  }),
  headersTimeoutMs: setting({
    env: 'LENSFLEET_HTTP_HEADERS_TIMEOUT_MS',
    schema: int(100, 600_000),
    default: 5000,
    help: 'a request’s headers must arrive within this (then 408 and the connection closes)',
  }),
  requestTimeoutMs: setting({
    env: 'LENSFLEET_HTTP_REQUEST_TIMEOUT_MS',
    schema: int(100, 600_000),
    default: 10_000,
    help: 'a whole request must arrive within this (≥ the headers timeout)',
  }),
  queueCountsCacheMs: setting({
    env: 'LENSFLEET_METRICS_QUEUE_CACHE_MS',
    schema: int(0, 600_000),
    default: 10_000,
    help: 'queue depth in `/metrics` is read from Redis at most once per this interval (`0`: at every scrape)',
  }),
} as const satisfies SettingsTable;

export type HttpSettings = SettingValues<typeof HTTP_SETTINGS>;

// ---------------------------------------------------------------------------------------------
// Fleet: membership and connection leases in Redis (src/fleet/)

export const FLEET_SETTINGS = {
  name: setting({
    env: 'LENSFLEET_FLEET',
    schema: optionalName,
    default: undefined as string | undefined,
    defaultDoc: 'the queue name',
    help: 'the fleet this worker belongs to: workers on one Redis with one fleet name share membership (`lensfleet status`) and the fleet connection caps (`LENSFLEET_FLEET_MAX_CONNECTIONS`)',
  }),
  ttlMs: setting({
    env: 'LENSFLEET_FLEET_TTL_MS',
    schema: int(1000, 600_000),
    default: 10_000,
    help: 'a worker’s membership record and its connection leases expire this long after its last heartbeat (sent every third of it): a killed worker leaves the fleet and gives its leases back within this',
  }),
} as const satisfies SettingsTable;

/** Fleet membership and connection leases. */
export interface FleetSettings {
  /** @defaultValue the queue name */
  readonly name: string;
  /** @defaultValue 10000 */
  readonly ttlMs: number;
}

/** Every table, in the order the README shows them. */
export const SETTINGS_TABLES = [
  { title: 'Process', table: PROCESS_SETTINGS },
  { title: 'Redis (the queue and the fleet; see “Redis Cluster and Sentinel”)', table: REDIS_SETTINGS },
  { title: 'Tenants', table: { ...TENANT_SOURCE_SETTINGS, ...TENANT_SETTINGS } },
  { title: 'Pools (defaults of every tenant; a tenants-file entry overrides them)', table: POOL_SETTINGS },
  { title: 'Jobs: retention and retries (whatever the producer sent)', table: JOB_SETTINGS },
  { title: 'Admission: deferral and circuit breaker', table: ADMISSION_SETTINGS },
  { title: 'HTTP', table: HTTP_SETTINGS },
  { title: 'Fleet (membership and connection leases in Redis)', table: FLEET_SETTINGS },
  { title: 'Queue UI (the `ui:` process; see “Queue UI”)', table: UI_SETTINGS },
] as const;

/** The README's configuration tables (between its `settings` markers). */
export function renderSettingsDoc(): string {
  return SETTINGS_TABLES.map(({ title, table }) => `#### ${title}\n\n${renderSettingsTable(table)}`).join('\n\n');
}

/** Variables lensfleet reads (the worker, the CLI, the queue UI), except per-tenant ones: a shared environment warns about none of them. */
export function knownVariables(): Set<string> {
  return new Set(
    [
      PROCESS_SETTINGS,
      REDIS_SETTINGS,
      TENANT_SOURCE_SETTINGS,
      POOL_SETTINGS,
      JOB_SETTINGS,
      ADMISSION_SETTINGS,
      HTTP_SETTINGS,
      FLEET_SETTINGS,
      UI_SETTINGS,
    ].flatMap(variableNames),
  );
}

/** `LENSFLEET_*` variables set in `env` that no table knows (a misspelled name would otherwise be ignored silently). */
export function unknownLensfleetVariables(env: Env): string[] {
  const known = knownVariables();
  return Object.keys(env)
    .filter((k) => k.startsWith('LENSFLEET_') && !known.has(k) && !k.startsWith('LENSFLEET_DEMO_') && !k.startsWith('LENSFLEET_BENCH_'))
    .sort();
}

// ---------------------------------------------------------------------------------------------
// The worker's configuration

/** Process-wide settings of a worker. */
export interface WorkerConfig {
  /** Where Redis is: one server, a Cluster, or a master behind Sentinel. @defaultValue standalone, redis://127.0.0.1:6379 */
  readonly redis: RedisSettings;
  /** @defaultValue lens-queries */
  readonly queueName: string;
  /** Jobs run at once by this process. @defaultValue 8 */
  readonly concurrency: number;
  /** false = the guide's rollback plan: a fresh connection per job. @defaultValue true */
  readonly pooling: boolean;
  /** @defaultValue info */
  readonly logLevel: (typeof LOG_LEVELS)[number];
  /** Largest accepted job data, serialised. @defaultValue 65536 */
  readonly maxPayloadBytes: number;
  /** Tenants whose pools are created at start ("*" = all). @defaultValue none */
  readonly warmTenants: readonly string[];
  /** Extra lens modules to load: absolute paths (resolved against lensBaseDir) or package names. @defaultValue none */
  readonly lensModules: readonly string[];
  /** Directory relative lens module paths were resolved against. @defaultValue the working directory at start */
  readonly lensBaseDir: string;
  /** How long SIGTERM waits for active jobs before closing anyway. @defaultValue 30000 */
  readonly shutdownTimeoutMs: number;
  /**
   * Connections this process may hold over all tenants; when full, the least recently used idle
   * connection of another tenant is closed first. Must be ≥ concurrency. @defaultValue 2 × concurrency
   */
  readonly processMaxConnections: number;
  /** Tenants exported under their own metrics label (the busiest); the rest are tenant="other". @defaultValue 100 */
  readonly metricsMaxTenants: number;
  /** Pool settings applied to every tenant unless its tenants-file entry overrides them. */
  readonly pool: PoolSettings;
  /** Retention, attempts ceiling and retry policy applied to every job. */
  readonly jobs: JobSettings;
  /** Deferral of jobs that cannot start now, and per-tenant circuit breakers. */
  readonly admission: AdmissionSettings;
  /** The HTTP endpoints. */
  readonly http: HttpSettings;
  /** Fleet membership and connection leases. */
  readonly fleet: FleetSettings;
}

/**
 * Parse the worker's settings from the environment. Throws `INVALID_CONFIG` naming the variable.
 * `cwd` is the base of relative lens module paths when `LENSFLEET_LENS_BASE_DIR` is unset;
 * `limits` size the default process connection budget (src/process-limits.ts).
 */
export function loadWorkerConfig(env: Env = process.env, cwd = process.cwd(), limits: ProcessLimits = processLimits()): WorkerConfig {
  const { processMaxConnections, lensBaseDir, lensModules, ...proc } = readSettings(PROCESS_SETTINGS, env);
  const redis = loadRedisSettings(env);
  const budget = processMaxConnections ?? defaultConnectionBudget(proc.concurrency, limits);
  if (budget < proc.concurrency) {
    throw new LensfleetError(
      'INVALID_CONFIG',
      `LENSFLEET_PROCESS_MAX_CONNECTIONS (${budget}) is below LENSFLEET_CONCURRENCY (${proc.concurrency}): every running job needs a connection; raise the budget or lower the concurrency`,
    );
  }
  const http = readSettings(HTTP_SETTINGS, env);
  if (http.headersTimeoutMs > http.requestTimeoutMs) {
    throw new LensfleetError(
      'INVALID_CONFIG',
      `LENSFLEET_HTTP_HEADERS_TIMEOUT_MS (${http.headersTimeoutMs}) is above LENSFLEET_HTTP_REQUEST_TIMEOUT_MS (${http.requestTimeoutMs}): headers are part of the request`,
    );
  }
  const admission = readSettings(ADMISSION_SETTINGS, env);
  if (admission.breakerMaxCoolDownMs < admission.breakerCoolDownMs) {
    throw new LensfleetError(
      'INVALID_CONFIG',
      `LENSFLEET_BREAKER_MAX_COOLDOWN_MS (${admission.breakerMaxCoolDownMs}) is below LENSFLEET_BREAKER_COOLDOWN_MS (${admission.breakerCoolDownMs}): the longest cool-down cannot be shorter than the first`,
    );
  }
  const base = lensBaseDir ?? cwd;
  const fleet = readSettings(FLEET_SETTINGS, env);
  const config: WorkerConfig = {
    ...proc,
    // Its URL and passwords are Secrets: typed so, they are never printed.
    redis,
    processMaxConnections: budget,
    lensBaseDir: base,
    lensModules: Object.freeze(lensModules.map((spec) => resolveModule(spec, base))),
    warmTenants: Object.freeze(proc.warmTenants),
    pool: checkPoolSettings(readSettings(POOL_SETTINGS, env), 'environment (LENSFLEET_POOL_*)'),
    jobs: Object.freeze(readSettings(JOB_SETTINGS, env)),
    admission: Object.freeze(admission),
    http: Object.freeze(http),
    fleet: Object.freeze({ name: fleet.name ?? proc.queueName, ttlMs: fleet.ttlMs }),
  };
  return Object.freeze(config);
}

/** A relative path (`./x.js`, `../x.js`) against the base directory; package names and absolute paths as they are. */
function resolveModule(spec: string, base: string): string {
  return spec.startsWith('./') || spec.startsWith('../') || spec === '.' || spec === '..' ? path.resolve(base, spec) : spec;
}

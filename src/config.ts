/**
 * Configuration is read once, at the edge, from the environment (12-factor) and an optional
 * tenants file; the core receives typed, frozen objects. Contradictions are rejected with a
 * message naming the setting.
 */
import { z } from 'zod';
import { LensfleetError } from './errors.js';

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
   * `RESET ALL` before a connection is reused. Off by default: lensfleet's own path only sets
   * transaction-local state and lens SQL that sets session state is rejected; turn it on for lens
   * modules that may change session settings some other way. @defaultValue false
   */
  readonly resetOnReturn: boolean;
}

export const DEFAULT_POOL_SETTINGS: PoolSettings = Object.freeze({
  minSize: 5,
  maxSize: 20,
  maxOverflow: 5,
  overflowLingerMs: 1000,
  acquireTimeoutMs: 10_000,
  connectTimeoutMs: 10_000,
  recycleSeconds: 3600,
  prePing: true,
  prePingIdleMs: 1000,
  idleTimeoutMs: 30_000,
  maxWaiting: 1000,
  statementTimeoutMs: 5000,
  leakDetectionMs: 60_000,
  poolIdleTimeoutMs: 600_000,
  resetOnReturn: false,
});

/** Environment variable of each pool setting (defaults for every tenant). */
export const POOL_ENV: Readonly<Record<keyof PoolSettings, string>> = Object.freeze({
  minSize: 'LENSFLEET_POOL_MIN_SIZE',
  maxSize: 'LENSFLEET_POOL_MAX_SIZE',
  maxOverflow: 'LENSFLEET_POOL_MAX_OVERFLOW',
  overflowLingerMs: 'LENSFLEET_POOL_OVERFLOW_LINGER_MS',
  acquireTimeoutMs: 'LENSFLEET_POOL_ACQUIRE_TIMEOUT_MS',
  connectTimeoutMs: 'LENSFLEET_POOL_CONNECT_TIMEOUT_MS',
  recycleSeconds: 'LENSFLEET_POOL_RECYCLE_SECONDS',
  prePing: 'LENSFLEET_POOL_PRE_PING',
  prePingIdleMs: 'LENSFLEET_POOL_PRE_PING_IDLE_MS',
  idleTimeoutMs: 'LENSFLEET_POOL_IDLE_TIMEOUT_MS',
  maxWaiting: 'LENSFLEET_POOL_MAX_WAITING',
  statementTimeoutMs: 'LENSFLEET_STATEMENT_TIMEOUT_MS',
  leakDetectionMs: 'LENSFLEET_POOL_LEAK_DETECTION_MS',
  poolIdleTimeoutMs: 'LENSFLEET_POOL_IDLE_POOL_TIMEOUT_MS',
  resetOnReturn: 'LENSFLEET_POOL_RESET_ON_RETURN',
});

/** Process-wide settings of a worker. */
export interface WorkerConfig {
  /** @defaultValue redis://127.0.0.1:6379 */
  readonly redisUrl: string;
  /** @defaultValue lens-queries */
  readonly queueName: string;
  /** Jobs run at once by this process. @defaultValue 8 */
  readonly concurrency: number;
  /** false = the guide's rollback plan: a fresh connection per job. @defaultValue true */
  readonly pooling: boolean;
  /** HTTP port of /metrics, /health, /ready, /pools (`PORT` or `LENSFLEET_METRICS_PORT`). @defaultValue 9464 */
  readonly port: number;
  /** @defaultValue 0.0.0.0 */
  readonly host: string;
  /** @defaultValue info */
  readonly logLevel: string;
  /** Largest accepted job data, serialised. @defaultValue 65536 */
  readonly maxPayloadBytes: number;
  /** Tenants whose pools are created at start ("*" = all). @defaultValue none */
  readonly warmTenants: readonly string[];
  /** Extra lens modules to load (paths or package names). @defaultValue none */
  readonly lensModules: readonly string[];
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
}

export type Env = Readonly<Record<string, string | undefined>>;

const intSetting = (name: string, min: number, max = Number.MAX_SAFE_INTEGER) =>
  z.coerce
    .number({ error: `${name} must be a whole number` })
    .int(`${name} must be a whole number`)
    .min(min, `${name} must be at least ${min}`)
    .max(max, `${name} must be at most ${max}`);

const boolSetting = (name: string) =>
  z
    .string()
    .trim()
    .toLowerCase()
    .refine((v) => ['1', '0', 'true', 'false', 'on', 'off', 'yes', 'no'].includes(v), {
      message: `${name} must be one of on|off|true|false|1|0`,
    })
    .transform((v) => ['1', 'true', 'on', 'yes'].includes(v));

/** Zod shape of pool settings, shared by the environment and the tenants file. */
export function poolSettingsShape(prefix = '') {
  const n = (k: keyof PoolSettings) => prefix + k;
  return {
    minSize: intSetting(n('minSize'), 0, 10_000),
    maxSize: intSetting(n('maxSize'), 1, 10_000),
    maxOverflow: intSetting(n('maxOverflow'), 0, 10_000),
    overflowLingerMs: intSetting(n('overflowLingerMs'), 0, 3_600_000),
    acquireTimeoutMs: intSetting(n('acquireTimeoutMs'), 1, 3_600_000),
    connectTimeoutMs: intSetting(n('connectTimeoutMs'), 1, 3_600_000),
    recycleSeconds: intSetting(n('recycleSeconds'), 0, 31_536_000),
    prePing: z.union([z.boolean(), boolSetting(n('prePing'))]),
    prePingIdleMs: intSetting(n('prePingIdleMs'), 0, 3_600_000),
    idleTimeoutMs: intSetting(n('idleTimeoutMs'), 0, 86_400_000),
    maxWaiting: intSetting(n('maxWaiting'), 0, 1_000_000),
    statementTimeoutMs: intSetting(n('statementTimeoutMs'), 1, 3_600_000),
    leakDetectionMs: intSetting(n('leakDetectionMs'), 0, 86_400_000),
    poolIdleTimeoutMs: intSetting(n('poolIdleTimeoutMs'), 0, 604_800_000),
    resetOnReturn: z.union([z.boolean(), boolSetting(n('resetOnReturn'))]),
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
  return Object.freeze({ ...s });
}

function list(value: string | undefined): string[] {
  return (value ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

/** Parse the worker's settings from the environment. Throws `INVALID_CONFIG` naming the variable. */
export function loadWorkerConfig(env: Env = process.env): WorkerConfig {
  const pool: Record<string, unknown> = { ...DEFAULT_POOL_SETTINGS };
  const shape = poolSettingsShape();
  for (const key of Object.keys(POOL_ENV) as (keyof PoolSettings)[]) {
    const name = POOL_ENV[key];
    const raw = env[name];
    if (raw === undefined || raw.trim() === '') continue;
    pool[key] = parseOne(shape[key] as z.ZodType<unknown>, raw, name);
  }
  const pooling = env.LENSFLEET_POOLING;
  const concurrency = parseOpt(intSetting('LENSFLEET_CONCURRENCY', 1, 10_000), env.LENSFLEET_CONCURRENCY, 8, 'LENSFLEET_CONCURRENCY');
  const processMaxConnections = parseOpt(
    intSetting('LENSFLEET_PROCESS_MAX_CONNECTIONS', 1, 1_000_000),
    env.LENSFLEET_PROCESS_MAX_CONNECTIONS,
    2 * concurrency,
    'LENSFLEET_PROCESS_MAX_CONNECTIONS',
  );
  if (processMaxConnections < concurrency) {
    throw new LensfleetError(
      'INVALID_CONFIG',
      `LENSFLEET_PROCESS_MAX_CONNECTIONS (${processMaxConnections}) is below LENSFLEET_CONCURRENCY (${concurrency}): every running job needs a connection; raise the budget or lower the concurrency`,
    );
  }
  const config: WorkerConfig = {
    redisUrl: env.REDIS_URL?.trim() || 'redis://127.0.0.1:6379',
    queueName: env.LENSFLEET_QUEUE?.trim() || 'lens-queries',
    concurrency,
    processMaxConnections,
    pooling: parseOpt(boolSetting('LENSFLEET_POOLING'), pooling, true, 'LENSFLEET_POOLING'),
    port: env.PORT?.trim()
      ? parseOne(intSetting('PORT', 0, 65_535), env.PORT, 'PORT')
      : parseOpt(intSetting('LENSFLEET_METRICS_PORT', 0, 65_535), env.LENSFLEET_METRICS_PORT, 9464, 'LENSFLEET_METRICS_PORT'),
    host: env.LENSFLEET_METRICS_HOST?.trim() || '0.0.0.0',
    logLevel: parseOpt(
      z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], { error: 'LOG_LEVEL must be one of fatal|error|warn|info|debug|trace|silent' }),
      env.LOG_LEVEL?.trim().toLowerCase(),
      'info',
      'LOG_LEVEL',
    ),
    maxPayloadBytes: parseOpt(
      intSetting('LENSFLEET_MAX_PAYLOAD_BYTES', 256, 16 * 1024 * 1024),
      env.LENSFLEET_MAX_PAYLOAD_BYTES,
      65_536,
      'LENSFLEET_MAX_PAYLOAD_BYTES',
    ),
    warmTenants: list(env.LENSFLEET_WARM_TENANTS),
    metricsMaxTenants: parseOpt(
      intSetting('LENSFLEET_METRICS_MAX_TENANTS', 1, 100_000),
      env.LENSFLEET_METRICS_MAX_TENANTS,
      100,
      'LENSFLEET_METRICS_MAX_TENANTS',
    ),
    lensModules: list(env.LENSFLEET_LENS_MODULES),
    shutdownTimeoutMs: parseOpt(
      intSetting('LENSFLEET_SHUTDOWN_TIMEOUT_MS', 0, 3_600_000),
      env.LENSFLEET_SHUTDOWN_TIMEOUT_MS,
      30_000,
      'LENSFLEET_SHUTDOWN_TIMEOUT_MS',
    ),
    pool: checkPoolSettings(pool as unknown as PoolSettings, 'environment (LENSFLEET_POOL_*)'),
  };
  return Object.freeze(config);
}

function parseOne<T>(schema: z.ZodType<T>, raw: unknown, name: string): T {
  const r = schema.safeParse(raw);
  if (!r.success) {
    const msg = r.error.issues[0]?.message ?? 'invalid value';
    throw new LensfleetError('INVALID_CONFIG', `${name}=${JSON.stringify(raw)}: ${msg}`);
  }
  return r.data;
}

function parseOpt<T>(schema: z.ZodType<T>, raw: string | undefined, fallback: T, name: string): T {
  return raw === undefined || raw.trim() === '' ? fallback : parseOne(schema, raw, name);
}

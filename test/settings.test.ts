/**
 * One table per concern holds every setting (name, schema, default, help): each variable of each
 * table reaches the configuration when set, the README lists exactly those variables with their
 * defaults (it is generated from the tables), secrets can come from files, and the worker's job
 * bounds default to the producer SDK's job options.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { DEFAULT_JOB_OPTIONS } from '../queues/contract.js';
import {
  FLEET_SETTINGS,
  HTTP_SETTINGS,
  JOB_SETTINGS,
  ADMISSION_SETTINGS,
  loadWorkerConfig,
  POOL_SETTINGS,
  PROCESS_SETTINGS,
  REDIS_SETTINGS,
  renderSettingsDoc,
  SETTINGS_TABLES,
  TENANT_SETTINGS,
  TENANT_SOURCE_SETTINGS,
  unknownLensfleetVariables,
  type WorkerConfig,
} from '../src/config.js';
import { LensfleetError } from '../src/errors.js';
import { Secret } from '../src/secret.js';
import type { SettingsTable } from '../src/settings.js';
import { loadTenantDirectory } from '../src/tenants.js';
import { BEGIN, END } from '../dev/settings-doc.js';
import { ROOT } from './support/harness.js';

/**
 * A value for every variable, different from its default, and what the configuration must hold
 * then. Spelled here a second time on purpose: a variable misspelled in a table has no sample
 * (or its sample never reaches the config), and this file fails.
 */
const CLUSTER = { LENSFLEET_REDIS_MODE: 'cluster', LENSFLEET_REDIS_NODES: 'n1:7000' };
const SENTINEL = { LENSFLEET_REDIS_MODE: 'sentinel', LENSFLEET_REDIS_NODES: 's1:26379', LENSFLEET_REDIS_SENTINEL_MASTER: 'm1' };
/** `with`: the other variables a setting needs to be valid at all (a Redis mode's required settings). */
const SAMPLES: Record<string, { raw: string; expected: unknown; with?: Record<string, string> }> = {
  REDIS_URL: { raw: 'redis://:pw@redis.example:6380/2', expected: 'redis://:pw@redis.example:6380/2' },
  LENSFLEET_REDIS_MODE: { raw: 'Cluster', expected: 'cluster', with: { LENSFLEET_REDIS_NODES: 'n1:7000' } },
  LENSFLEET_REDIS_NODES: {
    raw: 'n1.example:7000, 10.0.0.2:7001,[::1]:7002',
    expected: [
      { host: 'n1.example', port: 7000 },
      { host: '10.0.0.2', port: 7001 },
      { host: '::1', port: 7002 },
    ],
    with: { LENSFLEET_REDIS_MODE: 'cluster' },
  },
  LENSFLEET_REDIS_SENTINEL_MASTER: { raw: 'mymaster', expected: 'mymaster', with: { LENSFLEET_REDIS_MODE: 'sentinel', LENSFLEET_REDIS_NODES: 's1:26379' } },
  LENSFLEET_REDIS_USERNAME: { raw: 'lf-user', expected: 'lf-user', with: CLUSTER },
  LENSFLEET_REDIS_PASSWORD: { raw: 'node-pass', expected: 'node-pass', with: SENTINEL },
  LENSFLEET_REDIS_SENTINEL_PASSWORD: { raw: 'sentinel-pass', expected: 'sentinel-pass', with: SENTINEL },
  LENSFLEET_QUEUE: { raw: 'other-queue', expected: 'other-queue' },
  LENSFLEET_CONCURRENCY: { raw: '12', expected: 12 },
  LENSFLEET_PROCESS_MAX_CONNECTIONS: { raw: '40', expected: 40 },
  LENSFLEET_POOLING: { raw: 'off', expected: false },
  LENSFLEET_WARM_TENANTS: { raw: 'a, b', expected: ['a', 'b'] },
  LENSFLEET_LENS_MODULES: { raw: './mine.js, some-package', expected: [path.resolve('/srv/app', 'mine.js'), 'some-package'] },
  LENSFLEET_LENS_BASE_DIR: { raw: '/opt/lenses', expected: '/opt/lenses' },
  LENSFLEET_MAX_PAYLOAD_BYTES: { raw: '1024', expected: 1024 },
  LENSFLEET_SHUTDOWN_TIMEOUT_MS: { raw: '1234', expected: 1234 },
  LENSFLEET_METRICS_MAX_TENANTS: { raw: '7', expected: 7 },
  LOG_LEVEL: { raw: 'WARN', expected: 'warn' },
  LENSFLEET_TENANTS: { raw: 'tA', expected: ['tA'] },
  LENSFLEET_TENANTS_FILE: { raw: '(a tenants file)', expected: ['tF'] },
  LENSFLEET_POOL_MIN_SIZE: { raw: '2', expected: 2 },
  LENSFLEET_POOL_MAX_SIZE: { raw: '9', expected: 9 },
  LENSFLEET_POOL_MAX_OVERFLOW: { raw: '1', expected: 1 },
  LENSFLEET_POOL_OVERFLOW_LINGER_MS: { raw: '77', expected: 77 },
  LENSFLEET_POOL_ACQUIRE_TIMEOUT_MS: { raw: '2500', expected: 2500 },
  LENSFLEET_POOL_CONNECT_TIMEOUT_MS: { raw: '3500', expected: 3500 },
  LENSFLEET_POOL_RECYCLE_SECONDS: { raw: '60', expected: 60 },
  LENSFLEET_POOL_PRE_PING: { raw: 'no', expected: false },
  LENSFLEET_POOL_TRANSACTION_POOLER: { raw: 'on', expected: true },
  LENSFLEET_JOB_LOCK_MS: { raw: '20000', expected: 20000 },
  LENSFLEET_STALLED_CHECK_MS: { raw: '2500', expected: 2500 },
  LENSFLEET_POOL_PRE_PING_IDLE_MS: { raw: '5', expected: 5 },
  LENSFLEET_POOL_IDLE_TIMEOUT_MS: { raw: '6', expected: 6 },
  LENSFLEET_POOL_MAX_WAITING: { raw: '8', expected: 8 },
  LENSFLEET_STATEMENT_TIMEOUT_MS: { raw: '900', expected: 900 },
  LENSFLEET_POOL_LEAK_DETECTION_MS: { raw: '0', expected: 0 },
  LENSFLEET_POOL_IDLE_POOL_TIMEOUT_MS: { raw: '11', expected: 11 },
  LENSFLEET_POOL_RESET_ON_RETURN: { raw: 'on', expected: true },
  LENSFLEET_POOL_HYGIENE: { raw: 'off', expected: false },
  LENSFLEET_MAX_RESULT_BYTES: { raw: '4096', expected: 4096 },
  LENSFLEET_FLEET_MAX_CONNECTIONS: { raw: '6', expected: 6 },
  LENSFLEET_FLEET: { raw: 'fleet-b', expected: 'fleet-b' },
  LENSFLEET_FLEET_TTL_MS: { raw: '3000', expected: 3000 },
  LENSFLEET_MAX_ATTEMPTS: { raw: '3', expected: 3 },
  LENSFLEET_KEEP_COMPLETED_SECONDS: { raw: '60', expected: 60 },
  LENSFLEET_KEEP_COMPLETED_COUNT: { raw: '100', expected: 100 },
  LENSFLEET_KEEP_FAILED_SECONDS: { raw: '120', expected: 120 },
  LENSFLEET_KEEP_FAILED_COUNT: { raw: '200', expected: 200 },
  LENSFLEET_RETRY_BACKOFF_MS: { raw: '250', expected: 250 },
  LENSFLEET_RETRY_QUERY_TIMEOUT: { raw: 'off', expected: 'off' },
  LENSFLEET_RETRY_QUERY_TIMEOUT_DELAY_MS: { raw: '30000', expected: 30_000 },
  LENSFLEET_DEFER_WHEN_BUSY: { raw: 'off', expected: false },
  LENSFLEET_DEFER_MAX_PER_JOB: { raw: '3', expected: 3 },
  LENSFLEET_DEFER_MAX_DELAY_MS: { raw: '750', expected: 750 },
  LENSFLEET_DEFER_PARK: { raw: 'off', expected: false },
  LENSFLEET_BREAKER_FAILURES: { raw: '9', expected: 9 },
  LENSFLEET_BREAKER_COOLDOWN_MS: { raw: '2500', expected: 2500 },
  // (with a longer maximum: below the cool-down it is refused)
  LENSFLEET_BREAKER_MAX_COOLDOWN_MS: { raw: '90000', expected: 90_000 },
  LENSFLEET_METRICS_PORT: { raw: '9100', expected: 9100 },
  PORT: { raw: '8080', expected: 8080 },
  LENSFLEET_METRICS_HOST: { raw: '127.0.0.1', expected: '127.0.0.1' },
  LENSFLEET_HTTP_TOKEN: { raw: 'a-token-of-some-length', expected: 'a-token-of-some-length' },
  LENSFLEET_HTTP_MAX_CONNECTIONS: { raw: '5', expected: 5 },
  LENSFLEET_HTTP_HEADERS_TIMEOUT_MS: { raw: '3000', expected: 3000 },
  LENSFLEET_HTTP_REQUEST_TIMEOUT_MS: { raw: '20000', expected: 20_000 },
  LENSFLEET_METRICS_QUEUE_CACHE_MS: { raw: '0', expected: 0 },
  '<ID>_DATABASE_URL': { raw: 'postgres://u:p@db.example/t', expected: 'postgres://u:p@db.example/t' },
  '<ID>_SUPABASE_URL': { raw: 'https://x.supabase.co', expected: 'https://x.supabase.co' },
  '<ID>_SUPABASE_SERVICE_KEY': { raw: 'service-key', expected: 'service-key' },
};

const reveal = (v: unknown) => (v instanceof Secret ? v.reveal() : v);

function tempDir(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lf-settings-'));
  onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Load with one variable set; return the value it should have set. */
function configValue(table: SettingsTable, key: string, name: string, raw: string, extra: Record<string, string> = {}): unknown {
  const load = (env: Record<string, string>): WorkerConfig => loadWorkerConfig({ ...extra, ...env }, '/srv/app');
  if (table === REDIS_SETTINGS) {
    const redis = load({ [name]: raw }).redis as unknown as Record<string, unknown>;
    const field = { nodes: redis.mode === 'sentinel' ? 'sentinels' : 'nodes', sentinelMaster: 'masterName' }[key] ?? key;
    return reveal(redis[field]);
  }
  if (table === PROCESS_SETTINGS) return reveal((load({ [name]: raw }) as unknown as Record<string, unknown>)[key]);
  if (table === POOL_SETTINGS) return (load({ [name]: raw }).pool as unknown as Record<string, unknown>)[key];
  if (table === JOB_SETTINGS) return (load({ [name]: raw }).jobs as Record<string, unknown>)[key];
  if (table === ADMISSION_SETTINGS) return (load({ [name]: raw }).admission as unknown as Record<string, unknown>)[key];
  if (table === HTTP_SETTINGS) return reveal((load({ [name]: raw }).http as Record<string, unknown>)[key]);
  if (table === FLEET_SETTINGS) return (load({ [name]: raw }).fleet as unknown as Record<string, unknown>)[key];
  if (table === TENANT_SOURCE_SETTINGS) {
    if (key === 'tenants') return loadTenantDirectory(load({}), { [name]: raw, tA_DATABASE_URL: 'postgres://u:p@h/db' }).ids();
    const file = path.join(tempDir(), 'tenants.json');
    writeFileSync(file, JSON.stringify({ tenants: { tF: { databaseUrl: 'postgres://u:p@h/db' } } }));
    return loadTenantDirectory(load({}), { [name]: file }).ids();
  }
  if (table === TENANT_SETTINGS) {
    const id = 'yT1';
    const env: Record<string, string> = { LENSFLEET_TENANTS: id, [name.replace('<ID>', id)]: raw };
    if (key === 'supabaseUrl') env[`${id}_SUPABASE_SERVICE_KEY`] = 'k';
    if (key === 'supabaseServiceKey') env[`${id}_SUPABASE_URL`] = 'https://x';
    const t = loadTenantDirectory(load({}), env).get(id) as unknown as Record<string, unknown>;
    return reveal(t[key === 'supabaseServiceKey' ? 'serviceKey' : key]);
  }
  throw new Error(`no reader for table of ${name}`);
}

describe('settings tables', () => {
  const all = [
    PROCESS_SETTINGS,
    REDIS_SETTINGS,
    TENANT_SOURCE_SETTINGS,
    TENANT_SETTINGS,
    POOL_SETTINGS,
    JOB_SETTINGS,
    ADMISSION_SETTINGS,
    HTTP_SETTINGS,
    FLEET_SETTINGS,
  ];

  it('every variable of every table, set alone, reaches the configuration', () => {
    const seen: string[] = [];
    for (const table of all) {
      for (const [key, s] of Object.entries(table)) {
        for (const name of [...(s.aliases ?? []), s.env]) {
          seen.push(name);
          const sample = SAMPLES[name];
          expect(sample, `no sample for ${name}: add one to SAMPLES`).toBeDefined();
          expect(sample!.expected, `${name}: the sample must differ from the default`).not.toEqual(reveal(s.default));
          expect(configValue(table, key, name, sample!.raw, sample!.with), name).toEqual(sample!.expected);
        }
      }
    }
    // and no sample for a variable that no table has (a renamed variable)
    expect(Object.keys(SAMPLES).sort()).toEqual(seen.sort());
  });

  it('every secret setting may come from <NAME>_FILE instead', () => {
    const dir = tempDir();
    const file = (name: string, text: string) => {
      const p = path.join(dir, name);
      writeFileSync(p, text);
      return p;
    };
    const c = loadWorkerConfig({
      REDIS_URL_FILE: file('redis', 'redis://:fromfile@r:6379\n'),
      LENSFLEET_HTTP_TOKEN_FILE: file('token', 'token-from-a-file-0123'),
    });
    expect(c.redis.mode === 'standalone' && c.redis.url.reveal()).toBe('redis://:fromfile@r:6379');
    expect(c.http.token?.reveal()).toBe('token-from-a-file-0123');
    const dirOf = loadTenantDirectory(c, {
      LENSFLEET_TENANTS: 'yF1,yF2',
      yF1_DATABASE_URL_FILE: file('db', 'postgres://u:fromfile@h/db\n'),
      yF2_SUPABASE_URL: 'https://x',
      yF2_SUPABASE_SERVICE_KEY_FILE: file('key', 'key-from-file'),
    });
    expect(dirOf.getPg('yF1').databaseUrl.reveal()).toBe('postgres://u:fromfile@h/db');
    const supa = dirOf.get('yF2');
    expect(supa.backend === 'supabase' && supa.serviceKey.reveal()).toBe('key-from-file');
    const sentinel = loadWorkerConfig({
      ...SENTINEL,
      LENSFLEET_REDIS_PASSWORD_FILE: file('redis-pw', 'node-pw-from-file\n'),
      LENSFLEET_REDIS_SENTINEL_PASSWORD_FILE: file('sentinel-pw', 'sentinel-pw-from-file'),
    }).redis;
    expect(sentinel.mode === 'sentinel' && [sentinel.password?.reveal(), sentinel.sentinelPassword?.reveal()]).toEqual([
      'node-pw-from-file',
      'sentinel-pw-from-file',
    ]);
    for (const s of Object.values({ ...PROCESS_SETTINGS, ...REDIS_SETTINGS, ...TENANT_SETTINGS, ...HTTP_SETTINGS })) {
      if ('secret' in s && s.secret)
        expect([
          'REDIS_URL',
          'LENSFLEET_REDIS_PASSWORD',
          'LENSFLEET_REDIS_SENTINEL_PASSWORD',
          '<ID>_DATABASE_URL',
          '<ID>_SUPABASE_SERVICE_KEY',
          'LENSFLEET_HTTP_TOKEN',
        ]).toContain(s.env);
    }
  });

  it('a secret file: both set, unreadable or empty is INVALID_CONFIG naming the variable, never the content', () => {
    const dir = tempDir();
    const p = path.join(dir, 'db');
    writeFileSync(p, 'postgres://u:S3CRET@h/db');
    const err = (fn: () => unknown): LensfleetError => {
      try {
        fn();
      } catch (e) {
        expect(e).toBeInstanceOf(LensfleetError);
        expect((e as LensfleetError).code).toBe('INVALID_CONFIG');
        expect((e as LensfleetError).message).not.toContain('S3CRET');
        return e as LensfleetError;
      }
      throw new Error('expected an error');
    };
    const c = loadWorkerConfig({});
    expect(err(() => loadTenantDirectory(c, { LENSFLEET_TENANTS: 'y1', y1_DATABASE_URL: 'postgres://u:S3CRET@h/x', y1_DATABASE_URL_FILE: p })).message).toBe(
      'y1_DATABASE_URL and y1_DATABASE_URL_FILE are both set: set only one',
    );
    expect(err(() => loadTenantDirectory(c, { LENSFLEET_TENANTS: 'y1', y1_DATABASE_URL_FILE: path.join(dir, 'missing') })).message).toMatch(
      /^y1_DATABASE_URL_FILE=.*missing: cannot read \(ENOENT\)$/,
    );
    writeFileSync(path.join(dir, 'empty'), '\n');
    expect(err(() => loadWorkerConfig({ REDIS_URL_FILE: path.join(dir, 'empty') })).message).toContain('REDIS_URL_FILE');
    writeFileSync(path.join(dir, 'bad-url'), 'S3CRET-not-a-url');
    expect(err(() => loadWorkerConfig({ REDIS_URL_FILE: path.join(dir, 'bad-url') })).message).toBe(
      'REDIS_URL_FILE: REDIS_URL must be a redis:// or rediss:// URL',
    );
    expect(err(() => loadWorkerConfig({ LENSFLEET_HTTP_TOKEN: 'S3CRET' })).message).toBe(
      'LENSFLEET_HTTP_TOKEN: LENSFLEET_HTTP_TOKEN must be at least 16 characters',
    );
    expect(err(() => loadWorkerConfig({ LENSFLEET_HTTP_HEADERS_TIMEOUT_MS: '9000', LENSFLEET_HTTP_REQUEST_TIMEOUT_MS: '8000' })).message).toMatch(
      /^LENSFLEET_HTTP_HEADERS_TIMEOUT_MS \(9000\) is above LENSFLEET_HTTP_REQUEST_TIMEOUT_MS \(8000\)/,
    );
  });

  it('the fleet is named after the queue unless LENSFLEET_FLEET says otherwise; a fleet cap below minSize is refused, naming both', () => {
    expect(loadWorkerConfig({ LENSFLEET_QUEUE: 'q-1' }).fleet).toEqual({ name: 'q-1', ttlMs: 10_000 });
    expect(loadWorkerConfig({ LENSFLEET_QUEUE: 'q-1', LENSFLEET_FLEET: 'f-1' }).fleet.name).toBe('f-1');
    expect(loadWorkerConfig({}).pool.fleetMaxConnections).toBe(0);
    expect(() => loadWorkerConfig({ LENSFLEET_FLEET: 'a:b' })).toThrow(/LENSFLEET_FLEET/);
    expect(() => loadWorkerConfig({ LENSFLEET_FLEET_TTL_MS: '500' })).toThrow(/LENSFLEET_FLEET_TTL_MS must be at least 1000/);
    const capped = (env: Record<string, string>) => () => loadWorkerConfig({ LENSFLEET_FLEET_MAX_CONNECTIONS: '2', ...env });
    expect(capped({})).toThrow(/minSize \(5\) is larger than fleetMaxConnections \(2\)/);
    expect(capped({ LENSFLEET_POOL_MIN_SIZE: '1' })().pool.fleetMaxConnections).toBe(2);
  });

  it('warns about LENSFLEET_* variables no table knows (a misspelled name)', () => {
    expect(unknownLensfleetVariables({ LENSFLEET_CONCURENCY: '4', LENSFLEET_CONCURRENCY: '4', LENSFLEET_DEMO_ADMIN_URL: 'x', HOME: '/root' })).toEqual([
      'LENSFLEET_CONCURENCY',
    ]);
    expect(unknownLensfleetVariables({ LENSFLEET_TENANTS: 'a', LENSFLEET_POOL_MAX_SIZE: '3' })).toEqual([]);
  });

  it("the worker's job bounds default to the producer SDK's job options", () => {
    const { jobs } = loadWorkerConfig({});
    expect(jobs.maxAttempts).toBe(DEFAULT_JOB_OPTIONS.attempts);
    expect(DEFAULT_JOB_OPTIONS.backoff).toEqual({ type: 'exponential', delay: jobs.backoffMs });
    expect(DEFAULT_JOB_OPTIONS.removeOnComplete).toEqual({ age: jobs.keepCompletedSeconds, count: jobs.keepCompletedCount });
    expect(DEFAULT_JOB_OPTIONS.removeOnFail).toEqual({ age: jobs.keepFailedSeconds, count: jobs.keepFailedCount });
  });
});

describe('README configuration section', () => {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const block = readme.slice(readme.indexOf(BEGIN) + BEGIN.length, readme.indexOf(END)).trim();

  it('lists exactly the variables of the tables, with their defaults', () => {
    const rows = block
      .split('\n')
      .filter((l) => l.startsWith('| `'))
      .map((l) => l.split(' | '));
    const listed = rows.map(([names, dflt]) => `${[...(names ?? '').matchAll(/`([^`]+)`/g)].map((m) => m[1]).join(' ')} = ${dflt}`);
    const expected = SETTINGS_TABLES.flatMap(({ table }) =>
      Object.values(table as SettingsTable).map((s) => {
        const names = [...(s.aliases ?? []), s.env, ...(s.secret ? [`${s.env}_FILE`] : [])];
        const d = s.defaultDoc ?? (s.default === undefined || (Array.isArray(s.default) && s.default.length === 0) ? '(none)' : null);
        return `${names.join(' ')} = ${d ?? `\`${typeof s.default === 'boolean' ? (s.default ? 'on' : 'off') : String(s.default)}\``}`;
      }),
    );
    expect(listed).toEqual(expected);
  });

  it('is the rendering of the tables, help text included (npm run docs:settings)', () => {
    expect(block, 'README.md is out of date: run npm run docs:settings').toBe(renderSettingsDoc());
  });
});

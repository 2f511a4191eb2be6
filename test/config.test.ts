/**
 * Configuration at the edge: defaults, every variable parsed, contradictions rejected with a
 * message that names the setting, secrets never echoed.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { jobDataV1, parseJobData } from '../queues/contract.js';
import { DEFAULT_POOL_SETTINGS, loadWorkerConfig, unknownLensfleetVariables } from '../src/config.js';
import { LensfleetError } from '../src/errors.js';
import { loadTenantDirectory } from '../src/tenants.js';

function configError(fn: () => unknown): LensfleetError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(LensfleetError);
    return err as LensfleetError;
  }
  throw new Error('expected an error');
}

describe('worker config', () => {
  it("defaults are the guide's settings", () => {
    const c = loadWorkerConfig({});
    expect(c.pool).toMatchObject({ minSize: 5, maxSize: 20, maxOverflow: 5, acquireTimeoutMs: 10_000, recycleSeconds: 3600, prePing: true });
    expect(c).toMatchObject({ queueName: 'lens-queries', concurrency: 8, pooling: true, logLevel: 'info' });
    expect(c.http).toMatchObject({ port: 9464, host: '0.0.0.0' });
    expect(c.redis.mode).toBe('standalone');
    expect(c.redis.mode === 'standalone' && c.redis.url.reveal()).toBe('redis://127.0.0.1:6379');
    expect(c.jobs).toEqual({
      maxAttempts: 5,
      keepCompletedSeconds: 3600,
      keepCompletedCount: 10_000,
      keepFailedSeconds: 604_800,
      keepFailedCount: 10_000,
      backoffMs: 500,
      queryTimeoutRetry: 'once',
      queryTimeoutDelayMs: 10_000,
      // Not the guide's (it has none): a crashed worker's jobs run again within 15 + 2 × 5 s.
      lockMs: 15_000,
      stalledCheckMs: 5000,
    });
    expect(Object.isFrozen(c)).toBe(true);
  });

  // Every variable, each set alone and spelled independently of the tables: settings.test.ts.
  it('reads pool and process variables set together; PORT wins over LENSFLEET_METRICS_PORT', () => {
    const c = loadWorkerConfig({
      LENSFLEET_POOL_MIN_SIZE: '2',
      LENSFLEET_POOL_MAX_SIZE: '10',
      LENSFLEET_POOL_MAX_OVERFLOW: '0',
      LENSFLEET_POOL_ACQUIRE_TIMEOUT_MS: '2500',
      LENSFLEET_POOL_CONNECT_TIMEOUT_MS: '3000',
      LENSFLEET_POOL_RECYCLE_SECONDS: '60',
      LENSFLEET_POOL_PRE_PING: 'off',
      LENSFLEET_POOLING: 'off',
      LENSFLEET_CONCURRENCY: '32',
      PORT: '8080',
      LENSFLEET_METRICS_PORT: '9999',
      LOG_LEVEL: 'DEBUG',
    });
    expect(c.pool).toMatchObject({
      minSize: 2,
      maxSize: 10,
      maxOverflow: 0,
      acquireTimeoutMs: 2500,
      connectTimeoutMs: 3000,
      recycleSeconds: 60,
      prePing: false,
    });
    expect(c).toMatchObject({ pooling: false, concurrency: 32, logLevel: 'debug' });
    expect(c.http.port).toBe(8080);
    expect(loadWorkerConfig({ LENSFLEET_METRICS_PORT: '9999' }).http.port).toBe(9999);
  });

  it('rejects bad values naming the variable', () => {
    expect(configError(() => loadWorkerConfig({ LENSFLEET_CONCURRENCY: 'many' })).message).toMatch(
      /^LENSFLEET_CONCURRENCY="many": LENSFLEET_CONCURRENCY must be a whole number/,
    );
    expect(configError(() => loadWorkerConfig({ LENSFLEET_POOL_ACQUIRE_TIMEOUT_MS: '-5' })).message).toContain('LENSFLEET_POOL_ACQUIRE_TIMEOUT_MS');
    expect(configError(() => loadWorkerConfig({ LENSFLEET_POOLING: 'maybe' })).message).toContain('LENSFLEET_POOLING must be one of on|off');
    expect(configError(() => loadWorkerConfig({ LOG_LEVEL: 'loud' })).code).toBe('INVALID_CONFIG');
    const minMax = configError(() => loadWorkerConfig({ LENSFLEET_POOL_MIN_SIZE: '30', LENSFLEET_POOL_MAX_SIZE: '10' }));
    expect(minMax.code).toBe('INVALID_CONFIG');
    expect(minMax.message).toBe('environment (LENSFLEET_POOL_*): minSize (30) is larger than maxSize + maxOverflow (10 + 5); lower minSize or raise maxSize');
  });

  it('contradictions are rejected exactly past their bounds, naming both settings', () => {
    // minSize up to maxSize + maxOverflow
    expect(loadWorkerConfig({ LENSFLEET_POOL_MIN_SIZE: '15', LENSFLEET_POOL_MAX_SIZE: '10' }).pool.minSize).toBe(15);
    expect(configError(() => loadWorkerConfig({ LENSFLEET_POOL_MIN_SIZE: '16', LENSFLEET_POOL_MAX_SIZE: '10' })).code).toBe('INVALID_CONFIG');
    // the process budget down to the concurrency
    expect(loadWorkerConfig({ LENSFLEET_CONCURRENCY: '8', LENSFLEET_PROCESS_MAX_CONNECTIONS: '8' }).processMaxConnections).toBe(8);
    expect(configError(() => loadWorkerConfig({ LENSFLEET_CONCURRENCY: '8', LENSFLEET_PROCESS_MAX_CONNECTIONS: '7' })).message).toBe(
      'LENSFLEET_PROCESS_MAX_CONNECTIONS (7) is below LENSFLEET_CONCURRENCY (8): every running job needs a connection; raise the budget or lower the concurrency',
    );
    // the headers timeout up to the request timeout
    expect(loadWorkerConfig({ LENSFLEET_HTTP_HEADERS_TIMEOUT_MS: '8000', LENSFLEET_HTTP_REQUEST_TIMEOUT_MS: '8000' }).http.headersTimeoutMs).toBe(8000);
    expect(configError(() => loadWorkerConfig({ LENSFLEET_HTTP_HEADERS_TIMEOUT_MS: '8001', LENSFLEET_HTTP_REQUEST_TIMEOUT_MS: '8000' })).code).toBe(
      'INVALID_CONFIG',
    );
  });

  it('lens modules: ./ and ../ paths (and . and ..) resolve against the base directory; package names and absolute paths stay as they are', () => {
    const c = loadWorkerConfig({
      LENSFLEET_LENS_MODULES: './a.js, ../b.js, ., .., @scope/pkg, pkg/sub, /abs/c.js',
      LENSFLEET_LENS_BASE_DIR: '/srv/app/lenses',
    });
    expect(c.lensModules).toEqual(['/srv/app/lenses/a.js', '/srv/app/b.js', '/srv/app/lenses', '/srv/app', '@scope/pkg', 'pkg/sub', '/abs/c.js']);
    expect(Object.isFrozen(c.lensModules)).toBe(true);
    expect(loadWorkerConfig({ LENSFLEET_LENS_MODULES: './a.js' }, '/work').lensModules).toEqual(['/work/a.js']);
  });

  it('unknown LENSFLEET_* variables are listed sorted; the demo’s and the bench’s own prefixes are not unknown', () => {
    expect(
      unknownLensfleetVariables({
        LENSFLEET_ZZZ: '1',
        LENSFLEET_AAA: '1',
        LENSFLEET_DEMO_ADMIN_URL: 'x',
        LENSFLEET_BENCH_RUNS: '3',
        LENSFLEET_QUEUE: 'q',
        NOT_LENSFLEET_X: '1',
      }),
    ).toEqual(['LENSFLEET_AAA', 'LENSFLEET_ZZZ']);
  });
});

describe('tenant directory', () => {
  const config = loadWorkerConfig({});
  const secretUrl = 'postgres://reader:S3CRETpw@db.example:5432/tenant';

  it('reads tenants from the environment in the guide’s naming; no default tenant', () => {
    const dir = loadTenantDirectory(config, {
      LENSFLEET_TENANTS: 'yTEST_YACHT_001, yOther',
      yTEST_YACHT_001_DATABASE_URL: secretUrl,
      yOther_SUPABASE_URL: 'https://x.supabase.co',
      yOther_SUPABASE_SERVICE_KEY: 'service-key',
    });
    expect(dir.ids()).toEqual(['yTEST_YACHT_001', 'yOther']);
    expect(dir.getPg('yTEST_YACHT_001').databaseUrl.reveal()).toBe(secretUrl);
    expect(JSON.stringify(dir.list())).not.toContain('S3CRETpw');
    expect(JSON.stringify(dir.list())).not.toContain('service-key');
    const unsupported = configError(() => dir.getPg('yOther'));
    expect(unsupported.code).toBe('TENANT_UNSUPPORTED');
    expect(unsupported.retryable).toBe(false);
    const missing = configError(() => dir.get('yTEST_YACHT_002'));
    expect(missing.code).toBe('TENANT_NOT_FOUND');
    expect(missing.retryable).toBe(false);
    // ids are case-sensitive
    expect(() => dir.get('ytest_yacht_001')).toThrow(/not configured/);
  });

  it('rejects a listed tenant without settings, bad ids and bad URLs without echoing them', () => {
    expect(configError(() => loadTenantDirectory(config, { LENSFLEET_TENANTS: 'a1' })).message).toContain('set a1_DATABASE_URL');
    expect(configError(() => loadTenantDirectory(config, { LENSFLEET_TENANTS: 'bad-id', 'bad-id_DATABASE_URL': secretUrl })).message).toContain(
      'tenant id "bad-id" is invalid',
    );
    const badUrl = configError(() => loadTenantDirectory(config, { LENSFLEET_TENANTS: 't1', t1_DATABASE_URL: 'mysql://u:S3CRETpw@h/db' }));
    expect(badUrl.message).toContain('t1_DATABASE_URL must start with postgres://');
    expect(badUrl.message).not.toContain('S3CRETpw');
    expect(configError(() => loadTenantDirectory(config, { LENSFLEET_TENANTS: 't1', t1_SUPABASE_URL: 'https://x' })).message).toContain('needs both');
  });

  it('rejects the ids other and unknown (metrics labels of their own), in the environment and the tenants file', () => {
    for (const id of ['other', 'unknown']) {
      expect(configError(() => loadTenantDirectory(config, { LENSFLEET_TENANTS: id, [`${id}_DATABASE_URL`]: secretUrl })).message).toMatch(
        new RegExp(`^tenant id "${id}" is reserved: metrics use tenant="${id}"`),
      );
    }
    const dir = mkdtempSync(path.join(os.tmpdir(), 'lf-tenants-'));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'tenants.json');
    writeFileSync(file, JSON.stringify({ tenants: { other: { databaseUrl: secretUrl } } }));
    expect(configError(() => loadTenantDirectory(config, { LENSFLEET_TENANTS_FILE: file })).message).toMatch(/^tenant id "other" is reserved/);
    // ids are case-sensitive: Other is another id
    expect(loadTenantDirectory(config, { LENSFLEET_TENANTS: 'Other', Other_DATABASE_URL: secretUrl }).ids()).toEqual(['Other']);
  });

  it('quotes an invalid id clipped', () => {
    const long = `bad-${'x'.repeat(5000)}`;
    const e = configError(() => loadTenantDirectory(config, { LENSFLEET_TENANTS: long }));
    expect(e.message.length).toBeLessThan(300);
    expect(e.message).toMatch(/^tenant id "bad-x+…\(5004 characters\)" is invalid/);
  });

  it('applies tenants-file overrides and rejects unknown keys and contradictions naming the tenant', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'lf-tenants-'));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'tenants.json');
    writeFileSync(file, JSON.stringify({ tenants: { yA: { databaseUrl: secretUrl, pool: { maxSize: 3, minSize: 1 }, pooling: false }, yB: {} } }));
    const tenants = loadTenantDirectory(config, { LENSFLEET_TENANTS_FILE: file, yB_DATABASE_URL: secretUrl });
    expect(tenants.getPg('yA').pool).toEqual({ ...DEFAULT_POOL_SETTINGS, maxSize: 3, minSize: 1 });
    expect(tenants.getPg('yA').pooling).toBe(false);
    expect(tenants.getPg('yB').pooling).toBe(true);

    writeFileSync(file, JSON.stringify({ tenants: { yA: { databaseUrl: secretUrl, pool: { maxsize: 3 } } } }));
    expect(configError(() => loadTenantDirectory(config, { LENSFLEET_TENANTS_FILE: file })).message).toMatch(/tenants\.yA\.pool: unknown key\(s\) maxsize/);
    writeFileSync(file, JSON.stringify({ tenants: { yA: { databaseUrl: secretUrl, pool: { minSize: 9, maxSize: 2, maxOverflow: 0 } } } }));
    expect(configError(() => loadTenantDirectory(config, { LENSFLEET_TENANTS_FILE: file })).message).toContain(
      'tenant "yA": minSize (9) is larger than maxSize + maxOverflow',
    );
    // a bad value: the message names the key, in the file and in the schema's own words
    writeFileSync(file, JSON.stringify({ tenants: { yA: { databaseUrl: secretUrl, pool: { maxSize: 0 } } } }));
    expect(configError(() => loadTenantDirectory(config, { LENSFLEET_TENANTS_FILE: file })).message).toMatch(
      /: tenants\.yA\.pool\.maxSize: maxSize must be at least 1$/,
    );
    writeFileSync(file, '{ not json');
    expect(configError(() => loadTenantDirectory(config, { LENSFLEET_TENANTS_FILE: file })).message).toContain('not valid JSON (syntax error at character 2)');
    // the parser's own message may quote the text; ours never does
    writeFileSync(file, 'S3CRETpw://not-json');
    const quoted = configError(() => loadTenantDirectory(config, { LENSFLEET_TENANTS_FILE: file }));
    expect(quoted.message).toContain('not valid JSON');
    expect(quoted.message).not.toContain('S3CRET');
  });
});

describe('job contract', () => {
  it('accepts version 1 and defaults params', () => {
    expect(parseJobData({ v: 1, tenant: 'yA', lens: 'receiving.recent' })).toEqual({ v: 1, tenant: 'yA', lens: 'receiving.recent', params: {} });
  });
  it('rejects anything else with INVALID_JOB, naming the field, and never echoes a JWT', () => {
    for (const bad of [
      'text',
      42,
      null,
      [1],
      { v: 2, tenant: 'yA', lens: 'x' },
      { v: 1, tenant: 'y A', lens: 'x' },
      { v: 1, tenant: 'yA', lens: 'x', sql: 'DROP TABLE' },
    ]) {
      expect(configError(() => parseJobData(bad)).code).toBe('INVALID_JOB');
    }
    expect(configError(() => parseJobData({ v: 1, tenant: 'yA', lens: 'x', sql: 'DROP' })).message).toContain('sql');
    const jwtErr = configError(() => parseJobData({ v: 1, tenant: 'yA', lens: 'x', auth: { jwt: 'eyJSECRET', extra: 1 } }));
    expect(jwtErr.message).not.toContain('eyJSECRET');
  });
  it('the fast path accepts exactly what the schema accepts', () => {
    const ok = [
      { v: 1, tenant: 'yA', lens: 'receiving.recent', params: { limit: 5 } },
      { v: 1, tenant: 'yA', lens: 'receiving.recent' },
      { v: 1, tenant: 'y_A9', lens: 'a.b_c', params: {}, auth: { jwt: 'x.y.z' } },
    ];
    for (const d of ok) expect(parseJobData(d)).toEqual(jobDataV1.parse(d));
    const bad = [
      { v: 1, tenant: 'yA', lens: 'x', params: null },
      { v: 1, tenant: 'yA', lens: 'x', params: [] },
      { v: 1, tenant: 'yA', lens: 'X' },
      { v: 1, tenant: 'yA', lens: 'x', auth: { jwt: '' } },
      { v: 1, tenant: 'yA', lens: 'x', auth: { jwt: 'a', role: 'admin' } },
      { v: '1', tenant: 'yA', lens: 'x' },
      { v: 1, tenant: 'y'.repeat(65), lens: 'x' },
    ];
    for (const d of bad) {
      expect(jobDataV1.safeParse(d).success).toBe(false);
      expect(configError(() => parseJobData(d)).code).toBe('INVALID_JOB');
    }
  });

  it('counts bytes, not characters: 20,000 four-byte characters exceed a 65,536-byte limit', () => {
    const e = configError(() => parseJobData({ v: 1, tenant: 'yA', lens: 'x', params: { s: '😀'.repeat(20_000) } }));
    expect(e.code).toBe('PAYLOAD_TOO_LARGE');
  });

  it('rejects oversized data with PAYLOAD_TOO_LARGE', () => {
    const e = configError(() => parseJobData({ v: 1, tenant: 'yA', lens: 'x', params: { blob: 'x'.repeat(70_000) } }));
    expect(e.code).toBe('PAYLOAD_TOO_LARGE');
    expect(e.retryable).toBe(false);
  });
});

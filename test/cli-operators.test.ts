/**
 * The operators' commands of `lensfleet` (issue 16), run as the compiled CLI against the real
 * Redis and Postgres of the test run: `--help` and exit codes of every command, `worker` (the
 * worker itself), `lenses` (the catalog a worker would load, JSON Schema per lens), `tenants
 * check` (Postgres and Supabase tenants, a wrong password, a server that never answers, secrets
 * never printed) and `queue` (counts, failed jobs by code, retry and remove by code).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { serviceKeyFor } from '../dev/postgrest/jwt.js';
import { enqueue } from '../queues/producer.js';
import { startRestTenants, type RestTenants } from './support/rest-tenants.js';
import { createTenants, redisUrl, ROOT, startTestWorker, TEST_LENS_MODULE, uniqueId, waitFor, WORKER_ENTRY, type TestWorker } from './support/harness.js';
import { runNode } from './support/process.js';

const CLI = path.join(ROOT, 'dist/cli/lensfleet.js');

const run = runNode;

const lensfleet = (args: string[], env: Record<string, string> = {}, timeoutMs?: number) => run([CLI, ...args], env, timeoutMs);
const passwordOf = (url: string) => decodeURIComponent(new URL(url).password);

describe('every command answers --help with its options and exit codes', () => {
  it.each([
    ['worker', 'usage: lensfleet worker'],
    ['enqueue', 'usage: lensfleet enqueue'],
    ['lenses', 'usage: lensfleet lenses'],
    ['tenants check', 'usage: lensfleet tenants check'],
    ['tenants', 'usage: lensfleet tenants check'],
    ['queue', 'usage: lensfleet queue'],
    ['queue retry', 'lensfleet queue retry --code'],
    ['queue remove', 'lensfleet queue remove --code'],
    ['status', 'usage: lensfleet status'],
    ['plan', 'usage: lensfleet plan'],
    ['procfile', 'usage: lensfleet procfile'],
  ])('%s --help', async (command, usage) => {
    const r = await lensfleet([...command.split(' '), '--help']);
    expect(r.code, r.output).toBe(0);
    expect(r.stdout).toContain(usage);
    expect(r.stdout).toMatch(/exit codes: 0 /);
  });

  it('the overview lists every command; no command or an unknown one exits 2', async () => {
    const help = await lensfleet(['--help']);
    expect(help.code).toBe(0);
    for (const c of ['worker', 'enqueue', 'lenses', 'tenants check', 'queue', 'status', 'plan', 'procfile']) expect(help.stdout).toContain(`lensfleet ${c}`);
    expect((await lensfleet([])).code).toBe(2);
    expect((await lensfleet(['frobnicate'])).code).toBe(2);
    expect((await lensfleet(['tenants'])).code).toBe(2);
    expect((await lensfleet(['tenants', 'frob'])).code).toBe(2);
    expect((await lensfleet(['worker', '--concurrency', '3'])).code).toBe(2);
  });
});

describe('lensfleet worker', () => {
  it('is the worker: 78 on an invalid setting (the message names it), as node dist/workers/lens-worker.js', async () => {
    const env = { REDIS_URL: redisUrl(), PORT: '0', LENSFLEET_METRICS_HOST: '127.0.0.1', LENSFLEET_CONCURRENCY: 'abc' };
    const [viaCli, direct] = await Promise.all([lensfleet(['worker'], env), run([WORKER_ENTRY], env)]);
    expect(viaCli.code).toBe(78);
    expect(direct.code).toBe(78);
    expect(viaCli.stdout).toMatch(/"level":"fatal".*"msg":"worker failed to start: LENSFLEET_CONCURRENCY=/);
  });

  it('starts, becomes ready, and drains on SIGTERM with exit 0', async () => {
    const { freePort } = await import('../dev/local/servers.js');
    const port = await freePort();
    const proc = spawn(process.execPath, [CLI, 'worker'], {
      env: {
        PATH: process.env.PATH ?? '',
        REDIS_URL: redisUrl(),
        PORT: String(port),
        LENSFLEET_METRICS_HOST: '127.0.0.1',
        LENSFLEET_QUEUE: uniqueId('q_cliw'),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
    onTestFinished(() => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    });
    await waitFor(
      `the worker to be ready (${out.slice(-500)})`,
      async () => (await fetch(`http://127.0.0.1:${port}/ready`).catch(() => undefined))?.status === 200,
    );
    proc.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(out).toMatch(/"signal":"SIGTERM".*"msg":"shutting down"/);
  });
});

describe('lensfleet lenses', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lf-lenses-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  interface Described {
    name: string;
    auth: string;
    maxRows: number;
    timeoutMs: number | null;
    rest: boolean;
    params: { type: string; properties: Record<string, Record<string, unknown>>; required?: string[]; additionalProperties?: boolean };
  }

  it('--json: the built-in lenses and those of LENSFLEET_LENS_MODULES, each with its params as a JSON Schema, auth, maxRows, timeout', async () => {
    const r = await lensfleet(['lenses', '--json'], { LENSFLEET_LENS_MODULES: TEST_LENS_MODULE });
    expect(r.code, r.output).toBe(0);
    const lenses = JSON.parse(r.stdout) as Described[];
    const byName = new Map(lenses.map((l) => [l.name, l]));
    expect([...byName.keys()]).toEqual(
      expect.arrayContaining(['receiving.recent', 'equipment.search', 'work_orders.open', 'test.sleep', 'test.me', 'test.series']),
    );
    expect(byName.get('test.sleep')).toMatchObject({
      auth: 'service',
      timeoutMs: 90_000,
      rest: false,
      params: { type: 'object', properties: { seconds: { type: 'number', minimum: 0, maximum: 60 } }, required: ['seconds'], additionalProperties: false },
    });
    expect(byName.get('test.me')).toMatchObject({ auth: 'user' });
    expect(byName.get('test.series')).toMatchObject({ maxRows: 10 });
    // Input form: a field with a default is optional for the producer, and says its default.
    const recent = byName.get('receiving.recent')!;
    expect(recent).toMatchObject({ auth: 'optional', maxRows: 200, timeoutMs: null, rest: true });
    expect(recent.params.properties.limit).toMatchObject({ type: 'integer', minimum: 1, maximum: 200, default: 20 });
    expect(recent.params.properties.status).toMatchObject({ enum: ['pending', 'received', 'rejected'] });
    expect(recent.params.required ?? []).toEqual([]);
  });

  it('as text: without LENSFLEET_LENS_MODULES only the built-ins, each with its params in one line', async () => {
    const r = await lensfleet(['lenses']);
    expect(r.code, r.output).toBe(0);
    expect(r.stdout).toContain('receiving.recent');
    expect(r.stdout).toContain('params: { limit?: integer 1..200 = 20, status?: "pending"|"received"|"rejected" }');
    expect(r.stdout).not.toContain('test.sleep');
    expect(r.stdout).toContain('3 lenses');
  });

  it.each([
    ['a module that cannot be loaded', () => './no-such-lenses.js', /LENSFLEET_LENS_MODULES: cannot load .*no-such-lenses\.js/],
    [
      'a module exporting something not made by defineLens',
      () => {
        const file = path.join(dir, 'handmade.mjs');
        writeFileSync(file, "export const lenses = [{ name: 'hand.made', sql: () => ({ text: 'SELECT 1', values: [] }) }];\n");
        return file;
      },
      /lenses\[0\] \(hand\.made\) is not made by defineLens/,
    ],
  ])('%s: the same message and exit code (78) as the worker', async (_what, modulePath, message) => {
    const env = { LENSFLEET_LENS_MODULES: modulePath(), REDIS_URL: redisUrl(), PORT: '0', LENSFLEET_METRICS_HOST: '127.0.0.1' };
    const [cli, worker] = await Promise.all([lensfleet(['lenses'], env), run([WORKER_ENTRY], env)]);
    expect(worker.code).toBe(78);
    expect(worker.output).toMatch(message);
    expect(cli.stderr).toMatch(message);
    expect(cli.code).toBe(78);
  });
});

describe('lensfleet tenants check', () => {
  const A = uniqueId('yChkA');
  const WRONG = uniqueId('yChkPw');
  const SILENT = uniqueId('yChkSil');
  const REST = uniqueId('yChkRest');
  const REST_BADKEY = uniqueId('yChkKey');
  const REST_SILENT = uniqueId('yChkRsil');
  const wrongPassword = `Wr0ng${randomBytes(6).toString('hex')}`;
  const silentPassword = `S1lent${randomBytes(6).toString('hex')}`;
  let tenants: Awaited<ReturnType<typeof createTenants>>;
  let rest: RestTenants;
  let silent: net.Server;
  const silentSockets = new Set<net.Socket>();
  let env: Record<string, string>;
  let badKey: string;
  let secrets: string[];

  beforeAll(async () => {
    [tenants, rest] = await Promise.all([createTenants([A], 5), startRestTenants([REST], 5)]);
    // A server that accepts connections and never says a word.
    silent = net.createServer((s) => {
      silentSockets.add(s);
      s.on('error', () => {});
      s.on('close', () => silentSockets.delete(s));
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const good = new URL(tenants.dbs[0]!.databaseUrl);
    const wrong = new URL(good.href);
    wrong.password = wrongPassword;
    const r = rest.tenants[0]!;
    badKey = await serviceKeyFor(randomBytes(32).toString('base64url'));
    env = {
      REDIS_URL: redisUrl(),
      // Far above --timeout-ms: the check's own deadline must end a silent server's connect.
      LENSFLEET_POOL_CONNECT_TIMEOUT_MS: '60000',
      LENSFLEET_TENANTS: [A, WRONG, SILENT, REST, REST_BADKEY, REST_SILENT].join(','),
      [`${A}_DATABASE_URL`]: good.href,
      [`${WRONG}_DATABASE_URL`]: wrong.href,
      [`${SILENT}_DATABASE_URL`]: `postgres://reader:${silentPassword}@127.0.0.1:${(silent.address() as net.AddressInfo).port}/nowhere`,
      [`${REST}_SUPABASE_URL`]: r.standIn.url,
      [`${REST}_SUPABASE_SERVICE_KEY`]: r.serviceKey,
      [`${REST_BADKEY}_SUPABASE_URL`]: r.standIn.url,
      [`${REST_BADKEY}_SUPABASE_SERVICE_KEY`]: badKey,
      [`${REST_SILENT}_SUPABASE_URL`]: `http://127.0.0.1:${(silent.address() as net.AddressInfo).port}`,
      [`${REST_SILENT}_SUPABASE_SERVICE_KEY`]: badKey,
    };
    secrets = [passwordOf(good.href), wrongPassword, silentPassword, r.serviceKey, badKey];
  });
  afterAll(async () => {
    for (const s of silentSockets) s.destroy();
    await new Promise<void>((resolve) => (silent ? silent.close(() => resolve()) : resolve()));
    await Promise.allSettled([tenants?.drop(), rest?.close()]);
  });

  interface Check {
    tenant: string;
    backend: string;
    server: string;
    ok: boolean;
    authOk: boolean | null;
    serverVersion: string | null;
    maxConnections: number | null;
    connections: number | null;
    tls: boolean | null;
    connectMs: number | null;
    roundTripMs: number | null;
    httpStatus?: number;
    code?: string;
    cause?: string;
    error?: string;
  }

  it('--json: each tenant’s server, version, max_connections, connections, TLS, latency and auth; the failures with the code a job would get; exit 1; no secret anywhere', async () => {
    const r = await lensfleet(['tenants', 'check', '--json', '--timeout-ms', '3000'], env);
    expect(r.code, r.output).toBe(1);
    const { tenants: checks, failed } = JSON.parse(r.stdout) as { tenants: Check[]; failed: number };
    const by = new Map(checks.map((c) => [c.tenant, c]));
    expect(failed).toBe(4);
    const a = by.get(A)!;
    expect(a).toMatchObject({ backend: 'pg', ok: true, authOk: true, tls: false, maxConnections: 300 });
    expect(a.server).toBe(`127.0.0.1:${new URL(tenants.dbs[0]!.databaseUrl).port}/${tenants.dbs[0]!.database}`);
    expect(a.serverVersion).toMatch(/^\d+(\.\d+)?/);
    expect(a.connections).toBeGreaterThanOrEqual(1);
    expect(a.roundTripMs).toBeGreaterThan(0);
    expect(a.connectMs).toBeGreaterThan(0);
    // A wrong password: the server's own code, and the code a job would fail with.
    expect(by.get(WRONG)).toMatchObject({ ok: false, authOk: false, code: 'CONNECTION_FAILED', cause: '28P01' });
    // A server that never answers: the per-tenant deadline, not a hang.
    expect(by.get(SILENT)).toMatchObject({ ok: false, authOk: null, code: 'CONNECT_TIMEOUT' });
    // Supabase over REST: the API answered and accepted the service key; a foreign key is refused.
    expect(by.get(REST)).toMatchObject({ backend: 'supabase', ok: true, authOk: true, tls: false, httpStatus: 404, maxConnections: null });
    expect(by.get(REST)!.roundTripMs).toBeGreaterThan(0);
    expect(by.get(REST_BADKEY)).toMatchObject({ backend: 'supabase', ok: false, authOk: false, code: 'AUTH_INVALID', httpStatus: 401 });
    // An API that accepts the connection and never answers: the deadline again.
    expect(by.get(REST_SILENT)).toMatchObject({ backend: 'supabase', ok: false, authOk: null, code: 'QUERY_TIMEOUT' });
    // One progress line per tenant on stderr.
    expect(r.stderr.match(/^\[\d\/6\] /gm)).toHaveLength(6);
    expect(r.stderr).toMatch(new RegExp(`\\[\\d/6\\] ${WRONG}: FAILED CONNECTION_FAILED \\(28P01\\)`));
    // The silent server cost its 3 s deadline (not the tenant's 60 s connect timeout), once.
    expect(r.ms).toBeLessThan(20_000);
    for (const s of secrets) expect(r.output).not.toContain(s);
  });

  it('as a table, failures listed with their message, no secret; --tenant checks only that one (exit 0 when it is fine)', async () => {
    const all = await lensfleet(['tenants', 'check', '--timeout-ms', '2000'], env);
    expect(all.code).toBe(1);
    expect(all.stdout).toMatch(/TENANT\s+BACKEND\s+SERVER\s+VERSION\s+MAX_CONN\s+CONNS\s+TLS\s+CONNECT_MS\s+RTT_MS\s+AUTH\s+RESULT/);
    expect(all.stdout).toMatch(new RegExp(`error: tenant ${WRONG}: CONNECTION_FAILED \\(28P01\\): .*password authentication failed`));
    expect(all.stdout).toContain('4 of 6 tenants failed');
    for (const s of secrets) expect(all.output).not.toContain(s);
    const one = await lensfleet(['tenants', 'check', '--tenant', A], env);
    expect(one.code, one.output).toBe(0);
    expect(one.stdout).toContain('every tenant is reachable and accepted its credentials (1)');
    expect(one.stderr).toContain(`[1/1] ${A}: ok`);
  });

  it('exit 2 on bad usage or an unknown --tenant; 78 on an invalid configuration (naming it, without the secret)', async () => {
    expect((await lensfleet(['tenants', 'check', '--tenant', 'yNOT_CONFIGURED'], env)).code).toBe(2);
    expect((await lensfleet(['tenants', 'check', '--timeout-ms', '0'], env)).code).toBe(2);
    expect((await lensfleet(['tenants', 'check', '--bogus'], env)).code).toBe(2);
    const bad = await lensfleet(['tenants', 'check'], { LENSFLEET_TENANTS: 't1', t1_DATABASE_URL: `http://u:${silentPassword}@db/t` });
    expect(bad.code).toBe(78);
    expect(bad.stderr).toContain('t1_DATABASE_URL must start with postgres://');
    expect(bad.output).not.toContain(silentPassword);
  });
});

describe('lensfleet enqueue --wait', () => {
  it('says on stderr what it waits for; stdout is the result alone', async () => {
    const A = uniqueId('yEnq');
    const tenants = await createTenants([A], 5);
    const w = await startTestWorker({ env: tenants.env, concurrency: 2 });
    onTestFinished(async () => {
      await w.close();
      await tenants.drop();
    });
    const r = await lensfleet(['enqueue', '--tenant', A, '--lens', 'receiving.recent', '--params', '{"limit":2}', '--wait'], {
      REDIS_URL: redisUrl(),
      LENSFLEET_QUEUE: w.queueName,
    });
    expect(r.code, r.output).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`^job \\d+ enqueued on ${w.queueName}; waiting for its result \\(at most 30000 ms\\)`));
    expect(JSON.parse(r.stdout)).toMatchObject({ rowCount: 2, tenant: A });
  });
});

describe('lensfleet queue', () => {
  let tenants: Awaited<ReturnType<typeof createTenants>>;
  let w: TestWorker;
  let env: Record<string, string>;
  const A = uniqueId('yQueue');

  beforeAll(async () => {
    tenants = await createTenants([A], 5);
    w = await startTestWorker({ env: tenants.env, concurrency: 4 });
    env = { REDIS_URL: redisUrl(), LENSFLEET_QUEUE: w.queueName };
    const jobs = await Promise.all([
      ...[1, 2, 3].map(() => enqueue(w.queue, { tenant: 'yNO_SUCH_TENANT', lens: 'receiving.recent', params: {} })),
      ...[1, 2].map(() => enqueue(w.queue, { tenant: A, lens: 'receiving.recent', params: { limit: 'many' } })),
      ...[1, 2].map(() => enqueue(w.queue, { tenant: A, lens: 'receiving.recent', params: { limit: 2 } })),
    ]);
    await Promise.all(jobs.map((j) => j.waitUntilFinished(w.events, 20_000).catch(() => {})));
    // No worker from here on: retried jobs stay waiting, where the test can count them.
    await w.service.close();
  });
  afterAll(async () => {
    await w?.close();
    await tenants?.drop();
  });

  interface QueueJson {
    queue: string;
    counts: Record<string, number>;
    failed: { code: string; count: number; retryable: boolean | null; sample: string; lastFailedAt: number | null }[];
  }
  const show = async () => {
    const r = await lensfleet(['queue', '--json'], env);
    expect(r.code, r.output).toBe(0);
    return JSON.parse(r.stdout) as QueueJson;
  };

  it('counts by state and the failed jobs grouped by the code their failedReason starts with', async () => {
    const q = await show();
    expect(q.queue).toBe(w.queueName);
    expect(q.counts).toMatchObject({ failed: 5, completed: 2, waiting: 0, active: 0 });
    expect(q.failed.map((g) => [g.code, g.count, g.retryable])).toEqual([
      ['TENANT_NOT_FOUND', 3, false],
      ['INVALID_PARAMS', 2, false],
    ]);
    expect(q.failed[0]!.sample).toMatch(/^TENANT_NOT_FOUND: tenant "yNO_SUCH_TENANT"/);
    expect(q.failed[0]!.lastFailedAt).toBeGreaterThan(Date.now() - 120_000);
    const text = await lensfleet(['queue'], env);
    expect(text.stdout).toMatch(/WAITING\s+PRIORITIZED\s+ACTIVE\s+DELAYED\s+WAITING-CHILDREN\s+PAUSED\s+FAILED\s+COMPLETED/);
    expect(text.stdout).toMatch(/TENANT_NOT_FOUND\s+3\s+no\s+/);
  });

  it('retry --code: --dry-run says how many and changes nothing; then the failed jobs of that code (only) go back to waiting', async () => {
    const dry = await lensfleet(['queue', 'retry', '--code', 'TENANT_NOT_FOUND', '--dry-run'], env);
    expect(dry.code, dry.output).toBe(0);
    expect(dry.stdout).toContain(`would retry 3 failed jobs with code TENANT_NOT_FOUND in queue ${w.queueName}`);
    expect((await show()).counts).toMatchObject({ failed: 5, waiting: 0 });
    const done = await lensfleet(['queue', 'retry', '--code', 'TENANT_NOT_FOUND', '--json'], env);
    expect(done.code, done.output).toBe(0);
    expect(JSON.parse(done.stdout)).toMatchObject({ action: 'retry', code: 'TENANT_NOT_FOUND', dryRun: false, matched: 3, changed: 3, errors: [] });
    const after = await show();
    expect(after.counts).toMatchObject({ failed: 2, waiting: 3 });
    // With their attempts reset: a retried job gets its whole retry budget again.
    const waiting = await w.queue.getWaiting();
    expect(waiting.map((j) => [j.data.tenant, j.attemptsMade, j.attemptsStarted])).toEqual([
      ['yNO_SUCH_TENANT', 0, 0],
      ['yNO_SUCH_TENANT', 0, 0],
      ['yNO_SUCH_TENANT', 0, 0],
    ]);
    expect(after.failed.map((g) => g.code)).toEqual(['INVALID_PARAMS']);
  });

  it('remove --code: --dry-run counts; then the failed jobs of that code are gone', async () => {
    const dry = await lensfleet(['queue', 'remove', '--code', 'INVALID_PARAMS', '--dry-run'], env);
    expect(dry.stdout).toContain('would remove 2 failed jobs with code INVALID_PARAMS');
    expect((await show()).counts.failed).toBe(2);
    const done = await lensfleet(['queue', 'remove', '--code', 'INVALID_PARAMS'], env);
    expect(done.code, done.output).toBe(0);
    expect(done.stdout).toContain('removed 2 failed jobs with code INVALID_PARAMS');
    const after = await show();
    expect(after.counts.failed).toBe(0);
    expect(after.failed).toEqual([]);
    // Nothing matching is no error.
    expect((await lensfleet(['queue', 'remove', '--code', 'POOL_TIMEOUT'], env)).stdout).toContain('removed 0 failed jobs');
  });

  it('exit 2: retry without --code, an unknown code, --code without an action; exit 1 when Redis cannot be read (without its password)', async () => {
    expect((await lensfleet(['queue', 'retry'], env)).code).toBe(2);
    const unknown = await lensfleet(['queue', 'retry', '--code', 'NOT_A_CODE'], env);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('--code NOT_A_CODE is not an error code');
    expect((await lensfleet(['queue', '--code', 'POOL_TIMEOUT'], env)).code).toBe(2);
    expect((await lensfleet(['queue', '--queue', 'bad:name'], env)).code).toBe(2);
    const { freePort } = await import('../dev/local/servers.js');
    const down = await lensfleet(['queue'], { ...env, REDIS_URL: `redis://:S3cretPass@127.0.0.1:${await freePort()}` });
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/cannot read queue .* from Redis at redis:\/\/127\.0\.0\.1:\d+/);
    expect(down.output).not.toContain('S3cretPass');
  });
});

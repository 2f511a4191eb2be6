/**
 * Supabase tenants end to end through a worker (issue 12 §3/§4): the processor verifies a job's
 * user token against the tenant's key before any request, then runs the lens's REST form with the
 * job's own token on the tenant's RestTenantPool from the registry. The stand-in (a PostgREST of
 * ours over the real tenant Postgres with its RLS) records every request, so "no request sent"
 * and "each request carried its own job's token" are read from what the server saw.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { signJwt, userTokenFor } from '../dev/postgrest/jwt.js';
import type { LensJob } from '../queues/producer.js';
import { defineLens } from '../src/lens.js';
import { createTenants, pgAdminUrl, startTestWorker, type TestWorker, uniqueId } from './support/harness.js';
import { METRIC_CONTRACT } from './support/metric-contract.js';
import { type RestTenant, type RestTenants, restTenantEnv, startRestTenants } from './support/rest-tenants.js';

const CANARY = 'CANARY-4d1c9e7b-rest-never-printed';
const ROWS = 20;
/** A Postgres tenant beside the Supabase ones. */
const P = uniqueId('yRwPg');
/** A Supabase tenant whose JWT secret here is not its project's (the stand-in of S). */
const W = uniqueId('yRwWrongKey');
/** A Supabase tenant with no JWT key here (the stand-in of S). */
const N = uniqueId('yRwNoKey');
const WRONG_SECRET = `wrong-secret-of-${W}-0123456789abcdef`;
/** A role the allowlist of S names but the tenant's login role is not granted: the server refuses it. */
const NOGRANT_ROLE = 'lf_rest_nogrant';

let rest: RestTenants;
let pgTenants: Awaited<ReturnType<typeof createTenants>>;
let S: RestTenant;
let T: RestTenant;
let w: TestWorker;

/** Service-only, with a REST form: a token on it is refused before anything is sent. */
const serviceOnly = defineLens({
  name: 'rest.service_only',
  params: z.object({}).strict(),
  sql: () => ({ text: 'SELECT id FROM receiving LIMIT 1', values: [] }),
  rest: (db) => db.from('receiving').select('id').limit(1),
});
/** A REST form with a bug. */
const broken = defineLens({
  name: 'rest.broken',
  params: z.object({}).strict(),
  sql: () => ({ text: 'SELECT 1', values: [] }),
  rest: () => {
    throw new Error('form bug');
  },
  auth: 'optional',
});

beforeAll(async () => {
  [rest, pgTenants] = await Promise.all([startRestTenants([uniqueId('yRwS'), uniqueId('yRwT')], ROWS), createTenants([P], ROWS)]);
  [S, T] = rest.tenants as [RestTenant, RestTenant];
  const admin = new pg.Client({ connectionString: pgAdminUrl() });
  await admin.connect();
  try {
    await admin.query(`DO $$ BEGIN CREATE ROLE ${NOGRANT_ROLE} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
  } finally {
    await admin.end();
  }
  const env = {
    ...restTenantEnv([S, T]),
    ...pgTenants.env,
    LENSFLEET_TENANTS: [S.id, T.id, P, W, N].join(','),
    [`${S.id}_JWT_ROLES`]: `authenticated,anon,${NOGRANT_ROLE}`,
    [`${W}_SUPABASE_URL`]: S.standIn.url,
    [`${W}_SUPABASE_SERVICE_KEY`]: S.serviceKey,
    [`${W}_JWT_SECRET`]: WRONG_SECRET,
    [`${N}_SUPABASE_URL`]: S.standIn.url,
    [`${N}_SUPABASE_SERVICE_KEY`]: S.serviceKey,
  };
  w = await startTestWorker({ env, concurrency: 4, lenses: [serviceOnly, broken] as never[] });
});
afterAll(async () => {
  await w?.close();
  await rest?.close();
  await pgTenants?.drop();
});

const userToken = (t: RestTenant, n: number, extra: Record<string, unknown> = {}, expiresIn: string | number = '1h') =>
  userTokenFor(t.jwtSecret, t.user(n).id, expiresIn, { canary: CANARY, ...extra });

const add = (tenant: string, lens: string, params: Record<string, unknown>, jwt?: string) =>
  w.queue.add(lens, { v: 1, tenant, lens, params, ...(jwt === undefined ? {} : { auth: { jwt } }) });

async function finished(job: LensJob): Promise<{ state: string; result?: unknown; reason?: string; job: LensJob }> {
  try {
    const result = await job.waitUntilFinished(w.events, 30_000);
    return { state: 'completed', result, job: (await w.queue.getJob(job.id!))! };
  } catch {
    const j = (await w.queue.getJob(job.id!))!;
    return { state: 'failed', reason: j.failedReason, job: j };
  }
}

type Row = { id: number; yacht_id: string; owner_id?: string };
const rowsOf = (r: { result?: unknown }) => (r.result as { rows: Row[] }).rows;
const http = (path: string) => fetch(`http://127.0.0.1:${w.service.port}${path}`);

describe('Supabase tenants through a worker', () => {
  it('a service job sees all the tenant’s rows, each of two users only theirs; every request carried its own job’s token, as sent', async () => {
    const [t1, t2] = [await userToken(S, 1), await userToken(S, 2)];
    S.standIn.clearRecords();
    const [svc, u1, u2] = await Promise.all([
      add(S.id, 'receiving.recent', { limit: 200 }).then(finished),
      add(S.id, 'receiving.recent', { limit: 200 }, t1).then(finished),
      add(S.id, 'receiving.recent', { limit: 200 }, t2).then(finished),
    ]);
    expect([svc.state, u1.state, u2.state]).toEqual(['completed', 'completed', 'completed']);
    expect(rowsOf(svc)).toHaveLength(ROWS);
    expect(rowsOf(u1)).toHaveLength(ROWS / 2);
    expect(rowsOf(u2)).toHaveLength(ROWS / 2);
    const ids1 = new Set(rowsOf(u1).map((r) => r.id));
    expect(rowsOf(u2).some((r) => ids1.has(r.id))).toBe(false);
    for (const r of [...rowsOf(svc), ...rowsOf(u1), ...rowsOf(u2)]) expect(r.yacht_id).toBe(S.id);
    expect(svc.result).toMatchObject({ tenant: S.id, lens: 'receiving.recent', rowCount: ROWS });
    // The server saw the service key once and each user's own token once, byte for byte.
    const seen = S.standIn.requests().map((r) => ({ token: r.token, role: r.role, rows: r.rows }));
    expect(seen).toHaveLength(3);
    expect(seen).toEqual(
      expect.arrayContaining([
        { token: S.serviceKey, role: 'service_role', rows: ROWS },
        { token: t1, role: 'authenticated', rows: ROWS / 2 },
        { token: t2, role: 'authenticated', rows: ROWS / 2 },
      ]),
    );
  });

  it('a finished job no longer stores a usable token: completed and failed Supabase jobs keep only a hash prefix', async () => {
    const token = await userToken(S, 1);
    const done = await add(S.id, 'receiving.recent', { limit: 1 }, token).then(finished);
    const failed = await add(S.id, 'receiving.recent', { limit: 1, nope: true }, token).then(finished);
    expect(done.state).toBe('completed');
    expect(failed.reason).toMatch(/^INVALID_PARAMS: /);
    for (const r of [done, failed]) {
      expect(JSON.stringify(r.job.data)).not.toContain(token);
      expect((r.job.data as { auth: { jwt: string } }).auth.jwt).toMatch(/^redacted:sha256:[0-9a-f]{12}$/);
    }
  });

  it('hostile tokens on a Supabase tenant: each fails once with its code, with no request sent; other tenants are unaffected; the canary is nowhere', async () => {
    const now = Math.floor(Date.now() / 1000);
    const cases: { name: string; tenant: string; lens?: string; token: string; code: string }[] = [
      { name: 'expired', tenant: S.id, token: await userToken(S, 1, {}, now - 3600), code: 'AUTH_EXPIRED' },
      {
        name: 'wrong key',
        tenant: S.id,
        token: await userTokenFor(WRONG_SECRET.replace('wrong', 'other'), S.user(1).id, '1h', { canary: CANARY }),
        code: 'AUTH_INVALID',
      },
      { name: 'another tenant’s valid token', tenant: S.id, token: await userToken(T, 1), code: 'AUTH_INVALID' },
      {
        name: 'role service_role (signed with the project’s secret)',
        tenant: S.id,
        token: await userToken(S, 1, { role: 'service_role' }),
        code: 'AUTH_ROLE_FORBIDDEN',
      },
      { name: 'the tenant’s own service key as a user token', tenant: S.id, token: S.serviceKey, code: 'AUTH_ROLE_FORBIDDEN' },
      { name: 'a token on a service-only lens', tenant: S.id, lens: 'rest.service_only', token: await userToken(S, 1), code: 'AUTH_NOT_ALLOWED' },
      { name: 'a tenant whose key here is not its project’s', tenant: W, token: await userToken(S, 1), code: 'AUTH_INVALID' },
      { name: 'a tenant with no key here', tenant: N, token: await userToken(S, 1), code: 'AUTH_NOT_CONFIGURED' },
    ];
    const sentBefore = S.standIn.requests().length;
    const opened = S.standIn.connectionsOpened();
    const results = await Promise.all(
      cases.map(async (c) => ({ c, r: await add(c.tenant, c.lens ?? 'receiving.recent', c.lens ? {} : { limit: 5 }, c.token).then(finished) })),
    );
    for (const { c, r } of results) {
      expect(r.state, c.name).toBe('failed');
      expect(r.reason, c.name).toMatch(new RegExp(`^${c.code}: `));
      expect(r.job.attemptsMade, c.name).toBe(1);
      for (const stored of [r.reason, JSON.stringify(r.job.data), JSON.stringify(r.job.stacktrace)]) {
        expect(stored, c.name).not.toContain(CANARY);
        expect(stored, c.name).not.toContain(c.token);
      }
    }
    // Refused before any request (and before any connection to the tenant's API).
    expect(S.standIn.requests().length).toBe(sentBefore);
    expect(S.standIn.connectionsOpened()).toBe(opened);
    // Other tenants (and the same ones, with good tokens) are unaffected.
    const after = await Promise.all([
      add(S.id, 'receiving.recent', { limit: 3 }, await userToken(S, 2)).then(finished),
      add(T.id, 'receiving.recent', { limit: 3 }, await userToken(T, 1)).then(finished),
      add(P, 'receiving.recent', { limit: 3 }).then(finished),
    ]);
    expect(after.map((r) => r.state)).toEqual(['completed', 'completed', 'completed']);
    const outputs = [await (await http('/metrics')).text(), await (await http('/pools')).text(), await (await http('/health')).text(), w.logs.text()];
    for (const text of outputs) {
      expect(text).not.toContain(CANARY);
      for (const { c } of results) expect(text).not.toContain(c.token);
    }
  });

  it('what the API refuses after the worker accepted the token: 401 → AUTH_INVALID, a role without the grant → AUTH_ROLE_FORBIDDEN; once each, one request each', async () => {
    // W's key here signs a token the project does not accept; S's allowlist names a role its login role may not become.
    const misconfigured = await userTokenFor(WRONG_SECRET, S.user(1).id, '1h', { canary: CANARY });
    const nogrant = await signJwt(S.jwtSecret, { sub: S.user(1).id, role: NOGRANT_ROLE, canary: CANARY });
    const before = S.standIn.requests().length;
    const [unauthorized, forbidden] = await Promise.all([
      add(W, 'receiving.recent', { limit: 5 }, misconfigured).then(finished),
      add(S.id, 'receiving.recent', { limit: 5 }, nogrant).then(finished),
    ]);
    expect(unauthorized.reason).toMatch(new RegExp(`^AUTH_INVALID: tenant ${W}: REST request failed with HTTP 401 \\(PGRST301\\)`));
    expect(unauthorized.reason).toContain(`${W}_JWT_SECRET`);
    expect(forbidden.reason).toMatch(/^AUTH_ROLE_FORBIDDEN: .*HTTP 403 \(42501\)/);
    for (const r of [unauthorized, forbidden]) {
      expect(r.job.attemptsMade).toBe(1);
      expect(r.reason).not.toContain(CANARY);
    }
    expect(S.standIn.requests().length - before).toBe(2);
  });

  it('a lens without a REST form fails LENS_BACKEND_UNSUPPORTED, a REST form that throws LENS_INVALID: once, nothing sent', async () => {
    const before = S.standIn.requests().length;
    const [unsupported, invalid] = await Promise.all([add(S.id, 'test.whoami', {}).then(finished), add(S.id, 'rest.broken', {}).then(finished)]);
    expect(unsupported.reason).toMatch(/^LENS_BACKEND_UNSUPPORTED: lens test\.whoami has no REST form/);
    expect(invalid.reason).toMatch(/^LENS_INVALID: lens rest\.broken could not build its REST query: form bug/);
    expect([unsupported.job.attemptsMade, invalid.job.attemptsMade]).toEqual([1, 1]);
    expect(S.standIn.requests().length).toBe(before);
  });

  it('a pg tenant and a Supabase tenant in one worker: both serve; /pools, /health and /metrics show both alike', async () => {
    const [onPg, onRest] = await Promise.all([
      add(P, 'receiving.recent', { limit: 200 }).then(finished),
      add(S.id, 'receiving.recent', { limit: 200 }).then(finished),
    ]);
    expect(rowsOf(onPg)).toHaveLength(ROWS);
    expect(rowsOf(onRest)).toHaveLength(ROWS);
    for (const r of rowsOf(onPg)) expect(r.yacht_id).toBe(P);
    for (const r of rowsOf(onRest)) expect(r.yacht_id).toBe(S.id);

    const { pools } = (await (await http('/pools')).json()) as { pools: Record<string, unknown>[] };
    const byTenant = new Map(pools.map((p) => [p.tenant as string, p]));
    const pgStats = byTenant.get(P)!;
    const restStats = byTenant.get(S.id)!;
    expect(pgStats.key).toBe(`${P}:service`);
    expect(restStats.key).toBe(`${S.id}:service`);
    expect(Object.keys(restStats).sort()).toEqual(Object.keys(pgStats).sort());
    // Clamped alike: maxSize 20 + maxOverflow 5 > concurrency 4.
    expect([pgStats.max, restStats.max]).toEqual([4, 4]);
    // Sockets opened so far (earlier tests ran jobs 4 at a time), never above the effective max.
    expect(restStats.connections_opened_total).toBeGreaterThanOrEqual(1);
    expect(restStats.connections_opened_total).toBeLessThanOrEqual(4);
    const health = (await (await http('/health')).json()) as { connection_pools: { pool_keys: string[] } };
    expect(health.connection_pools.pool_keys).toEqual(expect.arrayContaining([`${P}:service`, `${S.id}:service`]));

    const metrics = await (await http('/metrics')).text();
    const namesOf = (tenant: string) =>
      new Set(
        metrics
          .split('\n')
          .filter((l) => l.startsWith('lensfleet_pool_') && l.includes(`tenant="${tenant}"`))
          .map((l) => l.slice(0, l.search(/[{ ]/)).replace(/_(bucket|sum|count)$/, '')),
      );
    // Every per-tenant pool metric is exported for the REST pool as for the pg pool (the keyed
    // counters only once something was closed or failed, for either).
    const keyed = new Set(['lensfleet_pool_connections_closed_total', 'lensfleet_pool_connection_errors_total']);
    const expected = METRIC_CONTRACT.filter((m) => m.name.startsWith('lensfleet_pool_') && !keyed.has(m.name)).map((m) => m.name);
    expect([...namesOf(S.id)].filter((n) => !keyed.has(n)).sort()).toEqual([...expected].sort());
    expect([...namesOf(P)].filter((n) => !keyed.has(n)).sort()).toEqual([...expected].sort());
    expect(metrics).toContain(`lensfleet_pool_max_connections{tenant="${S.id}"} 4`);
    expect(metrics).toMatch(new RegExp(`lensfleet_pool_connections_opened_total\\{tenant="${S.id}"\\} [1-9]`));
  });
});

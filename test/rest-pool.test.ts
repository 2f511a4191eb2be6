/**
 * The REST backend: RestTenantPool (one keep-alive undici pool per Supabase tenant behind
 * supabase-js) and executeRestLens, against the PostgREST stand-in on real tenant Postgres.
 */
import { performance } from 'node:perf_hooks';
import { inspect } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { freePort } from '../dev/local/servers.js';
import { signJwt } from '../dev/postgrest/jwt.js';
import type { StandInFault } from '../dev/postgrest/server.js';
import type { LensfleetError } from '../src/errors.js';
import { executeLens } from '../src/execute.js';
import { defineLens, type Lens } from '../src/lens.js';
import { equipmentSearch, receivingRecent, workOrdersOpen } from '../src/lenses/maritime.js';
import { restFailureError, restStatusError } from '../src/rest/errors.js';
import { executeRestLens } from '../src/rest/execute.js';
import type { RestTenantPool } from '../src/rest/pool.js';
import { Secret } from '../src/secret.js';
import { makeTestPool, sleep, uniqueId, waitFor } from './support/harness.js';
import { makeRestPool, type RestTenant, type RestTenants, startRestTenants } from './support/rest-tenants.js';

let env: RestTenants;
let t: RestTenant;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  env = await startRestTenants([uniqueId('yRest')], 40);
  t = env.tenants[0]!;
});
afterEach(async () => {
  await Promise.race([Promise.allSettled(cleanups.splice(0).map((c) => c())), sleep(5000)]);
});
afterAll(async () => {
  await env?.close();
});

function pool(max: number, settings: Parameters<typeof makeRestPool>[2] = {}, extra: Parameters<typeof makeRestPool>[3] = {}) {
  const made = makeRestPool(t, max, settings, extra);
  cleanups.push(() => made.pool.close());
  return made;
}

const user = (n: number) => new Secret(t.user(n).token);

/** Run a lens and return the error it fails with (fails the test if it succeeds). */
async function failure<P>(p: RestTenantPool, lens: Lens<P>, params: P, token?: Secret): Promise<LensfleetError> {
  try {
    await executeRestLens(p, lens, params, token);
  } catch (err) {
    return err as LensfleetError;
  }
  throw new Error(`lens ${lens.name} succeeded`);
}

const owned = defineLens({
  name: 'rest.owned',
  params: z.object({ limit: z.number().int().default(100) }),
  sql: ({ limit }) => ({ text: 'SELECT id, yacht_id, owner_id FROM receiving ORDER BY id LIMIT $1', values: [limit] }),
  rest: (db, { limit }) => db.from('receiving').select('id, yacht_id, owner_id').order('id').limit(limit),
  maxRows: 200,
});
const sqlOnly = defineLens({ name: 'rest.sql_only', params: z.object({}), sql: () => ({ text: 'SELECT 1', values: [] }) });
const slow = defineLens({
  name: 'rest.slow',
  params: z.object({}),
  sql: () => ({ text: 'SELECT id FROM receiving LIMIT 1', values: [] }),
  rest: (db) => db.from('receiving').select('id').limit(1),
  timeoutMs: 300,
});
const tiny = defineLens({
  name: 'rest.tiny',
  params: z.object({}),
  sql: () => ({ text: 'SELECT id FROM receiving LIMIT 10', values: [] }),
  rest: (db) => db.from('receiving').select('id').order('id').limit(10),
  maxRows: 3,
});
const badColumn = defineLens({
  name: 'rest.bad_column',
  params: z.object({}),
  sql: () => ({ text: 'SELECT nope FROM receiving', values: [] }),
  rest: (db) => db.from('receiving').select('nope'),
});
const awaited = defineLens({
  name: 'rest.awaited',
  params: z.object({}),
  sql: () => ({ text: 'SELECT 1', values: [] }),
  // A form that sends the query itself: lensfleet could not bound or time it.
  rest: (db) =>
    db
      .from('receiving')
      .select('id')
      .then((r) => r) as never,
});
const throwing = defineLens({
  name: 'rest.throwing',
  params: z.object({}),
  sql: () => ({ text: 'SELECT 1', values: [] }),
  rest: () => {
    throw new Error('form bug');
  },
});

/** Rows of the SQL path and the REST path in one shape: ids as numbers, timestamps as epoch ms. */
function normalize(rows: Record<string, unknown>[]): Record<string, unknown>[] {
  return rows.map((r) =>
    Object.fromEntries(
      Object.entries(r).map(([k, v]) => [
        k,
        k === 'id' ? Number(v) : v instanceof Date ? v.getTime() : typeof v === 'string' && /^\d{4}-\d\d-\d\dT/.test(v) ? Date.parse(v) : v,
      ]),
    ),
  );
}

describe('the demo lenses over REST return what their SQL returns', () => {
  it.each([
    ['receiving.recent', receivingRecent, { limit: 7 }, 'receiving'],
    ['receiving.recent (status)', receivingRecent, { limit: 50, status: 'rejected' }, 'receiving'],
    ['equipment.search', equipmentSearch, { q: 'engine' }, 'equipment'],
    ['equipment.search (metacharacters)', equipmentSearch, { q: 'a,b.(c)"%_\\' }, 'equipment'],
    ['equipment.search (category)', equipmentSearch, { q: 'PROPULSION', limit: 200 }, 'equipment'],
    ['work_orders.open (priority)', workOrdersOpen, { priority: 'high', limit: 200 }, 'work_orders'],
  ] as [string, Lens<unknown>, unknown, string][])(
    '%s: same columns and rows as its SQL; as a user, only that user’s rows',
    async (_name, lens, raw, table) => {
      const rest = pool(2).pool;
      const made = makeTestPool(t.id, t.db.databaseUrl, { minSize: 0 }, 2);
      cleanups.push(() => made.pool.close());
      const params = lens.parse(raw);
      const sql = await executeLens(made.pool, lens, params);
      const service = await executeRestLens(rest, lens, params, undefined);
      expect(normalize(service.rows)).toEqual(normalize(sql.rows));
      if (!_name.includes('metacharacters')) expect(service.rowCount).toBeGreaterThan(0);
      const direct = await made.pool.acquire();
      const seen: number[] = [];
      try {
        for (const n of [1, 2]) {
          const mine = await executeRestLens(rest, lens, params, user(n));
          const owns = new Set(
            (await direct.query<{ id: string }>(`SELECT id FROM ${table} WHERE owner_id = $1`, [t.user(n).id])).rows.map((r) => Number(r.id)),
          );
          // The user's rows are the rows the service sees without the limit that this user owns, cut to the limit.
          const wide = await executeRestLens(rest, lens, lens.parse({ ...(raw as object), limit: 200 }), undefined);
          const expected = normalize(wide.rows)
            .filter((r) => owns.has(r.id as number))
            .slice(0, (params as { limit: number }).limit);
          expect(normalize(mine.rows)).toEqual(expected);
          seen.push(wide.rows.filter((r) => !owns.has(Number(r.id))).length);
        }
      } finally {
        made.pool.release(direct);
      }
      // Not vacuous: the service's rows include rows some user may not see.
      if (service.rowCount > 0) expect(Math.max(...seen)).toBeGreaterThan(0);
    },
  );

  it('work_orders.open without a priority: the same rows (PostgREST cannot order by urgency; documented)', async () => {
    const rest = pool(2).pool;
    const made = makeTestPool(t.id, t.db.databaseUrl, { minSize: 0 }, 2);
    cleanups.push(() => made.pool.close());
    const params = workOrdersOpen.parse({ limit: 200 });
    const sql = await executeLens(made.pool, workOrdersOpen, params);
    const viaRest = await executeRestLens(rest, workOrdersOpen, params, undefined);
    const byId = (a: Record<string, unknown>, b: Record<string, unknown>) => Number(a.id) - Number(b.id);
    expect(normalize(viaRest.rows).sort(byId)).toEqual(normalize(sql.rows).sort(byId));
    expect(Object.keys(viaRest.rows[0]!)).toEqual(['id', 'yacht_id', 'title', 'status', 'priority', 'due_at', 'equipment']);
  });
});

describe('identity per job', () => {
  it('a service job sees every row of its tenant; each user job only its own rows', async () => {
    const { pool: p } = pool(2);
    const all = await executeRestLens(p, owned, owned.parse({ limit: 200 }), undefined);
    expect(all.rowCount).toBe(40);
    expect(new Set(all.rows.map((r) => r.yacht_id))).toEqual(new Set([t.id]));
    let total = 0;
    for (const n of [1, 2]) {
      const mine = await executeRestLens(p, owned, owned.parse({ limit: 200 }), user(n));
      expect(mine.rowCount).toBeGreaterThan(0);
      expect(mine.rows.every((r) => r.owner_id === t.user(n).id)).toBe(true);
      total += mine.rowCount;
    }
    expect(total).toBe(40);
  });

  it("a user job's requests carry its token even when the query sets another Authorization header", async () => {
    const { pool: p } = pool(1);
    const impostor = defineLens({
      name: 'rest.impostor',
      params: z.object({}),
      sql: () => ({ text: 'SELECT 1', values: [] }),
      rest: (db) => db.from('receiving').select('owner_id').setHeader('Authorization', `Bearer ${t.serviceKey}`),
    });
    t.standIn.clearRecords();
    const r = await executeRestLens(p, impostor, {}, user(2));
    expect(r.rowCount).toBeGreaterThan(0);
    expect(r.rows.every((row) => row.owner_id === t.user(2).id)).toBe(true);
    expect(t.standIn.requests().map((x) => x.token)).toEqual([t.user(2).token]);
    // And a service job right after, on the same socket, is the service again.
    expect((await executeRestLens(p, owned, owned.parse({ limit: 200 }), undefined)).rowCount).toBe(40);
    expect(t.standIn.requests()[1]?.token).toBe(t.serviceKey);
  });

  it('keep-alive: sequential jobs reuse the sockets (at most max opened); pooling off opens one per request', async () => {
    const { pool: p } = pool(2);
    const before = t.standIn.connectionsOpened();
    for (let i = 0; i < 20; i++) await executeRestLens(p, owned, owned.parse({ limit: 1 }), i % 2 ? user(1) : undefined);
    expect(t.standIn.connectionsOpened() - before).toBeLessThanOrEqual(2);
    expect(p.stats().connections_opened_total).toBe(t.standIn.connectionsOpened() - before);

    const { pool: unpooled } = pool(2, {}, { pooling: false });
    const at = t.standIn.connectionsOpened();
    for (let i = 0; i < 3; i++) await executeRestLens(unpooled, owned, owned.parse({ limit: 1 }), undefined);
    expect(t.standIn.connectionsOpened() - at).toBe(3);
    await waitFor('the unpooled sockets to close', () => unpooled.stats().connections_closed_total.unpooled === 3);
  });
});

describe('lens forms', () => {
  it('a lens without a REST form fails with LENS_BACKEND_UNSUPPORTED (not retried) and sends nothing', async () => {
    const { pool: p } = pool(1);
    const before = t.standIn.requests().length;
    const err = await failure(p, sqlOnly, {});
    expect(err.code).toBe('LENS_BACKEND_UNSUPPORTED');
    expect(err.retryable).toBe(false);
    expect(err.message).toContain('rest.sql_only');
    expect(p.stats().requests_total).toBe(0);
    expect(t.standIn.requests().length).toBe(before);
  });

  it('a form that sends the query itself (its rows could not be bounded) or throws is LENS_INVALID (not retried), and takes no slot', async () => {
    const { pool: p } = pool(1);
    const err = await failure(p, awaited, {});
    expect(err.code).toBe('LENS_INVALID');
    expect(err.retryable).toBe(false);
    expect(err.message).toContain('unawaited');
    const thrown = await failure(p, throwing, {});
    expect(thrown).toMatchObject({ code: 'LENS_INVALID', details: { tenant: t.id, lens: 'rest.throwing' } });
    expect(thrown.message).toContain('form bug');
    expect(p.stats()).toMatchObject({ requests_total: 0, inUse: 0 });
  });
});

describe('bounded results', () => {
  it('RESULT_TOO_LARGE by rows: the server is asked for maxRows + 1 rows (Range), never more', async () => {
    const { pool: p } = pool(1);
    t.standIn.clearRecords();
    const err = await failure(p, tiny, {});
    expect(err.code).toBe('RESULT_TOO_LARGE');
    expect(err.retryable).toBe(false);
    expect(t.standIn.requests()).toMatchObject([{ range: '0-3', rows: 4, status: 200 }]);
  });

  it('RESULT_TOO_LARGE by bytes: a declared length over the cap, and a chunked body that grows over it', async () => {
    const { pool: p } = pool(1, {}, { maxResponseBytes: 600 });
    const ok = await executeRestLens(p, owned, owned.parse({ limit: 2 }), undefined);
    expect(ok.rowCount).toBe(2);
    const declared = await failure(p, owned, owned.parse({ limit: 40 }));
    expect(declared.code).toBe('RESULT_TOO_LARGE');
    expect(declared.message).toContain('600');
    t.standIn.injectFault({ status: 200, chunked: true, body: JSON.stringify(Array.from({ length: 100 }, (_, id) => ({ id }))) });
    const chunked = await failure(p, owned, owned.parse({ limit: 2 }));
    expect(chunked.code).toBe('RESULT_TOO_LARGE');
    expect(chunked.message).toContain('exceeded 600 bytes');
    expect(p.stats().inUse).toBe(0);
    // The pool still works (the cut response's socket was dropped, not reused).
    expect((await executeRestLens(p, owned, owned.parse({ limit: 2 }), undefined)).rowCount).toBe(2);
  });
});

describe('HTTP failures map onto the error codes, and nothing below BullMQ retries', () => {
  const cases: [string, StandInFault, string, boolean][] = [
    ['500', { status: 500, body: '{"code":"XX000","message":"internal"}' }, 'QUERY_FAILED_TRANSIENT', true],
    ['503 (database unreachable)', { status: 503, body: '{"code":"PGRST001","message":"Database client error"}' }, 'QUERY_FAILED_TRANSIENT', true],
    ['502 from a proxy, not JSON', { status: 502, body: '<html>bad gateway</html>' }, 'QUERY_FAILED_TRANSIENT', true],
    [
      '500 with 57014 (statement timeout)',
      { status: 500, body: '{"code":"57014","message":"canceling statement due to statement timeout"}' },
      'QUERY_TIMEOUT',
      true,
    ],
    ['429 (rate limited)', { status: 429, body: '{"message":"slow down"}' }, 'QUERY_FAILED_TRANSIENT', true],
    ['a connection reset', { destroy: true }, 'QUERY_FAILED_TRANSIENT', true],
    ['200 with a body that is not JSON', { status: 200, body: '<html>maintenance</html>' }, 'QUERY_FAILED_TRANSIENT', true],
    ['400', { status: 400, body: '{"code":"PGRST100","message":"bad filter"}' }, 'QUERY_FAILED', false],
    ['401 (JWT invalid)', { status: 401, body: '{"code":"PGRST301","message":"JWT invalid"}' }, 'AUTH_INVALID', false],
    ['401 (JWT expired)', { status: 401, body: '{"code":"PGRST303","message":"JWT expired"}' }, 'AUTH_EXPIRED', false],
    ['401 from the gateway (no PostgREST code)', { status: 401, body: '{"message":"Invalid API key"}' }, 'AUTH_INVALID', false],
    ['403 on a service request (a grant)', { status: 403, body: '{"code":"42501","message":"permission denied for table receiving"}' }, 'QUERY_FAILED', false],
    ['403 without a database code (a gateway)', { status: 403, body: '<html>forbidden</html>' }, 'QUERY_FAILED', false],
  ];
  it.each(cases)('%s → %s (retried: %s), one request sent', async (_what, fault, code, retryable) => {
    const { pool: p, events } = pool(1);
    const before = t.standIn.requests().length;
    t.standIn.injectFault(fault);
    const err = await failure(p, owned, owned.parse({}));
    expect(err.code).toBe(code);
    expect(err.retryable).toBe(retryable);
    expect(err.details).toMatchObject({ tenant: t.id, lens: 'rest.owned' });
    expect(t.standIn.requests().length - before).toBe(1);
    expect(p.stats().inUse).toBe(0);
    if (fault.destroy) expect(events.some((e) => e.type === 'connection_error' && e.kind === 'active')).toBe(true);
    // The next job on the same pool works.
    expect((await executeRestLens(p, owned, owned.parse({ limit: 1 }), undefined)).rowCount).toBe(1);
  });

  it('real server answers: a bad column → QUERY_FAILED (42703); a forged token → 401 → AUTH_INVALID; an expired one → AUTH_EXPIRED; a role the server refuses a user → 403 → AUTH_ROLE_FORBIDDEN', async () => {
    const { pool: p } = pool(1);
    const col = await failure(p, badColumn, {});
    expect(col).toMatchObject({ code: 'QUERY_FAILED', details: { httpStatus: 400, serverCode: '42703' } });
    const forged = await signJwt('not-the-tenant-secret-not-the-tenant', { sub: t.user(1).id, role: 'authenticated' });
    const bad = await failure(p, owned, owned.parse({}), new Secret(forged));
    expect(bad).toMatchObject({ code: 'AUTH_INVALID', details: { httpStatus: 401, serverCode: 'PGRST301' } });
    expect(bad.message).toContain(`${t.id}_JWT_SECRET`);
    const expired = await signJwt(t.jwtSecret, { sub: t.user(1).id, role: 'authenticated' }, Math.floor(Date.now() / 1000) - 60);
    expect(await failure(p, owned, owned.parse({}), new Secret(expired))).toMatchObject({ code: 'AUTH_EXPIRED', details: { httpStatus: 401 } });
    const postgres = await signJwt(t.jwtSecret, { sub: t.user(1).id, role: 'postgres' });
    const refused = await failure(p, owned, owned.parse({}), new Secret(postgres));
    expect(refused).toMatchObject({ code: 'AUTH_ROLE_FORBIDDEN', details: { httpStatus: 403, serverCode: '42501' } });
    expect(refused.retryable).toBe(false);
  });

  it('a refused privilege or role (42501, 0P*) is the user’s role on a user request (AUTH_ROLE_FORBIDDEN, also as anon’s 401) and the tenant’s grants on a service request (QUERY_FAILED)', () => {
    const ctx = { tenant: 't', lens: 'l' };
    const map = (status: number, code: string, who: 'service' | 'user') => restStatusError(status, JSON.stringify({ code, message: 'm' }), ctx, [], who).code;
    expect(map(403, '42501', 'user')).toBe('AUTH_ROLE_FORBIDDEN');
    expect(map(401, '42501', 'user')).toBe('AUTH_ROLE_FORBIDDEN');
    expect(map(403, '0P000', 'user')).toBe('AUTH_ROLE_FORBIDDEN');
    expect(map(403, '42501', 'service')).toBe('QUERY_FAILED');
    expect(map(401, '42501', 'service')).toBe('QUERY_FAILED');
    expect(map(401, 'PGRST301', 'service')).toBe('AUTH_INVALID');
    expect(restStatusError(401, '{}', ctx, [], 'service').message).toContain('t_SUPABASE_SERVICE_KEY');
  });

  it("QUERY_TIMEOUT after the lens's timeoutMs (the request is aborted; its slot comes back)", async () => {
    const { pool: p } = pool(1);
    t.standIn.injectFault({ delayMs: 3000 });
    const started = Date.now();
    const err = await failure(p, slow, slow.parse({}));
    expect(err.code).toBe('QUERY_TIMEOUT');
    expect(err.retryable).toBe(true);
    expect(err.message).toContain('within its 300 ms timeout');
    expect(Date.now() - started).toBeLessThan(2500);
    expect(p.stats().inUse).toBe(0);
    expect((await executeRestLens(p, owned, owned.parse({ limit: 1 }), undefined)).rowCount).toBe(1);
  });

  it('CONNECTION_FAILED when nothing listens (counted as a connect error); CONNECT_TIMEOUT from undici’s connect timeout code', async () => {
    const port = await freePort();
    const { pool: p } = pool(1, {}, { supabaseUrl: `http://127.0.0.1:${port}` });
    const err = await failure(p, owned, owned.parse({}));
    expect(err.code).toBe('CONNECTION_FAILED');
    expect(err.retryable).toBe(true);
    expect(p.stats().connection_errors_total).toEqual({ connect: 1 });
    const timeout = restFailureError(new TypeError('fetch failed', { cause: Object.assign(new Error('x'), { code: 'UND_ERR_CONNECT_TIMEOUT' }) }), {
      tenant: 't',
    });
    expect(timeout.code).toBe('CONNECT_TIMEOUT');
  });

  it('the service key and user tokens never appear in error messages, details, stats or events, even when the server echoes them', async () => {
    const { pool: p, events } = pool(1);
    const token = t.user(1).token;
    const [, payload] = token.split('.');
    t.standIn.injectFault({
      status: 401,
      body: JSON.stringify({ code: 'PGRST301', message: `bad key ${t.serviceKey} for token ${token}; payload ${payload}` }),
    });
    const echoed = await failure(p, owned, owned.parse({}), user(1));
    t.standIn.injectFault({ destroy: true });
    const reset = await failure(p, owned, owned.parse({}), user(1));
    const forged = await signJwt('not-the-tenant-secret-not-the-tenant', { sub: 'canary', role: 'authenticated' });
    const bad = await failure(p, owned, owned.parse({}), new Secret(forged));
    const outputs = [echoed, reset, bad].flatMap((e) => [e.message, String(e), JSON.stringify(e.details), inspect(e, { depth: 5 })]);
    outputs.push(JSON.stringify(p.stats()), JSON.stringify(events), inspect(p, { depth: 3 }));
    for (const text of outputs) {
      for (const secret of [t.serviceKey, token, payload!, forged]) expect(text).not.toContain(secret);
    }
    expect(echoed.message).toContain('[REDACTED]');
  });
});

describe('bounded waiting and stats', () => {
  it('stats() while requests are in flight and waiting, and after (same shape as TenantPool.stats)', async () => {
    const { pool: p } = pool(2);
    t.standIn.injectFault({ delayMs: 600 }, 4);
    const jobs = Array.from({ length: 4 }, () => executeRestLens(p, owned, owned.parse({ limit: 1 }), undefined));
    await waitFor('2 in use and 2 waiting', () => {
      const s = p.stats();
      return s.inUse === 2 && s.waiting === 2;
    });
    expect(p.busy).toBe(true);
    await Promise.all(jobs);
    // undici marks a socket free a moment after its response body ended.
    await waitFor('sockets idle', () => p.stats().idle === p.stats().size);
    const s = p.stats();
    expect(s).toMatchObject({ inUse: 0, waiting: 0, requests_total: 4, max: 2, acquire_timeouts_total: 0, pool_busy_total: 0 });
    expect(s.size).toBeLessThanOrEqual(2);
    expect(s.idle).toBe(s.size);
    expect(s.requests_wait_ms_total).toBeGreaterThan(400);
    expect(p.busy).toBe(false);
    const made = makeTestPool(t.id, t.db.databaseUrl, { minSize: 0 }, 1);
    cleanups.push(() => made.pool.close());
    expect(Object.keys(s).sort()).toEqual(Object.keys(made.pool.stats()).sort());
  });

  it('POOL_TIMEOUT after acquireTimeoutMs with the pool numbers; the late slot goes to nobody', async () => {
    const { pool: p } = pool(1, { acquireTimeoutMs: 200 });
    t.standIn.injectFault({ delayMs: 1200 });
    const first = executeRestLens(p, owned, owned.parse({ limit: 1 }), undefined);
    await waitFor('the first request in flight', () => p.stats().inUse === 1);
    const err = await failure(p, owned, owned.parse({}));
    expect(err.code).toBe('POOL_TIMEOUT');
    expect(err.retryable).toBe(true);
    expect(err.message).toMatch(/timed out after 200 ms .*active=1, .*waiting=0, max=1/);
    expect(p.stats()).toMatchObject({ acquire_timeouts_total: 1, waiting: 0 });
    expect((await first).rowCount).toBe(1);
    expect(p.stats()).toMatchObject({ inUse: 0, waiting: 0 });
  });

  it("a lens's timeout bounds the wait for a request slot and the request together: the wait is cut at it (POOL_TIMEOUT), the request gets what is left (QUERY_TIMEOUT)", async () => {
    const budget = defineLens({
      name: 'rest.budget',
      params: z.object({}),
      sql: () => ({ text: 'SELECT id FROM receiving LIMIT 1', values: [] }),
      rest: (db) => db.from('receiving').select('id').limit(1),
      timeoutMs: 2000,
    });
    // acquireTimeoutMs 10 s: only the lens's 2 s can cut the wait.
    const { pool: p } = pool(1, { acquireTimeoutMs: 10_000 });
    const held = await p.acquire();
    let started = performance.now();
    const waited = await failure(p, budget, {});
    expect(waited.code).toBe('POOL_TIMEOUT');
    expect(waited.message).toMatch(/timed out after 2000 ms /);
    expect(performance.now() - started).toBeLessThan(4000);
    expect(p.stats().waiting).toBe(0);

    // 1.2 s of waiting leave 0.8 s for a request the server holds for 5 s: ~2 s in all, not 3.2 s.
    t.standIn.injectFault({ delayMs: 5000 });
    setTimeout(() => held.release(), 1200);
    started = performance.now();
    const late = await failure(p, budget, {});
    const elapsed = performance.now() - started;
    expect(late.code).toBe('QUERY_TIMEOUT');
    expect(late.message).toMatch(/within its 2000 ms timeout \(1[0-9]{3} ms of them spent waiting for a request slot\)/);
    expect(elapsed).toBeGreaterThanOrEqual(1900);
    expect(elapsed).toBeLessThan(2900);
    expect(p.stats()).toMatchObject({ inUse: 0, waiting: 0 });
  });

  it('POOL_BUSY at once when maxWaiting requests already wait', async () => {
    const { pool: p } = pool(1, { maxWaiting: 1 });
    t.standIn.injectFault({ delayMs: 500 }, 2);
    const inFlight = executeRestLens(p, owned, owned.parse({ limit: 1 }), undefined);
    const queued = executeRestLens(p, owned, owned.parse({ limit: 1 }), undefined);
    await waitFor('one waiting', () => p.stats().waiting === 1);
    const err = await failure(p, owned, owned.parse({}));
    expect(err.code).toBe('POOL_BUSY');
    expect(err.retryable).toBe(true);
    expect(p.stats().pool_busy_total).toBe(1);
    expect((await inFlight).rowCount).toBe(1);
    expect((await queued).rowCount).toBe(1);
  });

  it('close() is idempotent: waiting requests fail with POOL_CLOSED, the one in flight finishes, later ones fail', async () => {
    const { pool: p } = pool(1);
    t.standIn.injectFault({ delayMs: 400 });
    const inFlight = executeRestLens(p, owned, owned.parse({ limit: 1 }), undefined);
    await waitFor('in flight', () => p.stats().inUse === 1);
    const queued = failure(p, owned, owned.parse({}));
    await waitFor('one waiting', () => p.stats().waiting === 1);
    const closing = p.close();
    expect(p.close()).toBe(closing);
    expect((await queued).code).toBe('POOL_CLOSED');
    expect((await inFlight).rowCount).toBe(1);
    await closing;
    expect(p.closed).toBe(true);
    expect((await failure(p, owned, owned.parse({}))).code).toBe('POOL_CLOSED');
    expect(p.stats()).toMatchObject({ size: 0, inUse: 0, waiting: 0 });
  });
});

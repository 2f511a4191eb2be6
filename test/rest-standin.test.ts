/**
 * The PostgREST stand-in speaks the part of PostgREST's protocol the lenses use, on the real
 * tenant Postgres with its RLS policies: identity goes HTTP → verified JWT → role and claims →
 * policy. Expected rows come from the same database read directly with SQL.
 */
import pg from 'pg';
import { Client } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signJwt, userTokenFor } from '../dev/postgrest/jwt.js';
import { pgAdminUrl, uniqueId } from './support/harness.js';
import { type RestTenant, type RestTenants, startRestTenants } from './support/rest-tenants.js';

let env: RestTenants;
let t: RestTenant;
/** The tenant database as its login role (bypasses RLS): the expected answers. */
let direct: pg.Client;

beforeAll(async () => {
  env = await startRestTenants([uniqueId('yStand')], 12);
  t = env.tenants[0]!;
  // Rows with NULLs (the seed has none) for is.null and nullsfirst/nullslast.
  const admin = new pg.Client({ connectionString: Object.assign(new URL(pgAdminUrl()), { pathname: `/${t.db.database}` }).toString() });
  await admin.connect();
  await admin.query(
    `INSERT INTO equipment (yacht_id, name, category, location, serial_number, owner_id) VALUES ($1, 'Spare pump', 'safety', NULL, NULL, NULL), ($1, 'Anchor winch', 'deck', NULL, 'SN-X', NULL)`,
    [t.id],
  );
  await admin.end();
  direct = new pg.Client({ connectionString: t.db.databaseUrl });
  await direct.connect();
});
afterAll(async () => {
  await direct?.end();
  await env?.close();
});

interface Answer {
  status: number;
  body: unknown;
  headers: Headers;
}

async function get(
  path: string,
  opts: { token?: string | null; apikey?: string | null; headers?: Record<string, string>; method?: string } = {},
): Promise<Answer> {
  const headers: Record<string, string> = { ...opts.headers };
  const apikey = opts.apikey === undefined ? t.serviceKey : opts.apikey;
  if (apikey !== null) headers.apikey = apikey;
  const token = opts.token === undefined ? t.serviceKey : opts.token;
  if (token !== null) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(`${t.standIn.url}/rest/v1/${path}`, { method: opts.method ?? 'GET', headers });
  const text = await res.text();
  return { status: res.status, body: text === '' ? undefined : JSON.parse(text), headers: res.headers };
}

const ids = (a: Answer) => (a.body as { id: number }[]).map((r) => Number(r.id));
async function sqlIds(sql: string, values: unknown[] = []): Promise<number[]> {
  return (await direct.query<{ id: string }>(sql, values)).rows.map((r) => Number(r.id));
}

describe('identity: JWT → role and claims → RLS', () => {
  it('a service_role token sees every row of its tenant; each user token only the rows RLS gives that user', async () => {
    const all = await get('receiving?select=id,owner_id&order=id');
    expect(all.status).toBe(200);
    expect(ids(all)).toEqual(await sqlIds('SELECT id FROM receiving ORDER BY id'));
    const seen: number[] = [];
    for (const n of [1, 2]) {
      const u = t.user(n);
      const mine = await get('receiving?select=id,owner_id&order=id', { token: u.token });
      expect(mine.status).toBe(200);
      const rows = mine.body as { id: number; owner_id: string }[];
      expect(rows.length).toBeGreaterThan(0);
      expect(rows.every((r) => r.owner_id === u.id)).toBe(true);
      expect(ids(mine)).toEqual(await sqlIds('SELECT id FROM receiving WHERE owner_id = $1 ORDER BY id', [u.id]));
      seen.push(...ids(mine));
    }
    expect(seen.sort((a, b) => a - b)).toEqual(ids(all));
    const roles = t.standIn
      .requests()
      .slice(-3)
      .map((r) => r.role);
    expect(roles).toEqual(['service_role', 'authenticated', 'authenticated']);
  });

  it('a token without a role claim runs as anon, which no policy admits: no rows', async () => {
    const anon = await signJwt(t.jwtSecret, { iss: 'supabase' });
    const r = await get('receiving?select=id', { token: anon });
    expect(r.status).toBe(200);
    expect(r.body).toEqual([]);
    expect(t.standIn.requests().at(-1)?.role).toBe('anon');
  });

  it('without Authorization the apikey is the token (a user key as apikey reads as that user)', async () => {
    const u = t.user(1);
    const r = await get('receiving?select=owner_id', { token: null, apikey: u.token });
    expect(r.status).toBe(200);
    expect((r.body as { owner_id: string }[]).every((x) => x.owner_id === u.id)).toBe(true);
  });
});

describe('horizontal filtering', () => {
  const cases: [string, string, unknown[]][] = [
    ['status=eq.pending', "status = 'pending'", []],
    ['status=neq.pending', "status <> 'pending'", []],
    ['id=gt.3&id=lte.7', 'id > 3 AND id <= 7', []],
    ['id=gte.3&id=lt.5', 'id >= 3 AND id < 5', []],
    ['supplier=ilike.*harbour*', "supplier ILIKE '%harbour%'", []],
    ['supplier=like.Ocean*', "supplier LIKE 'Ocean%'", []],
    ['status=in.(pending,rejected)', "status IN ('pending', 'rejected')", []],
    [`supplier=${encodeURIComponent('in.("Deck & Rigging Co","Marine Parts Ltd")')}`, "supplier IN ('Deck & Rigging Co', 'Marine Parts Ltd')", []],
    ['supplier=in.("a,b",x)', 'false', []],
    ['status=not.in.(pending)', "status <> 'pending'", []],
    ['status=not.eq.pending&id=lt.9', "status <> 'pending' AND id < 9", []],
    ['or=(status.eq.pending,and(id.gt.10,status.eq.received))', "status = 'pending' OR (id > 10 AND status = 'received')", []],
    ['not.or=(status.eq.pending,status.eq.rejected)', "NOT (status = 'pending' OR status = 'rejected')", []],
    [`or=${encodeURIComponent('(supplier.eq."Deck & Rigging Co",id.eq.1)')}`, "supplier = 'Deck & Rigging Co' OR id = 1", []],
    ['or=(supplier.ilike."*ocean*",status.in.(rejected))', "supplier ILIKE '%ocean%' OR status = 'rejected'", []],
    ['or=(id.eq.2,not.and(id.gt.3,id.lt.12))', 'id = 2 OR NOT (id > 3 AND id < 12)', []],
  ];
  it.each(cases)('receiving?%s returns the rows of WHERE %s', async (query, where, values) => {
    const r = await get(`receiving?select=id&order=id&${query}`);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(ids(r)).toEqual(await sqlIds(`SELECT id FROM receiving WHERE ${where} ORDER BY id`, values));
  });

  it('is.null and not.is.null', async () => {
    const nulls = await get('equipment?select=id&order=id&location=is.null');
    expect(ids(nulls)).toEqual(await sqlIds('SELECT id FROM equipment WHERE location IS NULL ORDER BY id'));
    expect(ids(nulls)).toHaveLength(2);
    const notNull = await get('equipment?select=id&order=id&location=not.is.null');
    expect(ids(notNull)).toEqual(await sqlIds('SELECT id FROM equipment WHERE location IS NOT NULL ORDER BY id'));
  });
});

describe('ordering, limits and the Range header', () => {
  it('order by several columns, asc/desc, nullsfirst/nullslast', async () => {
    for (const [order, sql] of [
      ['status.asc,id.desc', 'status ASC, id DESC'],
      ['received_at.desc', 'received_at DESC'],
    ] as const) {
      expect(ids(await get(`receiving?select=id&order=${order}`))).toEqual(await sqlIds(`SELECT id FROM receiving ORDER BY ${sql}`));
    }
    for (const [order, sql] of [
      ['serial_number.asc.nullsfirst,id', 'serial_number ASC NULLS FIRST, id'],
      ['serial_number.desc.nullslast,id', 'serial_number DESC NULLS LAST, id'],
      ['location.desc,id', 'location DESC, id'],
    ] as const) {
      expect(ids(await get(`equipment?select=id&order=${order}`))).toEqual(await sqlIds(`SELECT id FROM equipment ORDER BY ${sql}`));
    }
  });

  it('limit and offset; the Range header intersected with them (Content-Range answers); an empty range is 416', async () => {
    const page = await get('receiving?select=id&order=id&limit=3&offset=2');
    expect(ids(page)).toEqual([3, 4, 5]);
    expect(page.headers.get('content-range')).toBe('2-4/*');
    const both = await get('receiving?select=id&order=id&limit=3', { headers: { 'Range-Unit': 'items', Range: '0-4' } });
    expect(ids(both)).toEqual([1, 2, 3]);
    const header = await get('receiving?select=id&order=id&limit=10', { headers: { Range: '0-1' } });
    expect(ids(header)).toEqual([1, 2]);
    const open = await get('receiving?select=id&order=id', { headers: { Range: '10-' } });
    expect(ids(open)).toEqual([11, 12]);
    const empty = await get('receiving?select=id&order=id&limit=2', { headers: { Range: '5-9' } });
    expect(empty.status).toBe(416);
    expect(empty.body).toMatchObject({ code: 'PGRST103' });
    const none = await get('receiving?select=id&id=gt.1000');
    expect(none.headers.get('content-range')).toBe('*/*');
    expect(none.body).toEqual([]);
  });
});

describe('vertical filtering and embedding', () => {
  it('columns, aliases and *', async () => {
    const r = await get('receiving?select=ref:reference,id&order=id&limit=1');
    expect(r.body).toEqual([{ ref: 'PO-000001', id: 1 }]);
    const star = (await get('equipment?select=*&order=id&limit=1')).body as Record<string, unknown>[];
    expect(Object.keys(star[0]!)).toEqual(['id', 'yacht_id', 'name', 'category', 'location', 'serial_number', 'owner_id']);
  });

  it('a to-one embed is an object (by table or by FK column), a spread its columns, a to-many embed an array', async () => {
    const expected = (
      await direct.query<{ id: string; name: string; eid: string }>(
        'SELECT w.id, e.name, e.id AS eid FROM work_orders w JOIN equipment e ON e.id = w.equipment_id ORDER BY w.id LIMIT 3',
      )
    ).rows;
    const byTable = await get('work_orders?select=id,equipment(name,id)&order=id&limit=3');
    expect(byTable.body).toEqual(expected.map((r) => ({ id: Number(r.id), equipment: { name: r.name, id: Number(r.eid) } })));
    const byColumn = await get('work_orders?select=id,equipment_id(name)&order=id&limit=3');
    expect(byColumn.body).toEqual(expected.map((r) => ({ id: Number(r.id), equipment_id: { name: r.name } })));
    const spread = await get('work_orders?select=id,...equipment(equipment:name)&order=id&limit=3');
    expect(spread.body).toEqual(expected.map((r) => ({ id: Number(r.id), equipment: r.name })));
    const toMany = (await get('equipment?select=id,work_orders(id)&order=id&limit=2')).body as { id: number; work_orders: { id: number }[] }[];
    for (const e of toMany) {
      expect(e.work_orders.map((w) => w.id).sort((a, b) => a - b)).toEqual(
        await sqlIds('SELECT id FROM work_orders WHERE equipment_id = $1 ORDER BY id', [e.id]),
      );
    }
    const unrelated = await get('work_orders?select=id,receiving(id)');
    expect(unrelated.status).toBe(400);
    expect(unrelated.body).toMatchObject({ code: 'PGRST200' });
  });

  it('an embedded table is read under the same policies (a user sees only their own equipment embedded)', async () => {
    const u = t.user(1);
    const rows = (await get('work_orders?select=id,owner_id,equipment(owner_id)&order=id', { token: u.token })).body as {
      owner_id: string;
      equipment: { owner_id: string } | null;
    }[];
    expect(rows.length).toBeGreaterThan(0);
    for (const r of rows) {
      expect(r.owner_id).toBe(u.id);
      if (r.equipment !== null) expect(r.equipment.owner_id).toBe(u.id);
    }
  });

  it('Accept: application/vnd.pgrst.object+json returns one object, or 406 PGRST116', async () => {
    const one = await get('receiving?select=id&id=eq.4', { headers: { Accept: 'application/vnd.pgrst.object+json' } });
    expect(one.status).toBe(200);
    expect(one.body).toEqual({ id: 4 });
    const many = await get('receiving?select=id', { headers: { Accept: 'application/vnd.pgrst.object+json' } });
    expect(many.status).toBe(406);
    expect(many.body).toMatchObject({ code: 'PGRST116' });
  });
});

describe("errors in PostgREST's shape and status codes", () => {
  it.each([
    ['an unknown table', 'nope?select=id', 404, 'PGRST205'],
    ['an unknown column', 'receiving?select=nope', 400, '42703'],
    ['an unknown filter column', 'receiving?nope=eq.1', 400, '42703'],
    ['an unknown operator', 'receiving?id=foo.1', 400, 'PGRST100'],
    ['a malformed logic tree', 'receiving?or=(id.eq.1', 400, 'PGRST100'],
    ['a value of the wrong type', 'receiving?id=eq.abc', 400, '22P02'],
    ['a negative limit', 'receiving?limit=-1', 400, 'PGRST100'],
  ])('%s: %s → %i %s', async (_what, path, status, code) => {
    const r = await get(path);
    expect(r.status).toBe(status);
    expect(r.body).toMatchObject({ code, message: expect.any(String) });
    expect(Object.keys(r.body as object).sort()).toEqual(['code', 'details', 'hint', 'message']);
  });

  it('401 without an API key, for a bad signature (PGRST301, WWW-Authenticate) and an expired token (PGRST303)', async () => {
    expect((await get('receiving', { apikey: null, token: null })).status).toBe(401);
    const forged = await userTokenFor('another-secret-another-secret-xx', t.user(1).id);
    const bad = await get('receiving', { token: forged });
    expect(bad.status).toBe(401);
    expect(bad.body).toMatchObject({ code: 'PGRST301' });
    expect(bad.headers.get('www-authenticate')).toMatch(/^Bearer error="invalid_token"/);
    const expired = await userTokenFor(t.jwtSecret, t.user(1).id, Math.floor(Date.now() / 1000) - 60);
    const old = await get('receiving', { token: expired });
    expect(old.status).toBe(401);
    expect(old.body).toMatchObject({ code: 'PGRST303' });
    expect(t.standIn.requests().at(-1)?.role).toBeUndefined();
  });

  it('403 for a role the authenticator may not become (42501); 405 for a write; 406 for another schema', async () => {
    const postgres = await signJwt(t.jwtSecret, { role: 'postgres' });
    const r = await get('receiving', { token: postgres });
    expect(r.status).toBe(403);
    expect(r.body).toMatchObject({ code: '42501' });
    expect((await get('receiving', { method: 'POST' })).status).toBe(405);
    expect((await get('receiving', { headers: { 'Accept-Profile': 'auth' } })).status).toBe(406);
  });
});

describe('records and faults (for tests)', () => {
  it('records every TCP connection opened and every request with its bearer token, range and row count', async () => {
    const before = t.standIn.connectionsOpened();
    t.standIn.clearRecords();
    // A new connection of its own (fetch would reuse a kept-alive one).
    const client = new Client(t.standIn.url);
    const res = await client.request({
      method: 'GET',
      path: '/rest/v1/receiving?select=id&limit=2',
      headers: { apikey: t.serviceKey, Authorization: `Bearer ${t.user(2).token}`, Range: '0-5', 'X-Request-Id': 'r-1' },
    });
    await res.body.text();
    await client.close();
    expect(t.standIn.connectionsOpened()).toBe(before + 1);
    expect(t.standIn.requests()).toEqual([
      {
        method: 'GET',
        path: '/rest/v1/receiving?select=id&limit=2',
        token: t.user(2).token,
        requestId: 'r-1',
        range: '0-5',
        role: 'authenticated',
        rows: 2,
        status: 200,
      },
    ]);
  });

  it('injected faults: a status with a body, a destroyed socket, a delay', async () => {
    t.standIn.injectFault({ status: 503, body: '{"code":"PGRST001","message":"down"}' });
    const down = await get('receiving');
    expect(down.status).toBe(503);
    expect(down.body).toEqual({ code: 'PGRST001', message: 'down' });
    t.standIn.injectFault({ destroy: true });
    await expect(get('receiving')).rejects.toThrow();
    expect(t.standIn.requests().at(-1)?.status).toBe(0);
    t.standIn.injectFault({ delayMs: 300 });
    const started = Date.now();
    expect((await get('receiving?select=id&limit=1')).status).toBe(200);
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
  });
});

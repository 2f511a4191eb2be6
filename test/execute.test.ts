/**
 * executeLens on real Postgres: one checked-out connection per lens run, a named prepared
 * statement per lens SQL, released exactly once — kept when the result is merely too large,
 * destroyed on a query error — and a lens with its own statement timeout inside a read-only
 * transaction.
 */
import { performance } from 'node:perf_hooks';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { LensfleetError } from '../src/errors.js';
import { executeLens } from '../src/execute.js';
import { defineLens } from '../src/lens.js';
import type { TenantPool } from '../src/pool/tenant-pool.js';
import { admin, createTenants, makeTestPool, pgAdminUrl, sleep, uniqueId, waitFor, type TestPool } from './support/harness.js';

const TENANT = uniqueId('yExec');

let tenants: Awaited<ReturnType<typeof createTenants>>;
let databaseUrl: string;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  tenants = await createTenants([TENANT], 8);
  databaseUrl = tenants.dbs[0]!.databaseUrl;
});
afterEach(async () => {
  await Promise.race([Promise.allSettled(cleanups.splice(0).map((c) => c())), sleep(5000)]);
});
afterAll(async () => {
  await tenants?.drop();
});

function makePool(max: number, overrides: Parameters<typeof makeTestPool>[2] = {}, pooling = true): TestPool {
  const made = makeTestPool(TENANT, databaseUrl, { minSize: 0, ...overrides }, max, undefined, pooling);
  cleanups.push(() => made.pool.close());
  return made;
}

/** The backend pid of the connection the pool hands out next (with max 1: its only connection). */
async function backendPid(pool: TenantPool): Promise<number> {
  const c = await pool.acquire();
  try {
    return (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
  } finally {
    pool.release(c);
  }
}

const recent = defineLens({
  name: 'exec.recent',
  params: z.object({ limit: z.number().int().min(1).max(50) }),
  sql: ({ limit }) => ({ text: 'SELECT id, yacht_id FROM receiving ORDER BY id LIMIT $1', values: [limit] }),
  maxRows: 5,
});

const failing = defineLens({
  name: 'exec.failing',
  params: z.object({ d: z.number() }),
  sql: ({ d }) => ({ text: 'SELECT 1 / $1::int AS x', values: [d] }),
});

/** pg_sleep under the pool's statement timeout (5 s): no lens deadline cuts the wait before it. */
const sleeper = defineLens({
  name: 'exec.sleeper',
  params: z.object({ seconds: z.number() }),
  sql: ({ seconds }) => ({ text: 'SELECT pg_sleep($1::float8) AS slept', values: [seconds] }),
});

const unsendable = defineLens({
  name: 'exec.unsendable',
  params: z.object({}),
  sql: () => ({ text: 'SELECT $1::jsonb AS j', values: [{ n: 1n }] }),
});

const ownTimeout = defineLens({
  name: 'exec.own_timeout',
  params: z.object({ seconds: z.number() }),
  sql: ({ seconds }) => ({
    text: "SELECT pg_sleep($1::float8) AS slept, current_setting('statement_timeout') AS st, current_setting('transaction_read_only') AS ro",
    values: [seconds],
  }),
  timeoutMs: 300,
});

describe('executeLens', () => {
  it('runs lens SQL as a named prepared statement: parsed once per connection, reused by the next job', async () => {
    const { pool } = makePool(1);
    const name = recent.query({ limit: 1 }).name;
    const first = await executeLens(pool, recent, { limit: 3 });
    const second = await executeLens(pool, recent, { limit: 4 });
    expect(first.rows).toHaveLength(3);
    expect(second.rows).toHaveLength(4);
    for (const row of [...first.rows, ...second.rows]) expect(row.yacht_id).toBe(TENANT);
    const c = await pool.acquire();
    try {
      const prepared = await c.query<{ name: string; statement: string }>('SELECT name, statement FROM pg_prepared_statements ORDER BY name');
      // The lens's statement, once, beside lensfleet's own transaction statements (BEGIN, ROLLBACK, the hygiene check).
      expect(prepared.rows.filter((r) => r.name === name)).toEqual([{ name, statement: recent.query({ limit: 1 }).text }]);
      expect(prepared.rows.map((r) => r.name).sort()).toEqual(['lf_begin', 'lf_check', 'lf_rollback', name].sort());
    } finally {
      pool.release(c);
    }
  });

  it('a lens statement is described once per connection: later runs skip Describe and parse rows with the kept shape; a changed result type fails the run, destroys the connection, and the next run sees the new columns', async () => {
    const { pool } = makePool(1);
    const db = tenants.dbs[0]!;
    const dbUrl = new URL(pgAdminUrl());
    dbUrl.pathname = `/${db.database}`;
    await admin(async (c) => {
      await c.query('CREATE TABLE shape_probe (a int, b text)');
      await c.query("INSERT INTO shape_probe VALUES (1, 'x')");
      await c.query(`GRANT SELECT ON shape_probe TO "${db.role}"`);
    }, dbUrl.toString());
    const probe = defineLens({ name: 'exec.shape', params: z.object({}), sql: () => ({ text: 'SELECT * FROM shape_probe', values: [] }) });
    // Every batch the connection writes, to look for a Describe (portal) message in it.
    const written: Buffer[] = [];
    const c = await pool.acquire();
    const stream = (c as unknown as { connection: { stream: { write(b: Buffer): boolean } } }).connection.stream;
    const write = stream.write.bind(stream);
    stream.write = (b: Buffer) => {
      written.push(Buffer.from(b));
      return write(b);
    };
    pool.release(c);
    const DESCRIBE_PORTAL = Buffer.from([0x44, 0, 0, 0, 6, 0x50, 0]);
    const described = () => written.at(-1)!.includes(DESCRIBE_PORTAL);

    expect((await executeLens(pool, probe, {})).rows).toEqual([{ a: 1, b: 'x' }]);
    expect(described()).toBe(true);
    expect((await executeLens(pool, probe, {})).rows).toEqual([{ a: 1, b: 'x' }]);
    expect(described()).toBe(false);
    const pid = await backendPid(pool);

    await admin((a) => a.query('ALTER TABLE shape_probe ADD COLUMN c int DEFAULT 7'), dbUrl.toString());
    const err = await executeLens(pool, probe, {}).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LensfleetError);
    expect((err as LensfleetError).message).toMatch(/0A000|cached plan must not change result type/);
    expect(await backendPid(pool)).not.toBe(pid);
    expect((await executeLens(pool, probe, {})).rows).toEqual([{ a: 1, b: 'x', c: 7 }]);
  });

  it('a result above maxRows fails with RESULT_TOO_LARGE and the healthy connection goes back to the pool', async () => {
    const { pool, events } = makePool(1);
    const pid = await backendPid(pool);
    const err = await executeLens(pool, recent, { limit: 6 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LensfleetError);
    expect((err as LensfleetError).code).toBe('RESULT_TOO_LARGE');
    expect((err as LensfleetError).message).toMatch(/more than its maxRows \(5\)/);
    expect(await backendPid(pool)).toBe(pid);
    expect(events.filter((e) => e.type === 'closed_connection')).toEqual([]);
    expect(pool.stats().inUse).toBe(0);
  });

  it('a query error fails with QUERY_FAILED and destroys the connection instead of returning it', async () => {
    const { pool, events } = makePool(1);
    const pid = await backendPid(pool);
    const err = await executeLens(pool, failing, { d: 0 }).catch((e: unknown) => e);
    expect((err as LensfleetError).code).toBe('QUERY_FAILED');
    expect((err as LensfleetError).message).toMatch(/22012/);
    expect(await backendPid(pool)).not.toBe(pid);
    await waitFor('the destroyed connection counted as closed for "error"', () => events.some((e) => e.type === 'closed_connection' && e.reason === 'error'));
    expect((await executeLens(pool, failing, { d: 1 })).rows).toEqual([{ x: 1 }]);
    expect(pool.stats().inUse).toBe(0);
  });

  for (const pooling of [true, false]) {
    it(`a value pg cannot send (BigInt in jsonb) fails the run once and destroys the connection once (pooling ${pooling ? 'on' : 'off'})`, async () => {
      const { pool, events } = makePool(1, {}, pooling);
      const err = await executeLens(pool, unsendable, {}).catch((e: unknown) => e);
      expect((err as LensfleetError).code).toBe('QUERY_FAILED');
      expect((err as LensfleetError).message).toMatch(/BigInt/i);
      // pg calls back a second time when the destroyed connection ends: that must not count.
      await waitFor('the destroyed connection has closed', () => pool.stats().size === 0);
      await sleep(100);
      const s = pool.stats();
      expect({ inUse: s.inUse, size: s.size, waiting: s.waiting }).toEqual({ inUse: 0, size: 0, waiting: 0 });
      const closed = Object.values(s.connections_closed_total).reduce((a, b) => a + b, 0);
      expect(closed).toBe(1);
      expect(events.filter((e) => e.type === 'closed_connection').length).toBeLessThanOrEqual(1);
      expect((await executeLens(pool, recent, { limit: 2 })).rowCount).toBe(2);
    });
  }

  it('a lens with its own timeout runs in a read-only transaction with SET LOCAL; the session default is back afterwards', async () => {
    // Warm first: opening the connection would count against the lens's 300 ms (deadlines.test).
    const { pool } = makePool(1, { statementTimeoutMs: 5000, minSize: 1 });
    await pool.warm();
    const ok = await executeLens(pool, ownTimeout, { seconds: 0 });
    expect(ok.rows[0]).toMatchObject({ st: '300ms', ro: 'on' });
    const err = await executeLens(pool, ownTimeout, { seconds: 2 }).catch((e: unknown) => e);
    expect((err as LensfleetError).code).toBe('QUERY_TIMEOUT');
    const c = await pool.acquire();
    try {
      const r = await c.query<{ st: string }>("SELECT current_setting('statement_timeout') AS st");
      expect(r.rows[0]!.st).toBe('5s');
    } finally {
      pool.release(c);
    }
  });

  it('60 concurrent runs over 2 connections: every run gets its own rows, nothing is left checked out or waiting', async () => {
    const { pool, events } = makePool(2);
    const runs = Array.from({ length: 60 }, (_, i) => executeLens(pool, recent, { limit: 1 + (i % 5) }));
    const results = await Promise.all(runs);
    for (const [i, r] of results.entries()) expect(r.rowCount).toBe(1 + (i % 5));
    const s = pool.stats();
    expect(s).toMatchObject({ inUse: 0, waiting: 0, requests_total: 60 });
    expect(s.size).toBeLessThanOrEqual(2);
    expect(events.filter((e) => e.type === 'closed_connection')).toEqual([]);
  });

  it('acquireMs is the time a run waited for its connection: at least the 300 ms the only connection was held, not counting the query', async () => {
    const { pool } = makePool(1, { minSize: 1 });
    await pool.warm();
    const held = await pool.acquire();
    const started = performance.now();
    const run = executeLens(pool, sleeper, { seconds: 0.2 });
    await waitFor('the run to wait for the connection', () => pool.stats().waiting === 1, 2000, 5);
    await sleep(300);
    pool.release(held);
    const r = await run;
    const total = performance.now() - started;
    expect(r.acquireMs).toBeGreaterThanOrEqual(295);
    // the 200 ms query came after the acquire, so the wait is that much shorter than the whole run
    expect(r.acquireMs).toBeLessThanOrEqual(total - 190);
  });

  it('a lens whose SQL builder throws rejects with LENS_INVALID (not retried, no synchronous throw) and takes no connection', async () => {
    const { pool } = makePool(1);
    const broken = defineLens({
      name: 'exec.broken_builder',
      params: z.object({}),
      sql: () => {
        throw new Error('builder bug');
      },
    });
    let promise: Promise<unknown> | undefined;
    expect(() => (promise = executeLens(pool, broken, {}))).not.toThrow();
    await expect(promise).rejects.toThrow('builder bug');
    await expect(promise).rejects.toMatchObject({ code: 'LENS_INVALID', retryable: false });
    expect(pool.stats()).toMatchObject({ requests_total: 0, inUse: 0 });
  });

  it('an acquire that cannot be served fails with the pool’s typed error (POOL_TIMEOUT), without running the lens', async () => {
    // warm() opens the only connection outside the 150 ms deadline: on a loaded machine a SCRAM
    // connect can take longer, and the acquire that timed out would be this one
    const { pool } = makePool(1, { minSize: 1, acquireTimeoutMs: 150 });
    await pool.warm();
    const held = await pool.acquire();
    try {
      const err = await executeLens(pool, recent, { limit: 1 }).catch((e: unknown) => e);
      expect((err as LensfleetError).code).toBe('POOL_TIMEOUT');
    } finally {
      pool.release(held);
    }
    expect((await executeLens(pool, recent, { limit: 2 })).rowCount).toBe(2);
  });
});

/**
 * Connections come back clean, whatever the lens did: one test per spelling of a session change,
 * each followed by a probe job on the same pool (max 1 connection) that must see the pool's own
 * role, settings, search path, no claims, no locks, listeners, cursors, temp objects or SQL-level
 * prepared statements. Several spellings pass the text check (it is only advice now); none leaks.
 */
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { executeLens } from '../src/execute.js';
import { changesSessionState, defineLens } from '../src/lens.js';
import { createTenants, makeTestPool, pgAdminUrl, sleep, uniqueId, waitFor, type TestPool } from './support/harness.js';

const TENANT = uniqueId('yHyg');

let tenants: Awaited<ReturnType<typeof createTenants>>;
let databaseUrl: string;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  tenants = await createTenants([TENANT], 8);
  databaseUrl = tenants.dbs[0]!.databaseUrl;
  // A database function that changes a setting for the session internally (no SET in the lens text).
  const url = new URL(pgAdminUrl());
  url.pathname = `/${tenants.dbs[0]!.database}`;
  const admin = new pg.Client({ connectionString: url.toString() });
  await admin.connect();
  try {
    await admin.query(`CREATE FUNCTION public.innocent_looking() RETURNS int LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM set_config('search_path', 'pg_catalog', false);
        PERFORM set_config('statement_timeout', '0', false);
        RETURN 1;
      END $$`);
  } finally {
    await admin.end();
  }
});
afterEach(async () => {
  await Promise.race([Promise.allSettled(cleanups.splice(0).map((c) => c())), sleep(5000)]);
});
afterAll(async () => {
  await tenants?.drop();
});

function makePool(): TestPool {
  // A long default timeout: a probe whose connection had to be opened (after one was destroyed)
  // would otherwise see its own deadline-shortened timeout (over 5 % of the budget spent connecting
  // on a loaded machine), not the session's.
  const made = makeTestPool(TENANT, databaseUrl, { minSize: 0, maxSize: 1, maxOverflow: 0, statementTimeoutMs: 60_000 }, 1);
  cleanups.push(() => made.pool.close());
  return made;
}

/** Runs the SQL it is given: a lens whose author did something a lens should not. */
const hostile = defineLens({
  name: 'hygiene.hostile',
  params: z.object({ text: z.string() }),
  sql: ({ text }) => ({ text, values: [] }),
});

/** Everything a job can observe of the session it runs in. */
const probe = defineLens({
  name: 'hygiene.probe',
  params: z.object({}),
  sql: () => ({
    text: `SELECT pg_backend_pid() AS pid, current_user AS usr, current_setting('role') AS role,
                  current_setting('search_path') AS search_path, current_setting('statement_timeout') AS statement_timeout,
                  current_setting('default_transaction_read_only') AS default_read_only,
                  current_setting('transaction_read_only') AS read_only,
                  coalesce(current_setting('request.jwt.claims', true), '') AS claims, auth.uid() AS uid,
                  (SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS advisory_locks,
                  (SELECT count(*)::int FROM pg_listening_channels()) AS listening,
                  (SELECT count(*)::int FROM pg_cursors WHERE name <> '') AS cursors,
                  (SELECT count(*)::int FROM pg_prepared_statements WHERE from_sql) AS sql_prepared,
                  (SELECT count(*)::int FROM pg_class WHERE relnamespace = pg_my_temp_schema()) AS temp_objects`,
    values: [],
  }),
});

type Probe = Record<string, unknown>;

async function observe(p: TestPool, hygiene = true): Promise<Probe> {
  const r = await executeLens(p.pool, probe, {}, { hygiene });
  return r.rows[0]!;
}

const withoutPid = ({ pid: _pid, ...rest }: Probe) => rest;

/** Each spelling: the lens text, and whether the lens job itself succeeds (some fail: read-only). */
const SPELLINGS: { name: string; text: string; jobFails?: boolean }[] = [
  { name: 'SET after a leading block comment', text: "/* harmless */ SET search_path = 'pg_catalog'" },
  { name: 'SET after a line comment', text: '-- a comment\nSET statement_timeout = 0' },
  { name: 'set_config through a quoted identifier', text: `SELECT "set_config"('default_transaction_read_only', 'off', false)` },
  { name: 'a comment inside set_config(…)', text: "SELECT set_config('statement_timeout', '0', /* , true) */ false)" },
  { name: 'a comment between set_config and its parenthesis', text: "SELECT set_config /* x */ ('search_path', 'pg_catalog', false)" },
  { name: 'request.jwt.claims set for the session', text: `SELECT set_config('request.jwt.claims', '{"sub":"6a9d3b7e-0000-4000-8000-000000000001"}', false)` },
  { name: 'SET ROLE', text: 'SET ROLE authenticated' },
  { name: 'SET SESSION AUTHORIZATION-like: SET SESSION CHARACTERISTICS', text: 'SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE' },
  { name: 'a database function that changes settings internally', text: 'SELECT public.innocent_looking()' },
  { name: 'a session advisory lock', text: 'SELECT pg_advisory_lock(42)' },
  { name: 'a shared session advisory lock', text: 'SELECT pg_advisory_lock_shared(7)' },
  { name: 'LISTEN', text: 'LISTEN lensfleet_hygiene' },
  { name: 'DECLARE … WITH HOLD', text: 'DECLARE held CURSOR WITH HOLD FOR SELECT 1' },
  { name: 'a temp table', text: 'CREATE TEMP TABLE leftover AS SELECT 1 AS x', jobFails: true },
  { name: 'SQL-level PREPARE', text: 'PREPARE sneaky AS SELECT 1' },
  { name: 'DEALLOCATE ALL (drops lensfleet’s own statements)', text: 'DEALLOCATE ALL', jobFails: true },
  { name: 'COMMIT in the middle of the job', text: 'COMMIT' },
  { name: 'RESET ALL', text: 'RESET ALL' },
  { name: 'DISCARD ALL (not allowed in a transaction)', text: 'DISCARD ALL', jobFails: true },
];

describe('connections come back clean, whatever the lens did', () => {
  for (const s of SPELLINGS) {
    it(`${s.name}: the next job on the same pool sees the pool's own session`, async () => {
      const p = makePool();
      const before = await observe(p);
      const outcome = await executeLens(p.pool, hostile, { text: s.text }).then(
        () => 'completed',
        (e: unknown) => `failed: ${(e as Error).message}`,
      );
      if (s.jobFails) expect(outcome).toMatch(/^failed/);
      else expect(outcome).toBe('completed');
      const after = await observe(p);
      expect(withoutPid(after)).toEqual(withoutPid(before));
      // Still one connection at most: state was reset or the connection replaced, never piled up.
      expect(p.pool.stats().size).toBeLessThanOrEqual(1);
    });
  }

  it('the text check is advice only: most of these spellings pass it, and the ones it flags are warned about, not refused', async () => {
    const passing = SPELLINGS.filter((s) => !changesSessionState(s.text)).map((s) => s.name);
    // The spellings from the review that passed the old safety check: the mechanism must not depend on it.
    expect(passing).toEqual(
      expect.arrayContaining([
        'SET after a leading block comment',
        'set_config through a quoted identifier',
        'a comment inside set_config(…)',
        'a database function that changes settings internally',
        'a session advisory lock',
        'LISTEN',
        'DECLARE … WITH HOLD',
      ]),
    );
    const warnings: string[] = [];
    const onWarning = (w: Error & { code?: string }) => {
      if (w.code === 'LENSFLEET_LENS_SESSION_STATE') warnings.push(w.message);
    };
    process.on('warning', onWarning);
    try {
      const flagged = defineLens({ name: 'hygiene.flagged', params: z.object({}), sql: () => ({ text: "SET application_name = 'x'", values: [] }) });
      expect(flagged.query({}).name).toMatch(/^lf_/);
      flagged.query({}); // once per distinct text
      await sleep(20);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toContain('hygiene.flagged');
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('control: with hygiene off, the same SET leaks into the next job (so the tests above can see a leak)', async () => {
    const p = makePool();
    const before = await observe(p, false);
    await executeLens(p.pool, hostile, { text: "/* harmless */ SET search_path = 'pg_catalog'" }, { hygiene: false });
    const after = await observe(p, false);
    expect(after.pid).toBe(before.pid);
    expect(after.search_path).toBe('pg_catalog');
  });

  it('a lens that leaves nothing behind keeps its connection: the hygiene check destroys only what it must', async () => {
    const p = makePool();
    const first = await observe(p);
    await executeLens(p.pool, hostile, { text: "SELECT set_config('search_path', 'pg_catalog', false)" });
    const second = await observe(p);
    expect(second.pid).toBe(first.pid);
    await executeLens(p.pool, hostile, { text: 'PREPARE sneaky AS SELECT 1' });
    const third = await observe(p);
    expect(third.pid).not.toBe(first.pid);
    // Counted when pg-pool reports the destroyed client removed (its socket closing: asynchronous).
    await waitFor('the destroyed connection counted', () => p.pool.stats().connections_closed_total.error === 1);
  });
});

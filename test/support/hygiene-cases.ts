/**
 * What a lens can leave in a session, and a probe of everything a job can observe of it: shared by
 * the hygiene tests on direct connections and through a transaction-mode PgBouncer.
 */
import { z } from 'zod';
import { executeLens } from '../../src/execute.js';
import { defineLens } from '../../src/lens.js';
import type { TenantPool } from '../../src/pool/tenant-pool.js';

/** A database function that changes settings for the session internally (no SET in the lens text). */
export const INNOCENT_LOOKING_FUNCTION = `CREATE FUNCTION public.innocent_looking() RETURNS int LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM set_config('search_path', 'pg_catalog', false);
        PERFORM set_config('statement_timeout', '0', false);
        RETURN 1;
      END $$`;

/** Runs the SQL it is given: a lens whose author did something a lens should not. */
export const hostile = defineLens({
  name: 'hygiene.hostile',
  params: z.object({ text: z.string() }),
  sql: ({ text }) => ({ text, values: [] }),
});

/** Everything a job can observe of the session it runs in. */
export const probe = defineLens({
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

export type Probe = Record<string, unknown>;

export async function observe(p: { pool: TenantPool }, hygiene = true): Promise<Probe> {
  const r = await executeLens(p.pool, probe, {}, { hygiene });
  return r.rows[0]!;
}

export const withoutPid = ({ pid: _pid, ...rest }: Probe) => rest;

/** Each spelling: the lens text, and whether the lens job itself succeeds (some fail: read-only). */
export const SPELLINGS: { name: string; text: string; jobFails?: boolean }[] = [
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

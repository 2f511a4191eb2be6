/**
 * Lenses used only by tests (loaded by child worker processes through LENSFLEET_LENS_MODULES).
 */
import { z } from 'zod';
import { defineLens } from '../../src/lens.js';

/** Holds its connection for `seconds` (pg_sleep), then names the database it ran in. */
export const sleepLens = defineLens({
  name: 'test.sleep',
  params: z.object({ seconds: z.number().min(0).max(60) }).strict(),
  sql: ({ seconds }) => ({ text: 'SELECT pg_sleep($1::float8) AS slept, current_database() AS db', values: [seconds] }),
  timeoutMs: 90_000,
});

/** Who and where the query ran: database, role, and the tenant marker of the data. */
export const whoamiLens = defineLens({
  name: 'test.whoami',
  params: z.object({}).strict(),
  sql: () => ({
    text: "SELECT current_database() AS db, current_user AS usr, (SELECT min(yacht_id) FROM receiving) AS yacht_id, current_setting('transaction_read_only') AS read_only",
    values: [],
  }),
});

/** `rows` rows of `width` characters each (generate_series): a result far above its maxRows. */
export const seriesLens = defineLens({
  name: 'test.series',
  params: z.object({ rows: z.number().int().min(0).max(100_000_000), width: z.number().int().min(1).max(10_000).default(8) }).strict(),
  sql: ({ rows, width }) => ({
    // generate_series in the select list streams (ProjectSet); in FROM it would materialise every row first.
    text: 'SELECT g, repeat($2::text, $3::int) AS pad FROM (SELECT generate_series(1, $1::int) AS g) AS s',
    values: [rows, 'x', width],
  }),
  maxRows: 10,
  timeoutMs: 30_000,
});

/** Who the job ran as, seen from inside its transaction (a user is required). */
export const meLens = defineLens({
  name: 'test.me',
  params: z.object({}).strict(),
  sql: () => ({
    text: "SELECT current_user AS usr, auth.uid()::text AS uid, auth.role() AS role, current_setting('statement_timeout') AS statement_timeout, (SELECT count(*)::int FROM receiving) AS visible",
    values: [],
  }),
  auth: 'user',
});

/** Rows with their tenant and owner, as whoever runs the job may see them. */
export const mineLens = defineLens({
  name: 'test.mine',
  params: z.object({}).strict(),
  sql: () => ({ text: 'SELECT yacht_id, owner_id::text AS owner FROM receiving ORDER BY id LIMIT 100', values: [] }),
  maxRows: 100,
  auth: 'optional',
});

/** The session as a service job finds it: what the previous job on this connection left behind. */
export const sessionLens = defineLens({
  name: 'test.session',
  params: z.object({}).strict(),
  sql: () => ({
    text: `SELECT current_user AS usr, current_setting('role') AS role, coalesce(current_setting('request.jwt.claims', true), '') AS claims,
                  auth.uid()::text AS uid, current_setting('search_path') AS search_path, current_setting('statement_timeout') AS statement_timeout`,
    values: [],
  }),
});

/** Always hits its 200 ms statement timeout (QUERY_TIMEOUT): for the retry policy. */
export const timeoutLens = defineLens({
  name: 'test.timeout',
  params: z.object({}).strict(),
  sql: () => ({ text: 'SELECT pg_sleep(5) AS slept', values: [] }),
  timeoutMs: 200,
});

export const lenses = [sleepLens, whoamiLens, seriesLens, meLens, mineLens, sessionLens, timeoutLens];
export default lenses;

/**
 * Lenses used only by tests (loaded by child worker processes through LENSFLEET_LENS_MODULES).
 */
import { z } from 'zod';
import { defineLens } from '../../src/lens.js';

/** Holds its connection for `seconds` (pg_sleep), then names the database it ran in. */
export const sleepLens = defineLens({
  name: 'test.sleep',
  params: z.object({ seconds: z.number().min(0).max(20) }).strict(),
  sql: ({ seconds }) => ({ text: 'SELECT pg_sleep($1::float8) AS slept, current_database() AS db', values: [seconds] }),
  timeoutMs: 30_000,
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

/** Always hits its 200 ms statement timeout (QUERY_TIMEOUT): for the retry policy. */
export const timeoutLens = defineLens({
  name: 'test.timeout',
  params: z.object({}).strict(),
  sql: () => ({ text: 'SELECT pg_sleep(5) AS slept', values: [] }),
  timeoutMs: 200,
});

export const lenses = [sleepLens, whoamiLens, timeoutLens];
export default lenses;

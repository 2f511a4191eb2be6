/**
 * The cheapest lens a user would write (issue 15): a primary-key lookup in pgbench's accounts
 * table, `pgbench -i -s 1` shape (100,000 rows). Loaded by the lensfleet worker child through
 * LENSFLEET_LENS_MODULES, as an operator's own module would be; the hand-written workers run the
 * same SQL text and values (bench/lib/bare-lens.ts).
 */
import { z } from 'zod';
import { defineLens } from '../../src/lens.js';

/** Rows in pgbench_accounts at scale 1. */
export const ACCOUNTS = 100_000;

export const benchAccount = defineLens({
  name: 'bench.account',
  params: z.object({ aid: z.number().int().min(1).max(ACCOUNTS) }).strict(),
  sql: ({ aid }) => ({ text: 'SELECT * FROM pgbench_accounts WHERE aid = $1', values: [aid] }),
});

export const lenses = [benchAccount];
export default lenses;

/**
 * pgbench_accounts as `pgbench -i -s 1` makes it (same columns, fillfactor 100, primary key
 * after the load, vacuumed and analysed), in SQL so that the bench needs no pgbench binary.
 */
export const PGBENCH_ACCOUNTS_SQL = [
  'DROP TABLE IF EXISTS pgbench_accounts',
  'CREATE TABLE pgbench_accounts (aid int NOT NULL, bid int, abalance int, filler char(84)) WITH (fillfactor = 100)',
  `INSERT INTO pgbench_accounts (aid, bid, abalance, filler) SELECT aid, (aid - 1) / ${ACCOUNTS} + 1, 0, '' FROM generate_series(1, ${ACCOUNTS}) AS aid`,
  'ALTER TABLE pgbench_accounts ADD PRIMARY KEY (aid)',
  'VACUUM ANALYZE pgbench_accounts',
];

/**
 * What a user would write without lensfleet: one bare `pg.Pool(max = concurrency)` per tenant
 * (from `<ID>_DATABASE_URL`), and `pool.query(text, values)` with a lens's SQL text and values
 * (byte-identical SQL; no validation, no prepared statement, no metrics). The hand-written
 * BullMQ baseline and the graphile-worker child both run jobs through it.
 */
import pg from 'pg';
import { maritimeLenses } from '../../src/lenses/maritime.js';

export interface BareLensRunner {
  run(tenant: string, lens: string, params: unknown): Promise<pg.QueryResult>;
  close(): Promise<void>;
}

export function bareLensRunner(env: NodeJS.ProcessEnv, concurrency: number): BareLensRunner {
  const lenses = new Map<string, { query(p: unknown): { text: string; values: readonly unknown[] } }>(maritimeLenses.map((l) => [l.name, l]));
  const pools = new Map<string, pg.Pool>();
  const poolFor = (tenant: string): pg.Pool => {
    let pool = pools.get(tenant);
    if (pool === undefined) {
      const url = env[`${tenant}_DATABASE_URL`];
      if (!url) throw new Error(`no database for tenant ${tenant}`);
      pool = new pg.Pool({ connectionString: url, max: concurrency });
      pool.on('error', () => {});
      pools.set(tenant, pool);
    }
    return pool;
  };
  return {
    run(tenant, lens, params) {
      const q = lenses.get(lens)!.query(params);
      return poolFor(tenant).query(q.text, q.values as unknown[]);
    },
    async close() {
      await Promise.allSettled([...pools.values()].map((p) => p.end()));
    },
  };
}

/**
 * What a user would write without lensfleet: one bare `pg.Pool(max = concurrency)` per tenant
 * (from `<ID>_DATABASE_URL`), and `pool.query(text, values)` with a lens's SQL text and values
 * (byte-identical SQL; no validation, no transaction, no metrics). The hand-written BullMQ
 * baseline and the graphile-worker child both run jobs through it.
 *
 * `named`: the same worker at its strongest, with pg's named (prepared) statements — one name per
 * lens, so each connection parses each lens's SQL once and then only binds and executes it, as
 * lensfleet does.
 */
import pg from 'pg';
import { maritimeLenses } from '../../src/lenses/maritime.js';
import { lenses as pkLenses } from './pk-lens.js';

export interface BareLensRunner {
  run(tenant: string, lens: string, params: unknown): Promise<pg.QueryResult>;
  close(): Promise<void>;
}

type QueryOf = (p: unknown) => { text: string; values: readonly unknown[] };

export function bareLensRunner(env: NodeJS.ProcessEnv, concurrency: number, named = false): BareLensRunner {
  const lenses = new Map<string, QueryOf>([...maritimeLenses, ...pkLenses].map((l) => [l.name, (p: unknown) => (l as { query: QueryOf }).query(p)]));
  const names = new Map<string, string>();
  let nextName = 0;
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
      const q = lenses.get(lens)!(params);
      if (!named) return poolFor(tenant).query(q.text, q.values as unknown[]);
      // One statement name per distinct SQL text (a lens's text may vary with its params).
      let name = names.get(q.text);
      if (name === undefined) {
        name = `bare_${nextName++}`;
        names.set(q.text, name);
      }
      return poolFor(tenant).query({ name, text: q.text, values: q.values as unknown[] });
    },
    async close() {
      await Promise.allSettled([...pools.values()].map((p) => p.end()));
    },
  };
}

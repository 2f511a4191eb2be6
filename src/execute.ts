/**
 * Run one lens on one tenant's pool: one checked-out connection, released exactly once; on any
 * error the connection is destroyed, not returned.
 *
 * Connections open with `default_transaction_read_only=on` and the tenant's statement timeout as
 * session defaults, so a lens with the default timeout is a single round trip (a named prepared
 * statement). A lens with its own timeout runs in a read-only transaction with `SET LOCAL`.
 *
 * The single-round-trip path is written with callbacks on purpose: the connection goes back to
 * the pool inside pg's result callback, and under load the pool hands it to the next waiting job
 * on that same stack, whose query is written at once — no promise hops between one job's result
 * and the next job's query (the way `pg.Pool.query` works). docs/BENCHMARKS.md has the numbers.
 */
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import type { PoolClient, QueryResult } from 'pg';
import { classifyQueryError, LensfleetError } from './errors.js';
import type { Lens, LensQuery } from './lens.js';
import type { TenantPool } from './pool/tenant-pool.js';

export interface LensRows {
  readonly rows: Record<string, unknown>[];
  readonly rowCount: number;
  /** Time spent waiting for a connection. */
  readonly acquireMs: number;
}

export function executeLens<P>(pool: TenantPool, lens: Lens<P>, params: P, holder?: Readonly<Record<string, unknown>>): Promise<LensRows> {
  return new Promise<LensRows>((resolve, reject) => {
    // Inside the executor: a lens whose SQL builder throws rejects, as an async function would.
    const q = lens.query(params);
    const started = performance.now();
    pool.checkout(holder, (acquireError, client) => {
      if (acquireError !== undefined || client === undefined) return reject(acquireError);
      const acquireMs = performance.now() - started;
      // Runs inside pg's callback: it must not throw (pg would rethrow it on the next tick). And
      // only once: a query that fails before it is sent (a value pg cannot serialize) calls back
      // at once and again with "Connection terminated" when the destroyed connection ends.
      let finished = false;
      const finish = (err: unknown, res: QueryResult | undefined): void => {
        if (finished) return;
        finished = true;
        try {
          if (err !== undefined && err !== null) {
            pool.release(client, err);
            return reject(classifyQueryError(err, { lens: lens.name, tenant: pool.tenant }));
          }
          // A result that is merely too large leaves a healthy connection: it goes back first.
          pool.release(client);
          const rows = res!.rows as Record<string, unknown>[];
          if (rows.length > lens.maxRows) {
            return reject(
              new LensfleetError(
                'RESULT_TOO_LARGE',
                `lens ${lens.name} returned ${rows.length} rows, more than its maxRows (${lens.maxRows}); narrow the params`,
                {
                  details: { lens: lens.name, tenant: pool.tenant },
                },
              ),
            );
          }
          resolve({ rows, rowCount: rows.length, acquireMs });
        } catch (bug) {
          reject(bug);
        }
      };
      const timeoutMs = lens.timeoutMs;
      if (timeoutMs !== undefined && timeoutMs !== pool.settings.statementTimeoutMs) {
        inReadOnlyTransaction(client, q, timeoutMs).then(
          (res) => finish(undefined, res),
          (err: unknown) => finish(err ?? new Error('query failed'), undefined),
        );
        return;
      }
      try {
        client.query(new PreparedLensQuery(q, finish));
      } catch (err) {
        finish(err ?? new Error('query failed'), undefined);
      }
    });
  });
}

/**
 * A named (prepared) statement submitted as a ready-made `pg.Query`. Given a plain config object,
 * pg copies it property by property on every call (`Object.defineProperties` over its descriptors,
 * ≈ 1.5 % of the worker's CPU under load); given text, values and a callback it builds its query
 * directly. `name` is read when the query is submitted, so setting it here is enough.
 */
class PreparedLensQuery extends pg.Query {
  constructor(q: LensQuery & { readonly name: string }, callback: (err: Error | undefined, res: QueryResult | undefined) => void) {
    super(q.text, q.values as unknown[], callback as never);
    (this as { name?: string }).name = q.name;
  }
}

/** A lens with its own statement timeout: `SET LOCAL` inside a read-only transaction. */
async function inReadOnlyTransaction(client: PoolClient, q: LensQuery & { readonly name: string }, timeoutMs: number): Promise<QueryResult> {
  await client.query(`BEGIN READ ONLY; SET LOCAL statement_timeout = ${timeoutMs | 0}`);
  const res = await client.query({ name: q.name, text: q.text, values: q.values as unknown[] });
  await client.query('COMMIT');
  return res;
}

/**
 * Run one lens on one tenant's pool: one checked-out connection, released exactly once; on any
 * error the connection is destroyed, not returned.
 *
 * Connections open with `default_transaction_read_only=on` and the tenant's statement timeout as
 * session defaults, so a lens with the default timeout is a single round trip (a named prepared
 * statement). A lens with its own timeout runs in a read-only transaction with `SET LOCAL`.
 */
import { performance } from 'node:perf_hooks';
import { classifyQueryError, LensfleetError } from './errors.js';
import type { Lens } from './lens.js';
import type { TenantPool } from './pool.js';

export interface LensRows {
  readonly rows: Record<string, unknown>[];
  readonly rowCount: number;
  /** Time spent waiting for a connection. */
  readonly acquireMs: number;
}

export async function executeLens<P>(pool: TenantPool, lens: Lens<P>, params: P, holder?: Readonly<Record<string, unknown>>): Promise<LensRows> {
  const q = lens.query(params);
  const started = performance.now();
  const client = await pool.acquire(holder);
  const acquireMs = performance.now() - started;
  let failure: unknown;
  try {
    const timeoutMs = lens.timeoutMs;
    const own = timeoutMs !== undefined && timeoutMs !== pool.settings.statementTimeoutMs;
    if (own) await client.query(`BEGIN READ ONLY; SET LOCAL statement_timeout = ${timeoutMs | 0}`);
    const res = await client.query({ name: q.name, text: q.text, values: q.values as unknown[] });
    if (own) await client.query('COMMIT');
    if (res.rows.length > lens.maxRows) {
      throw new LensfleetError('RESULT_TOO_LARGE', `lens ${lens.name} returned ${res.rows.length} rows, more than its maxRows (${lens.maxRows}); narrow the params`, {
        details: { lens: lens.name, tenant: pool.tenant },
      });
    }
    return { rows: res.rows as Record<string, unknown>[], rowCount: res.rows.length, acquireMs };
  } catch (err) {
    // A result that is merely too large leaves a healthy connection; anything else destroys it.
    if (!(err instanceof LensfleetError)) failure = err;
    throw classifyQueryError(err, { lens: lens.name, tenant: pool.tenant });
  } finally {
    pool.release(client, failure);
  }
}

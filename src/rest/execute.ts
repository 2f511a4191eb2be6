/**
 * Run one lens on a Supabase tenant: its REST form, on a request slot of the tenant's
 * `RestTenantPool`, as the service or as the job's user.
 *
 * Before the query is sent it gets three things from here: a `Range: 0-<maxRows>` header (the
 * server returns at most maxRows + 1 rows, so an oversized result is detected without being
 * read), the lens's timeout as an `AbortSignal`, and `throwOnError` (failures arrive as the
 * pool's typed errors instead of postgrest-js's untyped `{ error }`).
 */
import { performance } from 'node:perf_hooks';
import { LensfleetError } from '../errors.js';
import type { LensRows } from '../execute.js';
import type { Lens } from '../lens.js';
import type { Secret } from '../secret.js';
import type { RestClient, RestForm, RestQuery } from './client.js';
import { restFailureError } from './errors.js';
import type { RestTenantPool } from './pool.js';

/**
 * Resolve the lens's rows like `executeLens` does on a Postgres pool. `userToken` (already
 * verified against the tenant's key by the caller) makes every request of this job carry it;
 * without it the job runs as the service. `LENS_BACKEND_UNSUPPORTED` when the lens has no REST form.
 */
export async function executeRestLens<P>(
  pool: RestTenantPool,
  lens: Lens<P>,
  params: P,
  userToken: Secret | undefined,
  /** For parity with `executeLens`; unused: the slot is released here, it cannot leak. */
  _holder?: Readonly<Record<string, unknown>>,
): Promise<LensRows> {
  const form = lens.rest;
  const context = { tenant: pool.tenant, lens: lens.name };
  if (form === undefined) {
    throw new LensfleetError(
      'LENS_BACKEND_UNSUPPORTED',
      `lens ${lens.name} has no REST form, and tenant ${pool.tenant} is a Supabase tenant (reached over REST); add a \`rest\` form to the lens, or reach the tenant over Postgres (${pool.tenant}_DATABASE_URL)`,
      { details: context },
    );
  }
  // The query is built before a slot is taken, like a Postgres lens's SQL: a broken form (it
  // throws, or sends its query itself and returns a promise) is a bug in the lens module
  // (LENS_INVALID, not retried) and takes no slot.
  const db = userToken === undefined ? pool.serviceClient : pool.userClient(userToken);
  const query = buildQuery(form, db, params, context);
  const controller = new AbortController();
  query.setHeader('Range-Unit', 'items');
  query.setHeader('Range', `0-${lens.maxRows}`);
  query.abortSignal(controller.signal);
  query.throwOnError();
  // The lens's timeout bounds the wait for a request slot and the request together, as on the
  // Postgres path: the wait is cut at it (POOL_TIMEOUT), the request gets what is left.
  const budgetMs = lens.timeoutMs ?? pool.settings.statementTimeoutMs;
  const started = performance.now();
  const lease = await pool.acquire(budgetMs);
  const acquireMs = performance.now() - started;
  const timeoutMs = Math.max(1, Math.floor(budgetMs - acquireMs));
  // Aborting with a typed reason: undici rejects the fetch (or the body read) with it as it is.
  const timer = setTimeout(
    () =>
      controller.abort(
        new LensfleetError(
          'QUERY_TIMEOUT',
          `tenant ${pool.tenant}, lens ${lens.name}: no REST response within its ${budgetMs} ms timeout${acquireMs >= 1 ? ` (${Math.round(acquireMs)} ms of them spent waiting for a request slot)` : ''}`,
          { details: context },
        ),
      ),
    timeoutMs,
  );
  try {
    let data: unknown;
    try {
      ({ data } = await query);
    } catch (err) {
      const e = restFailureError(controller.signal.aborted ? controller.signal.reason : err, context);
      e.details.lens ??= lens.name;
      throw e;
    }
    // `.single()` / `.maybeSingle()` return an object or null: still rows.
    const rows = (Array.isArray(data) ? data : data === null || data === undefined ? [] : [data]) as Record<string, unknown>[];
    if (rows.length > lens.maxRows) {
      throw new LensfleetError('RESULT_TOO_LARGE', `lens ${lens.name} returned more than its maxRows (${lens.maxRows}) rows; narrow the params`, {
        details: context,
      });
    }
    return { rows, rowCount: rows.length, acquireMs };
  } finally {
    clearTimeout(timer);
    lease.release();
  }
}

function buildQuery<P>(form: RestForm<P>, db: RestClient, params: P, context: { tenant: string; lens: string }): RestQuery {
  let query: unknown;
  try {
    query = form(db, params);
  } catch (err) {
    throw new LensfleetError('LENS_INVALID', `lens ${context.lens} could not build its REST query: ${err instanceof Error ? err.message : String(err)}`, {
      cause: err,
      details: context,
    });
  }
  if (!isUnsentQuery(query)) {
    throw new LensfleetError(
      'LENS_INVALID',
      `lens ${context.lens}: its rest form must return the supabase-js query unawaited (db.from(…)…), not a promise or anything else`,
      { details: context },
    );
  }
  return query;
}

function isUnsentQuery(q: unknown): q is RestQuery {
  const x = q as Partial<Record<keyof RestQuery, unknown>> | null | undefined;
  return typeof x?.setHeader === 'function' && typeof x.abortSignal === 'function' && typeof x.throwOnError === 'function' && typeof x.then === 'function';
}

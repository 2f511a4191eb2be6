/**
 * Run one lens on one tenant's pool: one checked-out connection, released exactly once; on any
 * error (or when session state outlived the job) the connection is destroyed, not returned.
 *
 * The lens runs as one pipelined batch (src/lens-run.ts): by default inside a read-only
 * transaction that is always rolled back, with identity and statement timeout set
 * transaction-locally, so the connection goes back with the pool's own role and settings whatever
 * the lens did — in one round trip.
 *
 * Written with callbacks on purpose: the connection goes back to the pool inside pg's
 * ReadyForQuery handler, and under load the pool hands it to the next waiting job on that same
 * stack, whose batch is written at once — no promise hops between one job's result and the next
 * job's query (the way `pg.Pool.query` works). docs/BENCHMARKS.md has the numbers.
 */
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { classifyQueryError, LensfleetError } from './errors.js';
import type { Lens } from './lens.js';
import { LensRun, type LensRunOutcome, type LensRunStep, type RunIdentity } from './lens-run.js';
import type { TenantPool } from './pool/tenant-pool.js';

export type { RunIdentity };

export interface LensRows {
  readonly rows: Record<string, unknown>[];
  readonly rowCount: number;
  /** Time spent waiting for a connection. */
  readonly acquireMs: number;
}

/** Largest result, in bytes of row data, unless a lens or the caller says otherwise (16 MiB). */
export const DEFAULT_MAX_RESULT_BYTES = 16 * 1024 * 1024;

export interface ExecuteOptions {
  /** Job id, lens… reported if the connection leaks. */
  readonly holder?: Readonly<Record<string, unknown>>;
  /** Run as this verified user (role + claims, transaction-local). */
  readonly identity?: RunIdentity;
  /** Roll back every job and check what outlives it (connections come back clean). @defaultValue the pool's `hygiene` setting */
  readonly hygiene?: boolean;
  /** Byte cap of the result's rows; over it → RESULT_TOO_LARGE. @defaultValue the pool's `maxResultBytes` setting */
  readonly maxResultBytes?: number;
}

export function executeLens<P>(pool: TenantPool, lens: Lens<P>, params: P, opts: ExecuteOptions = {}): Promise<LensRows> {
  return new Promise<LensRows>((resolve, reject) => {
    // A lens whose SQL builder throws is a bug in its module: LENS_INVALID (not retried), rejected
    // rather than thrown, and before any connection is taken.
    let q: ReturnType<Lens<P>['query']>;
    try {
      q = lens.query(params);
    } catch (err) {
      return reject(
        new LensfleetError('LENS_INVALID', `lens ${lens.name} could not build its query: ${err instanceof Error ? err.message : String(err)}`, {
          cause: err,
          details: { lens: lens.name, tenant: pool.tenant },
        }),
      );
    }
    const timeoutMs = lens.timeoutMs;
    // The lens's timeout bounds the wait for a connection and the statement together.
    const budgetMs = timeoutMs ?? pool.settings.statementTimeoutMs;
    const maxBytes = opts.maxResultBytes ?? pool.settings.maxResultBytes ?? DEFAULT_MAX_RESULT_BYTES;
    const started = performance.now();
    pool.checkout(
      opts.holder,
      (acquireError, client) => {
        if (acquireError !== undefined || client === undefined) return reject(acquireError);
        const acquireMs = performance.now() - started;
        // Behind a transaction-mode pooler no session default holds (none was set at connection
        // start, and the server session is shared): every job sets its own, in its transaction.
        const pooler = pool.transactionPooler;
        // The session default already is the tenant's; a user's transaction always sets one.
        let statementTimeoutMs =
          pooler || opts.identity !== undefined || (timeoutMs !== undefined && timeoutMs !== pool.settings.statementTimeoutMs) ? budgetMs : undefined;
        // A wait that ate into the budget (over 5 % of it: most jobs wait a little under load, and
        // each would otherwise pay a statement) shortens the statement's own timeout.
        if (acquireMs > budgetMs * 0.05) statementTimeoutMs = Math.max(1, Math.floor(budgetMs - acquireMs));
        // Runs inside pg's message handlers: it must not throw.
        const finish = (err: Error | undefined, out: LensRunOutcome | undefined, failedStep?: LensRunStep): void => {
          try {
            if (err !== undefined || out === undefined) {
              pool.release(client, err ?? new Error('lens run failed'));
              if (failedStep === 'context' && opts.identity !== undefined && err instanceof pg.DatabaseError) {
                // The server refused the identity statement (a lost connection is classified below as
                // what it is): only taking on the role can fail there, and the lens never ran.
                return reject(
                  new LensfleetError(
                    'AUTH_ROLE_FORBIDDEN',
                    `tenant ${pool.tenant}: the database refused role "${opts.identity.role}" for this tenant's login role (it does not exist, is not granted to the login role, or is a superuser / bypasses row-level security); fix the role's grants or the tenant's jwtRoles`,
                    { details: { lens: lens.name, tenant: pool.tenant, reason: 'role_refused_by_database' } },
                  ),
                );
              }
              if (!pooler && err instanceof pg.DatabaseError && (err.code === '26000' || err.code === '42P05')) {
                // A named statement this connection had prepared is gone (26000), or one it had not
                // exists already (42P05): its batches met different server sessions, so a
                // transaction-mode pooler stands between. The pool switches; the job is retried.
                pool.transactionPoolerDetected();
                return reject(
                  new LensfleetError(
                    'QUERY_FAILED_TRANSIENT',
                    `tenant ${pool.tenant} is behind a transaction-mode pooler (the server ${err.code === '26000' ? 'forgot' : 'already had'} a named statement): its pool now uses unnamed statements; set transactionPooler for this tenant`,
                    { cause: err, details: { lens: lens.name, tenant: pool.tenant, sqlstate: err.code } },
                  ),
                );
              }
              return reject(classifyQueryError(err, { lens: lens.name, tenant: pool.tenant }));
            }
            // State that outlived the transaction (a SQL PREPARE/DEALLOCATE) dies with the connection.
            pool.release(client, out.clean ? undefined : SESSION_STATE_LEFT);
            if (out.tooManyRows) {
              return reject(
                new LensfleetError('RESULT_TOO_LARGE', `lens ${lens.name} returned more than its maxRows (${lens.maxRows}) rows; narrow the params`, {
                  details: { lens: lens.name, tenant: pool.tenant },
                }),
              );
            }
            if (out.tooManyBytes) {
              return reject(
                new LensfleetError(
                  'RESULT_TOO_LARGE',
                  `lens ${lens.name} returned more than ${maxBytes} bytes of rows; narrow the params or select fewer columns`,
                  {
                    details: { lens: lens.name, tenant: pool.tenant },
                  },
                ),
              );
            }
            resolve({ rows: out.rows, rowCount: out.rows.length, acquireMs });
          } catch (bug) {
            reject(bug);
          }
        };
        const run = new LensRun(
          {
            statement: q,
            maxRows: lens.maxRows,
            maxBytes,
            statementTimeoutMs,
            identity: opts.identity,
            // Behind a pooler, read-only and the reset need the transaction whatever the setting.
            hygiene: pooler || (opts.hygiene ?? pool.settings.hygiene ?? true),
            namedStatements: !pooler,
          },
          finish,
        );
        try {
          client.query(run as never);
        } catch (err) {
          finish(err instanceof Error ? err : new Error(String(err)), undefined);
        }
      },
      budgetMs,
    );
  });
}

/** The release reason of a connection whose session state outlived its job. */
const SESSION_STATE_LEFT = Object.freeze(new Error('session state outlived the job (a SQL-level PREPARE or DEALLOCATE); connection destroyed'));

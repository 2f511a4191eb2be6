/**
 * One lens run on one checked-out connection, written to the server as a single pipelined batch
 * of extended-protocol messages and answered in one round trip:
 *
 *   BEGIN READ ONLY                                    (lf_begin)
 *   set_config(role, claims, statement_timeout, true)  (lf_as_user / lf_timeout; when needed)
 *   <the lens>, at most maxRows + 1 rows               (its own named statement)
 *   ROLLBACK                                           (lf_rollback)
 *   pg_advisory_unlock_all() + prepared-statement count (lf_check)
 *   Sync
 *
 * Why this shape — connections come back clean *by construction*, whatever the lens SQL did:
 * - Everything a statement can change for the session in Postgres is transactional except a few
 *   things, so ending every job with ROLLBACK reverts SET / set_config / SET ROLE / search_path /
 *   default_transaction_read_only, LISTEN, cursors (also WITH HOLD: they are only kept on commit)
 *   and transaction locks, however they were spelled or hidden in a function. Temp objects cannot
 *   be created in a read-only transaction at all.
 * - What ROLLBACK does not undo is handled in the same round trip: session advisory locks are
 *   released (pg_advisory_unlock_all), and SQL-level PREPARE/DEALLOCATE are detected by counting
 *   pg_prepared_statements against the statements lensfleet itself prepared on this connection; a
 *   mismatch makes the run report `clean: false` and the caller destroys the connection.
 * - Identity (`role`, `request.jwt.claims`) is transaction-local (`set_config(…, true)`), as
 *   PostgREST does it, so it ends with the transaction too.
 * - The row limit is the protocol's: Execute asks the server for maxRows + 1 rows and stops
 *   there, so a lens that would return millions of rows costs maxRows + 1 rows of memory; the
 *   result's bytes are counted as they arrive and rows stop being kept past the byte cap.
 *
 * node-pg accepts any object with `submit(connection)` as a query (pg-cursor works this way) and
 * routes the server's messages to it until ReadyForQuery. Statements are named and parsed once per
 * connection; any error destroys the connection (the caller's rule), so the bookkeeping of what
 * was parsed never has to survive a failure.
 *
 * Behind a transaction-mode pooler (PgBouncer, Supavisor) one connection's batches may run on
 * different server sessions, shared with other clients: statements are then unnamed, parsed in
 * every batch, and the check becomes a reset of the server session (RESET below). The batch has
 * one Sync, so the pooler keeps one server session for all of it.
 */
import pg from 'pg';
import utils from 'pg/lib/utils.js';
import { serialize } from 'pg-protocol';

/** A verified user identity, as the run needs it. */
export interface RunIdentity {
  /** Database role for the transaction (already checked against the tenant's allowlist). */
  readonly role: string;
  /** The JWT's claims as JSON, for `request.jwt.claims`. */
  readonly claimsJson: string;
}

export interface LensRunPlan {
  /** The lens's prepared statement: a stable name per distinct text. */
  readonly statement: { readonly name: string; readonly text: string; readonly values: readonly unknown[] };
  /** Rows the result may have; the server is asked for one more to tell "more" from "exactly". */
  readonly maxRows: number;
  /** Bytes (of DataRow messages) the result may have. */
  readonly maxBytes: number;
  /** Statement timeout for this run, set transaction-locally; undefined = the session default. */
  readonly statementTimeoutMs: number | undefined;
  /** Run as this user (role + claims) instead of the connection's own (service) identity. */
  readonly identity: RunIdentity | undefined;
  /** Wrap in a rolled-back transaction and check what outlives it (see above). */
  readonly hygiene: boolean;
  /**
   * Named statements, parsed once per connection (the default). false for a tenant behind a
   * transaction-mode pooler, where consecutive batches may meet different server sessions: every
   * statement is then parsed unnamed in each batch, and the check resets instead of counting.
   * @defaultValue true
   */
  readonly namedStatements?: boolean;
}

export interface LensRunOutcome {
  readonly rows: Record<string, unknown>[];
  /** The server had more than maxRows rows (rows holds maxRows + 1 at most). */
  readonly tooManyRows: boolean;
  /** The rows' bytes passed maxBytes (rows kept stop there). */
  readonly tooManyBytes: boolean;
  readonly bytes: number;
  /**
   * false when session state outlived the transaction (a SQL PREPARE or DEALLOCATE): the caller
   * must destroy the connection. Always true without hygiene (nothing was checked).
   */
  readonly clean: boolean;
}

/** Which statement of the batch failed: 'context' = the identity could not be taken on. */
export type LensRunStep = 'begin' | 'context' | 'lens' | 'rollback' | 'check';

export type LensRunCallback = (err: Error | undefined, outcome: LensRunOutcome | undefined, failedStep?: LensRunStep) => void;

const BEGIN = { name: 'lf_begin', text: 'BEGIN READ ONLY' } as const;
const ROLLBACK = { name: 'lf_rollback', text: 'ROLLBACK' } as const;
const SET_TIMEOUT = { name: 'lf_timeout', text: "SELECT set_config('statement_timeout', $1, true)" } as const;
/**
 * A user's identity for one transaction. The role is looked up, not trusted: one the login role
 * could switch to but that is a superuser or bypasses row-level security becomes a name that
 * does not exist, so set_config fails and the batch stops before the lens runs (the allowlist
 * checked the name already; this checks what the database says the role is).
 */
const SET_USER = {
  name: 'lf_as_user',
  text: `SELECT set_config('role', coalesce((SELECT rolname::text FROM pg_roles WHERE rolname = $1 AND NOT rolsuper AND NOT rolbypassrls), '-lensfleet-refused-role-'), true),
                set_config('request.jwt.claims', $2, true), set_config('statement_timeout', $3, true)`,
} as const;
/**
 * Behind a transaction-mode pooler the server session is not this connection's alone, so
 * destroying the connection would not clean it: the check resets instead — session advisory
 * locks released, SQL-level prepared statements deallocated — on the server session the batch ran
 * on (one Sync: the pooler keeps it until ReadyForQuery), whatever the lens did.
 */
const RESET = {
  name: '',
  text: "DO $lensfleet$DECLARE s record; BEGIN PERFORM pg_advisory_unlock_all(); FOR s IN SELECT name FROM pg_prepared_statements WHERE from_sql LOOP EXECUTE format('DEALLOCATE %I', s.name); END LOOP; END$lensfleet$",
} as const;
/** Releases session advisory locks; counts SQL-level and all prepared statements of the session. */
const CHECK = {
  name: 'lf_check',
  text: 'SELECT pg_advisory_unlock_all(), count(*) FILTER (WHERE from_sql), count(*) FROM pg_prepared_statements',
} as const;

type Step = LensRunStep;

/** The parts of node-pg's Connection a submittable uses (not in @types/pg). */
interface PgConnection {
  readonly stream: { readonly writable: boolean; write(chunk: Buffer): boolean };
  parsedStatements: Record<string, string>;
  sendCopyFail(msg: string): void;
}

/** What never changes between runs is serialised once: executing lensfleet's own statements, Sync. */
const EXECUTE_ALL = serialize.execute({ portal: '' });
const DESCRIBE_PORTAL = serialize.describe({ type: 'P', name: '' });
const SYNC = serialize.sync();
const RUN_BEGIN = Buffer.concat([serialize.bind({ statement: BEGIN.name }), EXECUTE_ALL]);
const RUN_ROLLBACK = Buffer.concat([serialize.bind({ statement: ROLLBACK.name }), EXECUTE_ALL]);
const RUN_CHECK = Buffer.concat([serialize.bind({ statement: CHECK.name }), EXECUTE_ALL]);
/** Bind and execute the unnamed statement just parsed (no parameters). */
const RUN_UNNAMED = Buffer.concat([serialize.bind({ statement: '' }), EXECUTE_ALL]);
const parseMessages = new Map<string, Buffer>();
/**
 * The Parse message of a statement, named or (`unnamed`) as the unnamed one: lensfleet's own
 * texts and lenses' are a bounded set, cached (a name stands for one text; an unnamed Parse is
 * keyed by its text).
 */
function parseMessage(s: { readonly name: string; readonly text: string }, unnamed: boolean): Buffer {
  const key = unnamed ? `\0${s.text}` : s.name;
  let m = parseMessages.get(key);
  if (m === undefined) {
    m = serialize.parse({ name: unnamed ? '' : s.name, text: s.text, types: [] });
    if (parseMessages.size < 10_000) parseMessages.set(key, m);
  }
  return m;
}

interface PgMessage {
  readonly length: number;
  readonly fields: unknown[];
}

/** What a lens's rows are parsed with: node-pg's Result once given the statement's RowDescription (names, type parsers). */
interface RowShape {
  addFields(fields: unknown[]): void;
  parseRow(fields: unknown[]): Record<string, unknown>;
}

/**
 * Session statements prepared per connection (parsed + executed in the same batch, so their count
 * is exact), each with its row shape once the server described it. A named statement's result
 * columns cannot change while it exists (Postgres refuses to run it with "cached plan must not
 * change result type", and that error destroys the connection), so each is described once per
 * connection: later runs skip Describe, the RowDescription and building the row parsers (in a
 * profile of the primary-key lens, 7 µs of the worker's ~50 µs per job; docs/BENCHMARKS.md).
 */
const prepared = new WeakMap<PgConnection, Map<string, RowShape | undefined>>();

export class LensRun {
  readonly #plan: LensRunPlan;
  readonly #done: LensRunCallback;
  #steps: Step[] = [];
  #step = 0;
  #expectedPrepared = 0;
  readonly #rows: Record<string, unknown>[] = [];
  #bytes = 0;
  #tooManyRows = false;
  #tooManyBytes = false;
  #checkRow: unknown[] | undefined;
  /** The lens's row shape: the connection's, or this run's result once described. */
  #shape: RowShape | undefined;
  /** Where to keep the shape the server describes in this run (named statements only). */
  #shapes: Map<string, RowShape | undefined> | undefined;
  #finished = false;
  /** node-pg sets the client's type parsers on `_result` when the query is submitted. */
  readonly _result: pg.Result = new (pg as unknown as { Result: new (rowMode?: string, types?: unknown) => pg.Result }).Result(undefined, undefined);

  constructor(plan: LensRunPlan, done: LensRunCallback) {
    this.#plan = plan;
    this.#done = done;
  }

  /** Called by node-pg when the connection is free: write the whole batch. An Error return fails the query without sending anything. */
  submit(connection: PgConnection): Error | null {
    const plan = this.#plan;
    // Values first: a value pg cannot serialise fails here, before a byte is written.
    let lensValues: unknown[];
    let contextValues: unknown[] | undefined;
    try {
      lensValues = plan.statement.values.map((v) => utils.prepareValue(v));
    } catch (err) {
      return err instanceof Error ? err : new Error(String(err));
    }
    const inTransaction = plan.hygiene || plan.identity !== undefined || plan.statementTimeoutMs !== undefined;
    const steps: Step[] = [];
    let context: { readonly name: string; readonly text: string } | undefined;
    if (inTransaction) steps.push('begin');
    if (plan.identity !== undefined) {
      context = SET_USER;
      // The caller always gives a user's run a timeout (the session default otherwise).
      contextValues = [plan.identity.role, plan.identity.claimsJson, String(plan.statementTimeoutMs)];
    } else if (plan.statementTimeoutMs !== undefined) {
      context = SET_TIMEOUT;
      contextValues = [String(plan.statementTimeoutMs)];
    }
    if (context !== undefined) steps.push('context');
    steps.push('lens');
    if (inTransaction) steps.push('rollback');
    if (plan.hygiene) steps.push('check');
    this.#steps = steps;

    // Behind a transaction-mode pooler every statement is parsed unnamed in this batch (and the
    // check is the reset); otherwise each is parsed once per connection, under its name.
    const unnamed = plan.namedStatements === false;
    let names = unnamed ? undefined : prepared.get(connection);
    if (!unnamed && names === undefined) {
      names = new Map();
      prepared.set(connection, names);
    }
    // The whole batch as one buffer, one write: half the messages are constant bytes serialised
    // once, and one write instead of ten (each a stream write with its own bookkeeping) is what
    // keeps the rolled-back transaction from costing the worker more than a few µs per job.
    const parts: Buffer[] = [];
    /** Parse `st` if this batch must (unnamed: always; named: once per connection); the name to bind. */
    const use = (st: { readonly name: string; readonly text: string }): string => {
      if (names === undefined) {
        parts.push(parseMessage(st, true));
        return '';
      }
      if (!names.has(st.name)) {
        parts.push(parseMessage(st, false));
        // Any failure destroys the connection, so "sent" can stand for "parsed".
        names.set(st.name, undefined);
        connection.parsedStatements[st.name] = st.text;
      }
      return st.name;
    };
    for (const step of steps) {
      switch (step) {
        case 'begin':
          use(BEGIN);
          parts.push(unnamed ? RUN_UNNAMED : RUN_BEGIN);
          break;
        case 'context': {
          const name = use(context!);
          parts.push(serialize.bind({ statement: name, values: contextValues! as (string | null)[] }), EXECUTE_ALL);
          break;
        }
        case 'lens': {
          const name = use(plan.statement);
          // Described before on this connection: rows are parsed with the kept shape.
          this.#shape = names?.get(name);
          if (this.#shape === undefined) this.#shapes = names;
          parts.push(serialize.bind({ statement: name, values: lensValues as (string | Buffer | null)[] }));
          if (this.#shape === undefined) parts.push(DESCRIBE_PORTAL);
          parts.push(serialize.execute({ portal: '', rows: plan.maxRows + 1 }));
          break;
        }
        case 'rollback':
          use(ROLLBACK);
          parts.push(unnamed ? RUN_UNNAMED : RUN_ROLLBACK);
          break;
        case 'check':
          use(unnamed ? RESET : CHECK);
          parts.push(unnamed ? RUN_UNNAMED : RUN_CHECK);
          break;
      }
    }
    parts.push(SYNC);
    // (node-pg's own writes do the same: nothing to write to once the socket is gone; the
    // connection's error or end then fails this query)
    if (connection.stream.writable) connection.stream.write(Buffer.concat(parts));
    this.#expectedPrepared = names?.size ?? 0;
    return null;
  }

  get #current(): Step | undefined {
    return this.#steps[this.#step];
  }

  handleRowDescription(msg: { fields: unknown[] }): void {
    if (this.#current !== 'lens') return;
    const shape = this._result as unknown as RowShape;
    shape.addFields(msg.fields);
    this.#shape = shape;
    this.#shapes?.set(this.#plan.statement.name, shape);
  }

  handleDataRow(msg: PgMessage): void {
    const step = this.#current;
    if (step === 'lens') {
      this.#bytes += msg.length;
      if (this.#bytes > this.#plan.maxBytes) {
        this.#tooManyBytes = true;
        return;
      }
      if (this.#rows.length > this.#plan.maxRows) return;
      this.#rows.push((this.#shape ?? (this._result as unknown as RowShape)).parseRow(msg.fields));
    } else if (step === 'check') {
      this.#checkRow = msg.fields;
    }
  }

  handleCommandComplete(): void {
    this.#step++;
  }

  /** The lens had more rows than Execute asked for: it is over maxRows; its portal dies with the transaction. */
  handlePortalSuspended(): void {
    if (this.#current === 'lens') this.#tooManyRows = true;
    this.#step++;
  }

  handleEmptyQuery(): void {
    this.#step++;
  }

  handleCopyInResponse(connection: PgConnection): void {
    connection.sendCopyFail('lens queries cannot COPY FROM STDIN');
  }

  handleCopyData(): void {}

  handleError(err: Error): void {
    this.#finish(err, undefined, this.#current);
  }

  handleReadyForQuery(): void {
    if (this.#step < this.#steps.length) {
      // The server answered fewer statements than were sent: never hand such a connection on.
      return this.#finish(new Error(`lens run ended after ${this.#step} of ${this.#steps.length} statements`), undefined);
    }
    const tooManyRows = this.#tooManyRows || this.#rows.length > this.#plan.maxRows;
    this.#finish(undefined, {
      rows: this.#rows,
      tooManyRows,
      tooManyBytes: this.#tooManyBytes,
      bytes: this.#bytes,
      // Unnamed (behind a pooler): the check was a reset, which either ran or failed the batch.
      clean: this.#plan.hygiene && this.#plan.namedStatements !== false ? this.#isClean() : true,
    });
  }

  /** No SQL-level prepared statements, and exactly the ones lensfleet prepared. */
  #isClean(): boolean {
    const row = this.#checkRow;
    if (row === undefined) return false;
    return String(row[1]) === '0' && String(row[2]) === String(this.#expectedPrepared);
  }

  #finish(err: Error | undefined, outcome: LensRunOutcome | undefined, failedStep?: Step): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#done(err, outcome, failedStep);
  }
}

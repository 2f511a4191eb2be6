/**
 * A tenant behind PgBouncer in transaction mode (issue 14): a real PgBouncer (Debian's package)
 * in front of the test Postgres, with fewer server connections than the pool has clients, so
 * consecutive jobs of one client connection meet different server sessions and one server session
 * serves several client connections.
 * - With `transactionPooler`, every job completes, unnamed statements only, and what a lens leaves
 *   in the session (each spelling of the hygiene tests) is reset on the server session itself:
 *   the next job, on whichever client connection, finds it as before.
 * - Users' identity stays transaction-local: interleaved jobs of two users and the service, on 8
 *   client connections over 2 server sessions, each see exactly their own rows.
 * - Without the setting, the pool detects the pooler (the server forgets, or already has, a named
 *   statement), warns once, switches, and the jobs that met it are retried as transient.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { startPgBouncer, type LocalPgBouncer } from '../dev/local/pgbouncer.js';
import { demoUserId } from '../dev/local/tenant-db.js';
import { LensfleetError } from '../src/errors.js';
import { executeLens } from '../src/execute.js';
import { defineLens } from '../src/lens.js';
import { hostile, INNOCENT_LOOKING_FUNCTION, observe, SPELLINGS, withoutPid } from './support/hygiene-cases.js';
import { createTenants, makeTestPool, pgAdminUrl, uniqueId, type TestPool } from './support/harness.js';
import { mineLens, whoamiLens } from './support/test-lenses.js';

const TENANT = uniqueId('yBnc');
/** Every prepared statement of the server session the job runs on, protocol-level ones included. */
const preparedCount = defineLens({
  name: 'test.prepared_count',
  params: z.object({}),
  sql: () => ({ text: 'SELECT count(*)::int AS n FROM pg_prepared_statements', values: [] }),
});
let tenants: Awaited<ReturnType<typeof createTenants>>;
let bouncer: LocalPgBouncer;
let oneSession: LocalPgBouncer;
let lenient: LocalPgBouncer;
const pools: TestPool[] = [];

beforeAll(async () => {
  tenants = await createTenants([TENANT], 8);
  const db = tenants.dbs[0]!;
  const url = new URL(db.databaseUrl);
  const admin = new pg.Client({ connectionString: Object.assign(new URL(pgAdminUrl()), { pathname: `/${db.database}` }).toString() });
  await admin.connect();
  try {
    await admin.query(INNOCENT_LOOKING_FUNCTION);
  } finally {
    await admin.end();
  }
  const upstream = { host: '127.0.0.1', port: Number(new URL(pgAdminUrl()).port) };
  const users = { [decodeURIComponent(url.username)]: decodeURIComponent(url.password) };
  bouncer = await startPgBouncer({ upstream, users, poolSize: 2 });
  oneSession = await startPgBouncer({ upstream, users, poolSize: 1 });
  // As an operator would have to configure it for a pool without the setting (PgBouncer refuses
  // unknown startup parameters): the session settings are dropped, named statements get through.
  lenient = await startPgBouncer({ upstream, users, poolSize: 1, ignoreStartupParameters: ['options', 'statement_timeout'] });
}, 60_000);

afterAll(async () => {
  await Promise.allSettled(pools.map((p) => p.pool.close()));
  await Promise.allSettled([bouncer?.stop(), oneSession?.stop(), lenient?.stop()]);
  await tenants?.drop();
});

function pool(via: LocalPgBouncer, max: number, transactionPooler: boolean): TestPool {
  const made = makeTestPool(
    TENANT,
    via.via(tenants.dbs[0]!.databaseUrl),
    { minSize: 0, maxSize: max, maxOverflow: 0, statementTimeoutMs: 60_000, transactionPooler },
    max,
  );
  pools.push(made);
  return made;
}

describe('a tenant behind PgBouncer in transaction mode, with transactionPooler set', () => {
  it('runs jobs on more client connections than server sessions, read-only, with a timeout, and no named statement', async () => {
    const p = pool(bouncer, 8, true);
    const results = await Promise.all(Array.from({ length: 64 }, () => executeLens(p.pool, whoamiLens, {})));
    for (const r of results) expect(r.rows[0]).toMatchObject({ yacht_id: TENANT, read_only: 'on' });
    // The probe's own batch: the statement timeout is the job's (set in its transaction), and the
    // server session holds no statement of ours (nothing named was ever parsed through the pooler).
    const seen = await observe(p);
    expect(seen).toMatchObject({ statement_timeout: '1min', read_only: 'on', sql_prepared: 0, role: 'none' });
    const named = await executeLens(p.pool, preparedCount, {});
    expect(named.rows[0]).toEqual({ n: 0 });
    expect(p.pool.stats().size).toBeGreaterThan(2);
  }, 60_000);

  for (const s of SPELLINGS) {
    // Unnamed statements: DEALLOCATE ALL has nothing of ours to drop here.
    const fails = s.jobFails === true && s.text !== 'DEALLOCATE ALL';
    it(`${s.name}: reset on the server session itself; the next job, on another client connection, finds it as before`, async () => {
      // Two client connections, one server session: whatever one leaves, the other would meet.
      const p = pool(oneSession, 2, true);
      const before = await observe(p);
      const outcome = await executeLens(p.pool, hostile, { text: s.text }).then(
        () => 'completed',
        (e: unknown) => `failed: ${(e as Error).message}`,
      );
      if (fails) expect(outcome).toMatch(/^failed/);
      else expect(outcome).toBe('completed');
      // Both client connections in turn (two at once: each gets one), then one more.
      const [a, b] = await Promise.all([observe(p), observe(p)]);
      const after = await observe(p);
      for (const x of [a!, b!, after]) expect(withoutPid(x)).toEqual(withoutPid(before));
      // The same server session all along (its pid), so the state was reset there, not left behind on a closed one.
      if (!fails) expect(after.pid).toBe(before.pid);
    }, 30_000);
  }

  it('identity stays transaction-local: two users and the service interleaved on 8 client connections over 2 server sessions', async () => {
    const p = pool(bouncer, 8, true);
    const as = (n: 1 | 2) => ({ role: 'authenticated', claimsJson: JSON.stringify({ sub: demoUserId(TENANT, n), role: 'authenticated' }) });
    const kinds = Array.from({ length: 300 }, (_, i) => (i % 3 === 0 ? 'service' : i % 3 === 1 ? 1 : 2) as 'service' | 1 | 2);
    const results = await Promise.all(kinds.map((k) => executeLens(p.pool, mineLens, {}, k === 'service' ? {} : { identity: as(k) })));
    let foreign = 0;
    let serviceSawOthers = 0;
    for (const [i, r] of results.entries()) {
      const k = kinds[i]!;
      expect(r.rows.length).toBeGreaterThan(0);
      for (const row of r.rows) {
        if (row.yacht_id !== TENANT) foreign++;
        if (k !== 'service' && row.owner !== demoUserId(TENANT, k)) foreign++;
      }
      if (k === 'service' && new Set(r.rows.map((row) => row.owner)).size > 1) serviceSawOthers++;
    }
    expect(foreign).toBe(0);
    // The service sees every owner's rows each time: no user's role was left on a session.
    expect(serviceSawOthers).toBe(100);
    console.log(`[figure] PgBouncer (transaction mode, 2 server sessions): 300 interleaved jobs on ${p.pool.stats().size} client connections, foreign rows 0`);
  }, 60_000);
});

describe('a tenant behind PgBouncer in transaction mode, without the setting', () => {
  it('a connection with the session settings a pool sends without it is refused by a default PgBouncer (08P01, as the README says)', async () => {
    const p = pool(bouncer, 1, false);
    const err = await executeLens(p.pool, whoamiLens, {}).then(
      () => undefined,
      (e: unknown) => e as LensfleetError,
    );
    expect(err).toBeInstanceOf(LensfleetError);
    expect(err!.code).toBe('CONNECTION_FAILED');
    expect((err!.cause as { code?: string } | undefined)?.code).toBe('08P01');
  }, 30_000);

  it('is detected: the jobs that meet it fail as transient (retried), the pool warns once and switches, later jobs complete', async () => {
    const p = pool(lenient, 2, false);
    const outcomes = await Promise.all(
      Array.from({ length: 20 }, () =>
        executeLens(p.pool, whoamiLens, {}).then(
          () => 'ok',
          (e: unknown) => e,
        ),
      ),
    );
    const failures = outcomes.filter((o): o is LensfleetError => o !== 'ok');
    expect(failures.length).toBeGreaterThan(0);
    for (const f of failures) {
      expect(f).toBeInstanceOf(LensfleetError);
      expect(f.code).toBe('QUERY_FAILED_TRANSIENT');
      expect(f.retryable).toBe(true);
      expect(f.message).toContain('transaction-mode pooler');
    }
    expect(p.pool.transactionPooler).toBe(true);
    expect(p.events.filter((e) => e.type === 'transaction_pooler_detected')).toHaveLength(1);
    const later = await Promise.all(Array.from({ length: 20 }, () => executeLens(p.pool, whoamiLens, {})));
    for (const r of later) expect(r.rows[0]).toMatchObject({ yacht_id: TENANT, read_only: 'on' });
  }, 60_000);
});

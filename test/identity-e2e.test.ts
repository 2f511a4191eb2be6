/**
 * Per-job identity end to end, through a worker: a job's token is verified against its own
 * tenant's key before any connection is taken, then the lens runs as the user in a transaction
 * (role + request.jwt.claims), so the demo schema's RLS policies (owner_id = auth.uid()) decide what
 * each user sees. Hostile tokens fail with their code, unretried, without a connection checked
 * out, and a canary inside them never reaches logs, metrics or what Redis keeps.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { demoUserId } from '../dev/local/tenant-db.js';
import type { LensJob } from '../queues/producer.js';
import { createTenants, pgAdminUrl, startTestWorker, uniqueId, type TestWorker } from './support/harness.js';
import { generateTestKeyPair, hmacToken, nowSeconds, rawToken, userClaims } from './support/tokens.js';

const A = uniqueId('yIdA');
const B = uniqueId('yIdB');
const SECRET_A = `secret-of-${A}-0123456789abcdefghijklmnop`;
const SECRET_B = `secret-of-${B}-0123456789abcdefghijklmnop`;
const CANARY = 'CANARY-7f3a9c2e-never-printed';

let tenants: Awaited<ReturnType<typeof createTenants>>;
let w: TestWorker;

beforeAll(async () => {
  tenants = await createTenants([A, B], 20);
  // A role the login role may switch to but that bypasses RLS: the allowlist names it (a
  // misconfiguration), the database check must still refuse it.
  const admin = new pg.Client({ connectionString: pgAdminUrl() });
  await admin.connect();
  try {
    await admin.query('DO $$ BEGIN CREATE ROLE lf_test_bypass NOLOGIN BYPASSRLS; EXCEPTION WHEN duplicate_object THEN NULL; END $$');
    await admin.query(`GRANT lf_test_bypass TO "lf_${A}_reader"`);
  } finally {
    await admin.end();
  }
  w = await startTestWorker({
    env: { ...tenants.env, [`${A}_JWT_SECRET`]: SECRET_A, [`${A}_JWT_ROLES`]: 'authenticated,anon,lf_test_bypass', [`${B}_JWT_SECRET`]: SECRET_B },
    concurrency: 4,
  });
});
afterAll(async () => {
  await w?.close();
  await tenants?.drop();
});

const userToken = (tenant: string, n: number, overrides: Record<string, unknown> = {}, secret = tenant === A ? SECRET_A : SECRET_B) =>
  hmacToken(secret, userClaims({ sub: demoUserId(tenant, n), canary: CANARY, ...overrides }));

async function finished(job: LensJob): Promise<{ state: string; result?: unknown; reason?: string; job: LensJob }> {
  try {
    const result = await job.waitUntilFinished(w.events, 30_000);
    return { state: 'completed', result, job: (await w.queue.getJob(job.id!))! };
  } catch {
    const j = (await w.queue.getJob(job.id!))!;
    return { state: 'failed', reason: j.failedReason, job: j };
  }
}

const add = (tenant: string, lens: string, params: Record<string, unknown>, jwt?: string) =>
  w.queue.add(lens, { v: 1, tenant, lens, params, ...(jwt === undefined ? {} : { auth: { jwt } }) });

const requests = (tenant: string) => w.service.registry.stats().find((s) => s.tenant === tenant)?.requests_total ?? 0;

describe('per-job identity on direct Postgres', () => {
  it('two users of one tenant each see only their own rows; a service job sees them all', async () => {
    const [u1, u2, svc] = await Promise.all([
      add(A, 'receiving.recent', { limit: 200 }, await userToken(A, 1)).then(finished),
      add(A, 'receiving.recent', { limit: 200 }, await userToken(A, 2)).then(finished),
      add(A, 'receiving.recent', { limit: 200 }).then(finished),
    ]);
    type Rows = { rows: { yacht_id: string; id: string }[] };
    const rows = (r: { result?: unknown }) => (r.result as Rows).rows;
    expect(rows(u1).length).toBe(10);
    expect(rows(u2).length).toBe(10);
    expect(rows(svc).length).toBe(20);
    const ids1 = new Set(rows(u1).map((r) => r.id));
    expect(rows(u2).some((r) => ids1.has(r.id))).toBe(false);
    for (const r of [...rows(u1), ...rows(u2), ...rows(svc)]) expect(r.yacht_id).toBe(A);
  });

  it('inside a user job: role, auth.uid() and the lens statement timeout are the user’s; the connection is back to the service after', async () => {
    const me = await add(A, 'test.me', {}, await userToken(A, 2)).then(finished);
    expect(me.result).toMatchObject({ rows: [{ usr: 'authenticated', uid: demoUserId(A, 2), role: 'authenticated', visible: 10 }] });
    const who = await add(A, 'test.whoami', {}).then(finished);
    expect(who.result).toMatchObject({ rows: [{ usr: `lf_${A}_reader` }] });
  });

  it('lens modes: a token on a service-only lens is AUTH_NOT_ALLOWED; a user lens without one is AUTH_REQUIRED', async () => {
    const notAllowed = await add(A, 'test.whoami', {}, await userToken(A, 1)).then(finished);
    expect(notAllowed.reason).toMatch(/^AUTH_NOT_ALLOWED: /);
    const required = await add(A, 'test.me', {}).then(finished);
    expect(required.reason).toMatch(/^AUTH_REQUIRED: /);
  });

  it('hostile tokens: each fails once with its code, takes no connection, and its canary is nowhere', async () => {
    const pair = await generateTestKeyPair('RS256', 'k1');
    const now = nowSeconds();
    const cases: { name: string; token: string; code: RegExp }[] = [
      { name: 'expired', token: await userToken(A, 1, { iat: now - 7200, exp: now - 3600 }), code: /^AUTH_EXPIRED: / },
      { name: 'not yet valid', token: await userToken(A, 1, { nbf: now + 3600 }), code: /^AUTH_NOT_YET_VALID: / },
      { name: 'wrong key', token: await userToken(A, 1, {}, 'x'.repeat(40)), code: /^AUTH_INVALID: / },
      { name: 'alg none', token: rawToken({ alg: 'none', typ: 'JWT' }, userClaims({ sub: demoUserId(A, 1), canary: CANARY })), code: /^AUTH_INVALID: / },
      {
        name: 'HS256 keyed with an RSA public key',
        token: rawToken({ alg: 'HS256', typ: 'JWT' }, userClaims({ canary: CANARY }), pair.publicPem),
        code: /^AUTH_INVALID: /,
      },
      { name: 'another tenant’s valid token', token: await userToken(B, 1), code: /^AUTH_INVALID: / },
      { name: 'role service_role', token: await userToken(A, 1, { role: 'service_role' }), code: /^AUTH_ROLE_FORBIDDEN: / },
      { name: 'role postgres', token: await userToken(A, 1, { role: 'postgres' }), code: /^AUTH_ROLE_FORBIDDEN: / },
      { name: 'a 1 MB token', token: `${await userToken(A, 1)}${'A'.repeat(1_000_000)}`, code: /^(PAYLOAD_TOO_LARGE|INVALID_JOB): / },
    ];
    const before = requests(A);
    const results = await Promise.all(cases.map(async (c) => ({ c, r: await add(A, 'receiving.recent', { limit: 5 }, c.token).then(finished) })));
    for (const { c, r } of results) {
      expect(r.state, c.name).toBe('failed');
      expect(r.reason, c.name).toMatch(c.code);
      expect(r.job.attemptsMade, c.name).toBe(1);
      expect(JSON.stringify(r.job.data), c.name).not.toContain(CANARY);
      expect(JSON.stringify(r.job.stacktrace), c.name).not.toContain(CANARY);
    }
    // Rejected before any connection was asked for.
    expect(requests(A)).toBe(before);
    // Other jobs and tenants are unaffected.
    expect((await add(B, 'receiving.recent', { limit: 3 }).then(finished)).state).toBe('completed');
    const metrics = await (await fetch(`http://127.0.0.1:${w.service.port}/metrics`)).text();
    expect(metrics).not.toContain(CANARY);
    expect(w.logs.text()).not.toContain(CANARY);
  });

  it('a role the allowlist names but the database says bypasses RLS is refused in the transaction, before the lens runs', async () => {
    const r = await add(A, 'receiving.recent', { limit: 200 }, await userToken(A, 1, { role: 'lf_test_bypass' })).then(finished);
    expect(r.reason).toMatch(/^AUTH_ROLE_FORBIDDEN: .*refused role "lf_test_bypass"/);
    expect(r.job.attemptsMade).toBe(1);
  });

  it('a finished job no longer stores a usable token: completed and failed jobs keep only a hash prefix', async () => {
    const token = await userToken(A, 1);
    const done = await add(A, 'receiving.recent', { limit: 1 }, token).then(finished);
    const failed = await add(A, 'receiving.recent', { limit: 1, nope: true }, token).then(finished);
    for (const r of [done, failed]) {
      const stored = JSON.stringify(r.job.data);
      expect(stored).not.toContain(token);
      expect((r.job.data as { auth: { jwt: string } }).auth.jwt).toMatch(/^redacted:sha256:[0-9a-f]{12}$/);
    }
    expect(done.state).toBe('completed');
    expect(failed.reason).toMatch(/^INVALID_PARAMS: /);
  });
});

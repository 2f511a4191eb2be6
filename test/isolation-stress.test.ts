/**
 * Isolation under constant connection reuse (issue 12 §4, direct Postgres): 3 tenants × 2 users,
 * 10,000 interleaved jobs through a worker at concurrency 50 with a pool max of 2 per tenant. Every
 * returned row belongs to the job's own tenant and (for a user job) its own user; every probe job —
 * a service job that reads the session it was handed, i.e. what the previous job on that
 * connection left — sees the pool's own role, empty claims, auth.uid() null and default settings.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { demoUserId } from '../dev/local/tenant-db.js';
import { createTenants, startTestWorker, uniqueId, type TestWorker } from './support/harness.js';
import { hmacToken, userClaims } from './support/tokens.js';

const IDS = [uniqueId('yIsoA'), uniqueId('yIsoB'), uniqueId('yIsoC')];
const secret = (t: string) => `isolation-secret-${t}-0123456789abcdef`;
const JOBS = Number(process.env.LENSFLEET_STRESS_JOBS ?? 10_000);

let tenants: Awaited<ReturnType<typeof createTenants>>;
let w: TestWorker;

beforeAll(async () => {
  tenants = await createTenants(IDS, 20);
  const env: Record<string, string> = { ...tenants.env };
  for (const t of IDS) env[`${t}_JWT_SECRET`] = secret(t);
  w = await startTestWorker({ env, concurrency: 50, pool: { minSize: 0, maxSize: 2, maxOverflow: 0 } });
});
afterAll(async () => {
  await w?.close();
  await tenants?.drop();
});

type Kind = { tenant: string; as: 'probe' | 'service' | 1 | 2 };

describe('isolation stress (pg backend)', () => {
  it(`${JOBS} interleaved jobs, 3 tenants × 2 users, concurrency 50, pool max 2: 0 foreign rows, 0 leaked session state`, async () => {
    const tokens = new Map<string, string>();
    for (const t of IDS) for (const n of [1, 2]) tokens.set(`${t}:${n}`, await hmacToken(secret(t), userClaims({ sub: demoUserId(t, n) })));
    const kinds: Kind[] = Array.from({ length: JOBS }, (_, i) => ({
      tenant: IDS[i % 3]!,
      as: (['probe', 1, 2, 'service', 1, 2, 'probe'] as const)[Math.floor(i / 3) % 7]!,
    }));
    const started = performance.now();
    const jobs = await w.queue.addBulk(
      kinds.map((k) => ({
        name: k.as === 'probe' ? 'test.session' : 'test.mine',
        data: {
          v: 1 as const,
          tenant: k.tenant,
          lens: k.as === 'probe' ? 'test.session' : 'test.mine',
          params: {},
          ...(typeof k.as === 'number' ? { auth: { jwt: tokens.get(`${k.tenant}:${k.as}`)! } } : {}),
        },
      })),
    );
    const results = await Promise.all(jobs.map((j) => j.waitUntilFinished(w.events, 180_000)));
    const seconds = (performance.now() - started) / 1000;
    let foreignRows = 0;
    let leaks = 0;
    let rowsChecked = 0;
    for (const [i, r] of results.entries()) {
      const k = kinds[i]!;
      const rows = r.rows as Record<string, unknown>[];
      if (k.as === 'probe') {
        const s = rows[0]!;
        // statement_timeout is not compared: a probe that waited for a connection runs with the rest
        // of its own deadline, set locally in its own transaction (test/hygiene covers the setting).
        const clean = s.usr === `lf_${k.tenant}_reader` && s.role === 'none' && s.claims === '' && s.uid === null && s.search_path === '"$user", public';
        if (!clean) {
          leaks++;
          if (leaks <= 3) console.log(`[leak] tenant ${k.tenant}: ${JSON.stringify(s)}`);
        }
        continue;
      }
      if (k.as === 'service') expect(rows.length).toBe(20);
      else expect(rows.length).toBe(10);
      for (const row of rows) {
        rowsChecked++;
        if (row.yacht_id !== k.tenant || (typeof k.as === 'number' && row.owner !== demoUserId(k.tenant, k.as))) foreignRows++;
      }
    }
    const stats = w.service.registry.stats();
    console.log(
      `[figure] isolation stress (pg): ${JOBS} jobs in ${seconds.toFixed(1)} s (${Math.round(JOBS / seconds)} jobs/s), ${rowsChecked} rows checked, foreign rows ${foreignRows}, leaked sessions ${leaks}, connections opened ${stats.map((s) => s.connections_opened_total).join('/')}`,
    );
    expect(foreignRows).toBe(0);
    expect(leaks).toBe(0);
    for (const s of stats) {
      expect(s.max).toBe(2);
      expect(s.leaks_total).toBe(0);
    }
  }, 240_000);
});

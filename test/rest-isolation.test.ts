/**
 * Isolation under reuse, REST backend (issue 12 §4): 3 Supabase tenants × 2 users and the
 * service, over a thousand interleaved jobs at concurrency 50 on pools of max 2 — sockets reused
 * constantly — on the pools directly, then through a worker (queue → processor → token verified
 * → registry → RestTenantPool). Every job's request carries its own job's token; every row
 * belongs to the job's tenant and user; the stand-ins see at most 2 TCP connections each.
 *
 * Also a printout (not an assertion) for docs/SUPABASE.md: the REST backend's throughput and p50
 * beside the pg path on the same database, and the per-job cost of the user-client options.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { PostgrestClient } from '@supabase/postgrest-js';
import { createClient } from '@supabase/supabase-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { executeLens } from '../src/execute.js';
import { defineLens } from '../src/lens.js';
import { receivingRecent } from '../src/lenses/maritime.js';
import { executeRestLens } from '../src/rest/execute.js';
import { Secret } from '../src/secret.js';
import { makeTestPool, ROOT, startTestWorker, uniqueId } from './support/harness.js';
import { makeRestPool, type RestTenants, restTenantEnv, startRestTenants } from './support/rest-tenants.js';

const ROWS = 40;
/** 1,200 in `npm test`; the 10,000 with LENSFLEET_REST_STRESS_JOBS=10000. */
const JOBS = Number(process.env.LENSFLEET_REST_STRESS_JOBS ?? 1200);
const CONCURRENCY = 50;
const MAX = 2;

let env: RestTenants;

beforeAll(async () => {
  env = await startRestTenants([uniqueId('yIsoA'), uniqueId('yIsoB'), uniqueId('yIsoC')], ROWS);
});
afterAll(async () => {
  await env?.close();
});

/** Every row with its tenant and owner; the job's id rides along as X-Request-Id. */
const tagged = defineLens({
  name: 'rest.tagged',
  params: z.object({ job: z.string() }),
  sql: () => ({ text: 'SELECT id, yacht_id, owner_id FROM receiving', values: [] }),
  rest: (db, { job }) => db.from('receiving').select('id, yacht_id, owner_id').order('id').setHeader('X-Request-Id', job),
  maxRows: 200,
});

/** Run `n` tasks, `concurrency` at a time. */
async function runAll(n: number, concurrency: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) await task(next++);
    }),
  );
}

describe('REST isolation stress', () => {
  it(`${JOBS} interleaved jobs (3 tenants × 2 users + service) at concurrency ${CONCURRENCY}, max ${MAX}: own token per request, own rows per job, ≤ ${MAX} connections per tenant`, async () => {
    const tenants = env.tenants;
    const pools = tenants.map((t) => makeRestPool(t, MAX).pool);
    const opened = tenants.map((t) => t.standIn.connectionsOpened());
    for (const t of tenants) t.standIn.clearRecords();
    const expectedToken = new Map<string, string>();
    let leaks = 0;
    let checked = 0;
    try {
      await runAll(JOBS, CONCURRENCY, async (i) => {
        const k = i % tenants.length;
        const t = tenants[k]!;
        // Identities interleave on every tenant: user 1, user 2, user 1, user 2, service, …
        const slot = Math.floor(i / tenants.length) % 5;
        const userN = slot === 4 ? undefined : (slot % 2) + 1;
        const job = `job-${i}`;
        const token = userN === undefined ? t.serviceKey : t.user(userN).token;
        expectedToken.set(job, token);
        const r = await executeRestLens(pools[k]!, tagged, { job }, userN === undefined ? undefined : new Secret(token));
        for (const row of r.rows) {
          if (row.yacht_id !== t.id) leaks++;
          if (userN !== undefined && row.owner_id !== t.user(userN).id) leaks++;
        }
        expect(r.rowCount).toBe(userN === undefined ? ROWS : ROWS / 2);
        checked++;
      });
    } finally {
      await Promise.all(pools.map((p) => p.close()));
    }
    expect(checked).toBe(JOBS);
    expect(leaks).toBe(0);
    let matched = 0;
    for (const [k, t] of tenants.entries()) {
      expect(t.standIn.connectionsOpened() - opened[k]!).toBeLessThanOrEqual(MAX);
      const records = t.standIn.requests();
      const jobsOfTenant = Math.ceil((JOBS - k) / tenants.length);
      expect(records.length).toBe(jobsOfTenant);
      for (const rec of records) {
        expect(rec.status).toBe(200);
        // The request of job N carried job N's token (and reached this tenant's server only).
        expect(rec.token).toBe(expectedToken.get(rec.requestId ?? ''));
        expect(Number(rec.requestId?.slice(4)) % tenants.length).toBe(k);
        matched++;
      }
      expect(pools[k]!.stats()).toMatchObject({ requests_total: jobsOfTenant, inUse: 0, waiting: 0, acquire_timeouts_total: 0 });
    }
    expect(matched).toBe(JOBS);
    console.log(
      `REST isolation stress: ${JOBS} jobs, ${tenants.length} tenants × 2 users + service, concurrency ${CONCURRENCY}, max ${MAX}: leaks ${leaks}; connections opened per tenant ${tenants.map((t, k) => t.standIn.connectionsOpened() - opened[k]!).join('/')}`,
    );
  });
});

/** The same view through a worker: a user may run it (auth optional); the job's tag rides along as X-Request-Id. */
const taggedJob = defineLens({
  name: 'rest.tagged_job',
  params: z.object({ job: z.string() }).strict(),
  sql: () => ({ text: 'SELECT id, yacht_id, owner_id FROM receiving', values: [] }),
  rest: (db, { job }) => db.from('receiving').select('id, yacht_id, owner_id').order('id').setHeader('X-Request-Id', job),
  maxRows: 200,
  auth: 'optional',
});

describe('REST isolation stress through a worker', () => {
  it(`${JOBS} interleaved jobs through the queue (3 Supabase tenants × 2 users + service), worker concurrency ${CONCURRENCY}, pool max ${MAX}: own token per request, own rows per job, ≤ ${MAX} connections per tenant`, async () => {
    const tenants = env.tenants;
    const w = await startTestWorker({
      env: restTenantEnv(tenants),
      concurrency: CONCURRENCY,
      pool: { minSize: 0, maxSize: MAX, maxOverflow: 0 },
      lenses: [taggedJob] as never[],
    });
    try {
      const opened = tenants.map((t) => t.standIn.connectionsOpened());
      for (const t of tenants) t.standIn.clearRecords();
      const kinds = Array.from({ length: JOBS }, (_, i) => {
        const k = i % tenants.length;
        const slot = Math.floor(i / tenants.length) % 5;
        return { k, tag: `wjob-${i}`, userN: slot === 4 ? undefined : (slot % 2) + 1 };
      });
      const tokenOf = (k: number, userN: number | undefined) => (userN === undefined ? tenants[k]!.serviceKey : tenants[k]!.user(userN).token);
      const started = performance.now();
      const jobs = await w.queue.addBulk(
        kinds.map(({ k, tag, userN }) => ({
          name: 'rest.tagged_job',
          data: {
            v: 1 as const,
            tenant: tenants[k]!.id,
            lens: 'rest.tagged_job',
            params: { job: tag },
            ...(userN === undefined ? {} : { auth: { jwt: tokenOf(k, userN) } }),
          },
        })),
      );
      const results = await Promise.all(jobs.map((j) => j.waitUntilFinished(w.events, 180_000)));
      const seconds = (performance.now() - started) / 1000;
      let leaks = 0;
      let rowsChecked = 0;
      for (const [i, r] of results.entries()) {
        const { k, userN } = kinds[i]!;
        const t = tenants[k]!;
        const rows = r.rows as { yacht_id: string; owner_id: string }[];
        expect(rows.length).toBe(userN === undefined ? ROWS : ROWS / 2);
        for (const row of rows) {
          rowsChecked++;
          if (row.yacht_id !== t.id || (userN !== undefined && row.owner_id !== t.user(userN).id)) leaks++;
        }
      }
      expect(leaks).toBe(0);
      // What each tenant's server saw: every job's request once, carrying that job's own token.
      const expectedToken = new Map(kinds.map(({ k, tag, userN }) => [tag, tokenOf(k, userN)]));
      let matched = 0;
      for (const [k, t] of tenants.entries()) {
        const records = t.standIn.requests();
        expect(records.length).toBe(kinds.filter((x) => x.k === k).length);
        for (const rec of records) {
          expect(rec.status).toBe(200);
          expect(rec.token).toBe(expectedToken.get(rec.requestId ?? ''));
          expect(Number(rec.requestId?.slice(5)) % tenants.length).toBe(k);
          matched++;
        }
        expect(t.standIn.connectionsOpened() - opened[k]!).toBeLessThanOrEqual(MAX);
      }
      expect(matched).toBe(JOBS);
      const stats = w.service.registry.stats();
      expect(stats).toHaveLength(tenants.length);
      for (const s of stats) {
        expect(s).toMatchObject({ max: MAX, inUse: 0, waiting: 0, acquire_timeouts_total: 0 });
        expect(s.connections_opened_total).toBeLessThanOrEqual(MAX);
      }
      expect(w.service.registry.connections()).toBe(0); // REST sockets are not database connections
      console.log(
        `[figure] REST isolation stress through a worker: ${JOBS} jobs in ${seconds.toFixed(1)} s (${Math.round(JOBS / seconds)} jobs/s), ${rowsChecked} rows checked, leaks ${leaks}, connections opened per tenant ${stats.map((s) => s.connections_opened_total).join('/')}`,
      );
    } finally {
      await w.close();
    }
  }, 240_000);
});

describe('measurements (printout for docs/SUPABASE.md)', () => {
  it('REST backend beside the pg path on the same database: throughput, p50 and worker CPU of receiving.recent', async () => {
    const t = env.tenants[0]!;
    const N = 1000;
    const C = 50;
    const M = 10;
    const params = receivingRecent.parse({ limit: 20 });
    const measure = async (run: () => Promise<unknown>) => {
      for (let i = 0; i < 100; i++) await run(); // warm-up
      const latencies: number[] = [];
      const cpu = process.cpuUsage();
      const started = performance.now();
      await runAll(N, C, async () => {
        const s = performance.now();
        await run();
        latencies.push(performance.now() - s);
      });
      const seconds = (performance.now() - started) / 1000;
      const used = process.cpuUsage(cpu);
      latencies.sort((a, b) => a - b);
      return `${Math.round(N / seconds)} jobs/s, p50 ${latencies[Math.floor(N / 2)]!.toFixed(1)} ms, worker CPU ${Math.round((used.user + used.system) / N)} µs/job`;
    };
    // The stand-in in a process of its own, as PostgREST would be: this process's CPU is the worker's.
    const standIn = spawn(process.execPath, [path.join(ROOT, 'dist/dev/postgrest/main.js')], {
      env: { PATH: process.env.PATH ?? '', PGRST_DB_URI: t.db.databaseUrl, PGRST_JWT_SECRET: t.jwtSecret },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = new Promise((resolve) => standIn.once('exit', resolve));
    const pg = makeTestPool(t.id, t.db.databaseUrl, { minSize: 0 }, M);
    try {
      const [line] = (await once(createInterface({ input: standIn.stdout! }), 'line')) as [string];
      const rest = makeRestPool(t, M, {}, { supabaseUrl: (JSON.parse(line) as { url: string }).url }).pool;
      const token = new Secret(t.user(1).token);
      try {
        const runs = {
          pg: () => executeLens(pg.pool, receivingRecent, params),
          service: () => executeRestLens(rest, receivingRecent, params, undefined),
          user: () => executeRestLens(rest, receivingRecent, params, token),
        };
        // Two rounds, the second reported: the first REST round still pays for JIT warm-up.
        for (const run of Object.values(runs)) await measure(run);
        const sql = await measure(runs.pg);
        const service = await measure(runs.service);
        const asUser = await measure(runs.user);
        console.log(`receiving.recent, ${N} jobs at concurrency ${C}, max ${M}: pg ${sql}; REST service ${service}; REST user ${asUser}`);
      } finally {
        await rest.close();
      }
    } finally {
      standIn.kill('SIGTERM');
      await exited;
      await pg.pool.close();
    }
  });

  it('per-job cost of a user client: createClient per job vs a postgrest-js client per job vs a header on a shared client', () => {
    const url = 'http://127.0.0.1:9';
    const fetch = (() => Promise.reject(new Error('not sent'))) as typeof globalThis.fetch;
    const auth = { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false };
    const shared = createClient(url, 'service-key', { accessToken: () => Promise.resolve('service-key'), global: { fetch } });
    const variants: Record<string, (token: string) => unknown> = {
      'createClient per job (auth client, header)': (tok) =>
        createClient(url, 'k', { auth, global: { fetch, headers: { Authorization: `Bearer ${tok}` } } })
          .from('t')
          .select('id'),
      'createClient per job (accessToken)': (tok) =>
        createClient(url, 'k', { accessToken: () => Promise.resolve(tok), global: { fetch } })
          .from('t')
          .select('id'),
      'postgrest-js client per job (chosen)': (tok) =>
        new PostgrestClient(`${url}/rest/v1`, { headers: { Authorization: `Bearer ${tok}` }, fetch }).from('t').select('id'),
      'shared client + per-request header': (tok) => shared.from('t').select('id').setHeader('Authorization', `Bearer ${tok}`),
    };
    const lines: string[] = [];
    for (const [name, make] of Object.entries(variants)) {
      for (let i = 0; i < 500; i++) make(`t${i}`);
      const n = 5000;
      const started = performance.now();
      for (let i = 0; i < n; i++) make(`t${i}`);
      lines.push(`${name}: ${(((performance.now() - started) * 1000) / n).toFixed(1)} µs/job`);
    }
    console.log(`per-job client construction (+ from().select()): ${lines.join('; ')}`);
    expect(lines).toHaveLength(4);
  });
});

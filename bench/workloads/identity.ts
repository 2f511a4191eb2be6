/**
 * Identity and hygiene (issue 12): what running as a user and coming back clean cost, measured
 * side by side on one tenant database (variants interleaved; per variant a warm-up, an open loop
 * at a low rate for the end-to-end latency without a backlog, and a drain of a pre-filled queue):
 * - `service`: production defaults — every job in a rolled-back read-only transaction with the
 *   hygiene check (one round trip);
 * - `service-raw`: `LENSFLEET_POOL_HYGIENE=off` — the lens alone, as before connections were
 *   made clean by construction (what hygiene costs);
 * - `user`: the same jobs carrying HS256 user tokens of the tenant's two demo users (verified by
 *   the worker, role + claims set in the transaction, RLS applied);
 * - `rest-service`, `rest-user`: the same tenant configured as a Supabase tenant — the same jobs
 *   over REST through the PostgREST stand-in (dev/postgrest, in a process of its own, so its CPU
 *   is read apart) in front of the same database: the service key, or the job's own token
 *   (verified by the worker, verified again by the stand-in, role + claims set per request).
 */
import { SignJWT } from 'jose';
import { demoUserId } from '../../dev/local/tenant-db.js';
import { serviceKeyFor } from '../../dev/postgrest/jwt.js';
import { toJobData } from '../../queues/producer.js';
import type { LensJobData } from '../../queues/contract.js';
import type { BenchEnv } from '../lib/env.js';
import { drain, jobMaker, openLoop, warmUp, type DrainResult, type OpenLoopResult } from '../lib/jobs.js';
import type { Plan } from '../lib/plan.js';
import type { Progress } from '../lib/progress.js';
import { interleaved, med, ratios, ratioTarget, type TargetResult, type WorkloadReport } from '../lib/report.js';
import { tenantEnv, withSession } from '../lib/session.js';

export type IdentityVariant = 'service' | 'service-raw' | 'user' | 'rest-service' | 'rest-user';
export const IDENTITY_VARIANTS: readonly IdentityVariant[] = ['service', 'service-raw', 'user', 'rest-service', 'rest-user'];
const isRest = (v: IdentityVariant): boolean => v === 'rest-service' || v === 'rest-user';
const isUser = (v: IdentityVariant): boolean => v === 'user' || v === 'rest-user';

/** The stand-in's database connections: PostgREST's default db-pool. */
const STAND_IN_DB_POOL = 10;

/** One variant's repetition. */
export interface IdentityRun {
  /** A short open loop at plan.identity.lowRate: end-to-end latency without a backlog. */
  readonly lowRate: OpenLoopResult;
  readonly drain: DrainResult;
}

export interface IdentityOptions {
  readonly env: BenchEnv;
  readonly plan: Plan;
  readonly progress: Progress;
  readonly tenant: { readonly id: string; readonly url: string };
}

const JWT_SECRET = 'bench-identity-secret-0123456789abcdefghij';

/** The lens mix of the other workloads, as user 1 and user 2 alternately (tokens valid for a day). */
async function userJobMaker(tenant: string): Promise<(i: number) => LensJobData> {
  const now = Math.floor(Date.now() / 1000);
  const tokens = await Promise.all(
    [1, 2].map((n) =>
      new SignJWT({ sub: demoUserId(tenant, n), role: 'authenticated', aud: 'authenticated' })
        .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
        .setIssuedAt(now)
        .setExpirationTime(now + 86_400)
        .sign(new TextEncoder().encode(JWT_SECRET)),
    ),
  );
  const base = jobMaker([tenant]);
  const cache = new Map<number, LensJobData>();
  return (i) => {
    const key = i % 8;
    let data = cache.get(key);
    if (data === undefined) {
      const b = base(i);
      data = toJobData({ tenant: b.tenant, lens: b.lens, params: b.params, auth: { jwt: tokens[i % 2]! } });
      cache.set(key, data);
    }
    return data;
  };
}

export async function runIdentity(opts: IdentityOptions): Promise<WorkloadReport> {
  const { plan, env, tenant } = opts;
  const sizes = plan.identity;
  const userMake = await userJobMaker(tenant.id);
  // The same tenant id over REST: the stand-in is in front of its database, so the demo users'
  // tokens (and their rows) are the same as on the pg path.
  const standIn = await env.startStandIn(tenant.url, JWT_SECRET, STAND_IN_DB_POOL);
  const serviceKey = await serviceKeyFor(JWT_SECRET);
  const backendEnv = (v: IdentityVariant): Record<string, string> =>
    isRest(v)
      ? { LENSFLEET_TENANTS: tenant.id, [`${tenant.id}_SUPABASE_URL`]: standIn.url, [`${tenant.id}_SUPABASE_SERVICE_KEY`]: serviceKey }
      : tenantEnv({ [tenant.id]: tenant.url });
  const total = IDENTITY_VARIANTS.length * plan.reps;
  let n = 0;
  const runs = await interleaved(IDENTITY_VARIANTS, plan.reps, async (variant, rep): Promise<IdentityRun> => {
    const progress = opts.progress.phase(`identity ${++n}/${total} ${variant} rep ${rep + 1}`);
    const result = await withSession(
      {
        env,
        mode: 'lensfleet',
        label: `identity-${variant}`,
        queueName: `bench-identity-${variant}-r${rep}`,
        tenants: [tenant.id],
        workerEnv: {
          ...backendEnv(variant),
          [`${tenant.id}_JWT_SECRET`]: JWT_SECRET,
          LENSFLEET_CONCURRENCY: '16',
          ...(variant === 'service-raw' ? { LENSFLEET_POOL_HYGIENE: 'off' } : {}),
        },
        progress,
        ...(isUser(variant) ? { make: userMake } : {}),
        ...(isRest(variant) ? { standInPid: standIn.pid } : {}),
      },
      async (d): Promise<IdentityRun> => {
        progress.update('warm-up');
        await warmUp(d, sizes.warmUpJobs);
        // Before the drain: a capped drain leaves jobs behind, which would queue ahead of these.
        const lowRate = await openLoop(d, sizes.lowRate, sizes.lowRateSeconds);
        return { lowRate, drain: await drain(d, isRest(variant) ? sizes.restDrainJobs : sizes.drainJobs, sizes.drainCapSeconds) };
      },
    );
    const { drain: dr, lowRate } = result;
    progress.line(
      `drain ${Math.round(dr.jobsPerSecond)} jobs/s, ${dr.cpuMsPerJob.total.toFixed(3)} CPU ms/job (worker ${dr.cpuMsPerJob.worker.toFixed(3)}${isRest(variant) ? `, stand-in ${dr.cpuMsPerJob.standIn.toFixed(3)}` : ''}, Postgres ${dr.cpuMsPerJob.postgres.toFixed(3)}); e2e p50 ${lowRate.e2eP50Ms} ms at ${sizes.lowRate}/s` +
        (dr.failed + lowRate.failed > 0 ? `; ${dr.failed + lowRate.failed} failed (${dr.firstFailure ?? ''})` : ''),
    );
    return result;
  });
  const tput = (v: IdentityVariant) => runs[v].map((r) => r.drain.jobsPerSecond);
  const cpu = (v: IdentityVariant, part: 'total' | 'worker' | 'standIn' | 'postgres') => runs[v].map((r) => r.drain.cpuMsPerJob[part]);
  const p50 = (v: IdentityVariant) => runs[v].map((r) => r.lowRate.e2eP50Ms);
  const targets: TargetResult[] = [ratioTarget('user jobs ÷ service jobs, drain throughput ≥ 0.7×', ratios(tput('user'), tput('service')), 0.7, true)];
  const ratioRow = (label: string, a: IdentityVariant, b: IdentityVariant): string[] => [
    label,
    med(ratios(tput(a), tput(b)), 2, '×'),
    med(ratios(cpu(a, 'total'), cpu(b, 'total')), 2, '×'),
    med(ratios(cpu(a, 'worker'), cpu(b, 'worker')), 2, '×'),
    med(ratios(p50(a), p50(b)), 2, '×'),
  ];
  return {
    name: 'identity',
    title: 'Identity and connection hygiene (pg and Supabase REST backends, concurrency 16, one tenant database)',
    tables: [
      {
        title: `Drain of ${sizes.drainJobs.toLocaleString('en-US')} pre-filled jobs (REST: ${sizes.restDrainJobs.toLocaleString('en-US')}; lens mix of the local workload; CPU ms per job from /proc), and end-to-end p50 of an open loop at ${sizes.lowRate} jobs/s for ${sizes.lowRateSeconds} s`,
        headers: ['variant', 'backend', 'drain jobs/s', 'CPU ms/job total', 'worker', 'stand-in', 'Postgres', 'e2e p50 ms (low rate)', 'failed'],
        rows: IDENTITY_VARIANTS.map((v) => [
          v,
          isRest(v) ? 'REST (stand-in)' : 'pg',
          med(tput(v)),
          med(cpu(v, 'total'), 3),
          med(cpu(v, 'worker'), 3),
          isRest(v) ? med(cpu(v, 'standIn'), 3) : '–',
          med(cpu(v, 'postgres'), 3),
          med(p50(v)),
          String(runs[v].reduce((a, r) => a + r.drain.failed + r.lowRate.failed, 0)),
        ]),
      },
      {
        title: 'Ratios (median of per-repetition ratios, range)',
        headers: ['comparison', 'throughput', 'CPU per job', 'worker CPU per job', 'e2e p50'],
        rows: [
          ratioRow('user ÷ service', 'user', 'service'),
          ratioRow('service (hygiene on) ÷ service-raw (hygiene off)', 'service', 'service-raw'),
          ratioRow('rest-service ÷ service (REST ÷ pg)', 'rest-service', 'service'),
          ratioRow('rest-user ÷ rest-service', 'rest-user', 'rest-service'),
        ],
      },
    ],
    targets,
    notes: [
      'Hygiene = every job inside BEGIN READ ONLY … ROLLBACK plus pg_advisory_unlock_all() and a count of prepared statements, pipelined with the lens in one round trip (src/lens-run.ts).',
      'User jobs: HS256 tokens verified by the worker (a per-tenant cache of verified tokens is on by default), role and request.jwt.claims set with set_config(…, true) in the same batch; RLS limits each user to their rows (half the tenant).',
      `REST variants: the same tenant database as a Supabase tenant (<ID>_SUPABASE_URL, <ID>_SUPABASE_SERVICE_KEY, <ID>_JWT_SECRET), served by the PostgREST stand-in (dev/postgrest, one Node process, ${STAND_IN_DB_POOL} database connections as PostgREST's default db-pool) on loopback; the worker's REST pool holds up to 16 keep-alive sockets. rest-service sends the service_role key; rest-user sends each job's own token (verified by the worker first); the stand-in verifies it and runs each request in a read-only transaction with role and claims set, so RLS applies. Postgres CPU includes the stand-in's connections.`,
      "The stand-in is ours, not PostgREST (Haskell): its CPU and the REST throughput say what this setup costs on this machine, not what a Supabase project would; the worker column is lensfleet's own cost per REST job. No target: issue 12 asks for the numbers.",
      `e2e p50 = enqueue → completed at ${sizes.lowRate} jobs/s (no backlog), after the warm-up and before the drain; a drain's own end-to-end latency is mostly time queued, so it is not reported.`,
    ],
    raw: runs,
  };
}

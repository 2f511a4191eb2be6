/**
 * Identity and hygiene (issue 12): what running as a user and coming back clean cost, measured
 * side by side on one tenant (drains of pre-filled queues, variants interleaved):
 * - `service`: production defaults — every job in a rolled-back read-only transaction with the
 *   hygiene check (one round trip);
 * - `service-raw`: `LENSFLEET_POOL_HYGIENE=off` — the lens alone, as before connections were
 *   made clean by construction (what hygiene costs);
 * - `user`: the same jobs carrying HS256 user tokens of the tenant's two demo users (verified by
 *   the worker, role + claims set in the transaction, RLS applied).
 */
import { SignJWT } from 'jose';
import { demoUserId } from '../../dev/local/tenant-db.js';
import { toJobData } from '../../queues/producer.js';
import type { LensJobData } from '../../queues/contract.js';
import type { BenchEnv } from '../lib/env.js';
import { drain, jobMaker, warmUp, type DrainResult } from '../lib/jobs.js';
import type { Plan } from '../lib/plan.js';
import type { Progress } from '../lib/progress.js';
import { interleaved, med, ratios, ratioTarget, type TargetResult, type WorkloadReport } from '../lib/report.js';
import { tenantEnv, withSession } from '../lib/session.js';

export type IdentityVariant = 'service' | 'service-raw' | 'user';
export const IDENTITY_VARIANTS: readonly IdentityVariant[] = ['service', 'service-raw', 'user'];

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
  const total = IDENTITY_VARIANTS.length * plan.reps;
  let n = 0;
  const runs = await interleaved(IDENTITY_VARIANTS, plan.reps, async (variant, rep): Promise<DrainResult> => {
    const progress = opts.progress.phase(`identity ${++n}/${total} ${variant} rep ${rep + 1}`);
    const result = await withSession(
      {
        env,
        mode: 'lensfleet',
        label: `identity-${variant}`,
        queueName: `bench-identity-${variant}-r${rep}`,
        tenants: [tenant.id],
        workerEnv: {
          ...tenantEnv({ [tenant.id]: tenant.url }),
          [`${tenant.id}_JWT_SECRET`]: JWT_SECRET,
          LENSFLEET_CONCURRENCY: '16',
          ...(variant === 'service-raw' ? { LENSFLEET_POOL_HYGIENE: 'off' } : {}),
        },
        progress,
        ...(variant === 'user' ? { make: userMake } : {}),
      },
      async (d) => {
        progress.update('warm-up');
        await warmUp(d, sizes.warmUpJobs);
        return drain(d, sizes.drainJobs, sizes.drainCapSeconds);
      },
    );
    progress.line(
      `drain ${Math.round(result.jobsPerSecond)} jobs/s, ${result.cpuMsPerJob.total.toFixed(3)} CPU ms/job (worker ${result.cpuMsPerJob.worker.toFixed(3)}, Postgres ${result.cpuMsPerJob.postgres.toFixed(3)})` +
        (result.failed > 0 ? `; ${result.failed} failed (${result.firstFailure ?? ''})` : ''),
    );
    return result;
  });
  const tput = (v: IdentityVariant) => runs[v].map((r) => r.jobsPerSecond);
  const cpu = (v: IdentityVariant, part: 'total' | 'worker' | 'postgres') => runs[v].map((r) => r.cpuMsPerJob[part]);
  const targets: TargetResult[] = [ratioTarget('user jobs ÷ service jobs, drain throughput ≥ 0.7×', ratios(tput('user'), tput('service')), 0.7, true)];
  return {
    name: 'identity',
    title: 'Identity and connection hygiene (pg backend, concurrency 16, one tenant)',
    tables: [
      {
        title: `Drain of ${sizes.drainJobs.toLocaleString('en-US')} pre-filled jobs (lens mix of the local workload; CPU ms per job from /proc)`,
        headers: ['variant', 'drain jobs/s', 'CPU ms/job total', 'worker', 'Postgres', 'failed'],
        rows: IDENTITY_VARIANTS.map((v) => [
          v,
          med(tput(v)),
          med(cpu(v, 'total'), 3),
          med(cpu(v, 'worker'), 3),
          med(cpu(v, 'postgres'), 3),
          String(runs[v].reduce((a, r) => a + r.failed, 0)),
        ]),
      },
      {
        title: 'Ratios (median of per-repetition ratios, range)',
        headers: ['comparison', 'throughput', 'CPU per job'],
        rows: [
          ['user ÷ service', med(ratios(tput('user'), tput('service')), 2, '×'), med(ratios(cpu('user', 'total'), cpu('service', 'total')), 2, '×')],
          [
            'service (hygiene on) ÷ service-raw (hygiene off)',
            med(ratios(tput('service'), tput('service-raw')), 2, '×'),
            med(ratios(cpu('service', 'total'), cpu('service-raw', 'total')), 2, '×'),
          ],
        ],
      },
    ],
    targets,
    notes: [
      'Hygiene = every job inside BEGIN READ ONLY … ROLLBACK plus pg_advisory_unlock_all() and a count of prepared statements, pipelined with the lens in one round trip (src/lens-run.ts).',
      'User jobs: HS256 tokens verified by the worker (a per-tenant cache of verified tokens is on by default), role and request.jwt.claims set with set_config(…, true) in the same batch; RLS limits each user to their rows (half the tenant).',
    ],
    raw: runs,
  };
}

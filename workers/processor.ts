/**
 * The job processor: validate → resolve tenant → look up lens → validate params → verify the
 * user's token → the tenant's pool → run the lens on its backend (Postgres: `executeLens`;
 * Supabase REST: `executeRestLens`) → result. Whether a failure is retried is decided
 * from the error class (errors.ts): non-retryable failures become BullMQ `UnrecoverableError`s so
 * they fail once, at once. The stored failure reason is always `CODE: message`.
 */
import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { DelayedError, UnrecoverableError, type Job } from 'bullmq';
import type { Logger } from 'pino';
import { parseJobData, type LensResult } from '../queues/contract.js';
import type { TenantBreakers } from '../src/breaker.js';
import type { DeferralPlanner, DeferReason } from '../src/deferral.js';
import type { TenantParking } from './parking.js';
import { LensfleetError, reachabilityOf } from '../src/errors.js';
import type { TenantPools } from '../src/backends.js';
import { executeLens } from '../src/execute.js';
import { createJwtVerifier, type JwtVerifier, type VerifiedIdentity } from '../src/identity/jwt.js';
import type { Lens, LensCatalog } from '../src/lens.js';
import { decideRetry, type RetrySettings } from '../src/retry-policy.js';
import type { LensfleetMetrics } from '../src/metrics.js';
import { executeRestLens } from '../src/rest/execute.js';
import { Secret } from '../src/secret.js';
import type { Tenant } from '../src/tenants.js';

export interface ProcessorDeps {
  readonly catalog: LensCatalog;
  /** Resolves a tenant id (`TENANT_NOT_FOUND`); may change on reload. */
  readonly tenants: { get(id: string): Tenant };
  readonly registry: TenantPools;
  readonly logger: Logger;
  readonly metrics?: LensfleetMetrics;
  readonly maxPayloadBytes: number;
  /** Which transient failures are retried (a statement timeout is costly: see src/retry-policy.ts). */
  readonly retry?: RetrySettings;
  /**
   * Whether a job runs now or is put back in the queue (issue 13 §4, §5); none = every job runs.
   * Deferring needs the job's lock token (BullMQ's second processor argument).
   */
  readonly admission?: Admission;
}

/** Deferral of jobs whose tenant's pool cannot serve them now, and the tenants' circuit breakers. */
export interface Admission {
  readonly breakers: TenantBreakers;
  readonly deferral: DeferralPlanner;
  /** Moves a busy tenant's other queued jobs out of the way (a flood added at once); none = one by one. */
  readonly parking?: TenantParking;
}

export type LensProcessor = (job: Job, token?: string) => Promise<LensResult>;

export function createProcessor(deps: ProcessorDeps): LensProcessor {
  const { catalog, tenants, registry, logger, metrics, maxPayloadBytes } = deps;
  /** One verifier per tenant object (a reload makes new objects, so changed keys take effect). */
  const verifiers = new WeakMap<Tenant, JwtVerifier>();
  const verify = (tenant: Tenant, lens: Lens<unknown>, token: string): Promise<VerifiedIdentity> => {
    if (lens.auth === 'service') {
      // Checked first: a service lens must not become a way to test tokens.
      throw new LensfleetError(
        'AUTH_NOT_ALLOWED',
        `lens ${lens.name} runs as the service only: send the job without auth.jwt, or use a lens that allows a user`,
        {
          details: { lens: lens.name, tenant: tenant.id },
        },
      );
    }
    let v = verifiers.get(tenant);
    if (v === undefined) {
      v = createJwtVerifier(tenant.id, tenant.auth);
      verifiers.set(tenant, v);
    }
    return v.verify(token);
  };
  const admission = deps.admission;
  const breakers = admission?.breakers.enabled ? admission.breakers : undefined;
  const deferral = admission?.deferral.settings.enabled && admission.deferral.settings.maxPerJob > 0 ? admission.deferral : undefined;
  const parking = deferral === undefined ? undefined : admission?.parking;
  /**
   * Put the job back in the queue for `delayMs` without using up an attempt (BullMQ's manual
   * delay: `moveToDelayed` with the job's lock token, then `DelayedError`, which the worker takes
   * as "moved already").
   */
  const defer = async (job: Job, token: string, delayMs: number, tenant: string, reason: DeferReason): Promise<never> => {
    await job.moveToDelayed(Date.now() + delayMs, token);
    metrics?.jobDeferred(tenant, reason);
    if (logger.isLevelEnabled('debug')) logger.debug({ jobId: job.id, tenant, reason, delayMs, deferrals: deferralsOf(job) + 1 }, 'job deferred');
    throw new DelayedError();
  };
  return async function processLensJob(job: Job, token?: string): Promise<LensResult> {
    const started = performance.now();
    let lensName = 'unknown';
    let tenantId = 'unknown';
    /** The breaker let this job run (its outcome is reported); `probe`: as its half-open probe. */
    let admitted = false;
    let probe = false;
    let runStarted = 0;
    /** The job ran on its tenant's pool (so a connection was freed when it ended). */
    let ran = false;
    // A child logger only when there is something to log: no per-job allocation on the hot path.
    const log = () => logger.child({ jobId: job.id, tenant: tenantId, lens: lensName, attempt: job.attemptsMade + 1 });
    try {
      const data = parseJobData(job.data, maxPayloadBytes);
      const tenant = tenants.get(data.tenant);
      tenantId = tenant.id;
      const lens = catalog.get(data.lens);
      lensName = lens.name;
      // Once per attempt: a deferred job's later starts are not new waits.
      if (job.attemptsStarted <= job.attemptsMade + 1) metrics?.jobStarted(lensName, ((job.processedOn ?? Date.now()) - job.timestamp) / 1000);
      const params = lens.parse(data.params);
      // The token is verified against this tenant's key before any connection is taken or any
      // request sent, whatever the tenant's backend.
      const identity = data.auth === undefined ? undefined : await verify(tenant, lens, data.auth.jwt);
      if (identity === undefined && lens.auth === 'user') {
        throw new LensfleetError('AUTH_REQUIRED', `lens ${lens.name} runs as a user: send the job with auth.jwt (a token of tenant ${tenant.id})`, {
          details: { lens: lens.name, tenant: tenant.id },
        });
      }
      if (breakers !== undefined && token !== undefined) {
        const a = breakers.admit(tenantId);
        if (!a.run) return await defer(job, token, a.delayMs, tenantId, 'breaker_open');
        probe = a.probe;
        admitted = true;
      }
      runStarted = performance.now();
      const pool = registry.current(tenant) ?? (await registry.get(tenant));
      // Not while it waits for a connection in this slot: one tenant's flood would take every slot.
      // A few acquires may wait for the pool's own connections (half its max): with none, a
      // connection released between two returning jobs sits idle — a pool that only takes jobs as
      // they come back is a loss system (fairness test, max 4, 50 ms jobs, loaded machine: A's
      // drain took 10.6 s with no waiter, 8.4 s with one, 6.7 s with 2 or 4, 5.6 s without deferral).
      // A probe runs at once (the pool of an unreachable tenant is empty anyway); a job deferred
      // maxPerJob times waits, so the busy tenant always progresses.
      if (
        deferral !== undefined &&
        token !== undefined &&
        !probe &&
        !pool.canStartNow(Math.ceil(pool.max / 2)) &&
        deferralsOf(job) < deferral.settings.maxPerJob
      ) {
        // (an admitted job that is deferred reports no outcome)
        admitted = false;
        parking?.busy(tenantId, pool.max);
        return await defer(job, token, deferral.delayFor(tenantId, pool.max), tenantId, 'busy');
      }
      // A REST request carries the job's own token, as verified (never one signed here): the
      // tenant's API checks it again and takes the role and claims from it.
      ran = true;
      const r =
        pool.backend === 'pg'
          ? await executeLens(pool, lens, params, { holder: { jobId: job.id, tenant: tenantId, lens: lensName }, identity })
          : await executeRestLens(pool, lens, params, identity === undefined ? undefined : verifiedToken(data.auth));
      if (admitted) breakers!.record(tenantId, probe, 'reached');
      parking?.finished(tenantId);
      // The time a connection is held per job (not the wait for it): what paces the tenant's pool.
      deferral?.observe(tenantId, performance.now() - runStarted - r.acquireMs);
      if (identity !== undefined) await forgetToken(job, log);
      const durationMs = performance.now() - started;
      metrics?.jobFinished(lensName, tenantId, 'completed', durationMs / 1000);
      if (logger.isLevelEnabled('debug')) log().debug({ rowCount: r.rowCount, durationMs, acquireMs: r.acquireMs }, 'job completed');
      return { rows: r.rows, rowCount: r.rowCount, lens: lensName, tenant: tenantId, durationMs: Math.round(durationMs * 1000) / 1000 };
    } catch (err) {
      if (err instanceof DelayedError) throw err;
      const e = err instanceof LensfleetError ? err : new LensfleetError('INTERNAL', (err as Error)?.message ?? String(err), { cause: err });
      if (admitted) breakers!.record(tenantId, probe, reachabilityOf(e.code));
      if (ran) parking?.finished(tenantId);
      const attempts = job.opts.attempts ?? 1;
      const retry = deps.retry === undefined ? e.retryable : decideRetry(e.code, job.attemptsMade, deps.retry).retry;
      const final = !retry || job.attemptsMade + 1 >= attempts;
      metrics?.jobFinished(lensName, tenantId, final ? 'failed' : 'retried', (performance.now() - started) / 1000);
      // (tenant and lens are on the child logger already: a second copy would repeat the JSON key)
      const { tenant: _tenant, lens: _lens, ...details } = e.details;
      const fields = { code: e.code, retryable: e.retryable, final, ...details };
      if (final) log().error(fields, e.message);
      else log().warn(fields, e.message);
      if (final) await forgetToken(job, log);
      if (!retry) throw new UnrecoverableError(e.toString());
      throw new Error(e.toString(), { cause: e });
    }
  };
}

/**
 * How many times this attempt of the job was deferred: BullMQ counts every start
 * (`attemptsStarted`, in the job's hash, so it survives the job moving between workers) and every
 * ended attempt (`attemptsMade`); a deferral starts the job without ending an attempt. (A stalled
 * start counts too: it also held a slot without finishing.)
 */
export function deferralsOf(job: Job): number {
  return Math.max(0, job.attemptsStarted - job.attemptsMade - 1);
}

/** The job's token, once verified, as a `Secret` (so a dump of the request's client shows none). */
function verifiedToken(auth: { readonly jwt: string } | undefined): Secret | undefined {
  return auth === undefined ? undefined : new Secret(auth.jwt);
}

/** What replaces a finished job's token in its stored data (the token's hash prefix, for correlation). */
export function redactedToken(token: string): string {
  return `redacted:sha256:${createHash('sha256').update(token).digest('hex').slice(0, 12)}`;
}

/**
 * A finished job (completed, or failed for good) keeps its data in Redis for days: replace its
 * user token so what is stored is no longer a usable credential. Attempts still to come need the
 * token, so only the last attempt forgets it. A failure to update is logged, never fatal.
 */
async function forgetToken(job: Job, log: () => Logger): Promise<void> {
  const data = job.data as { auth?: { jwt?: unknown } } | null;
  if (data === null || typeof data !== 'object' || typeof data.auth !== 'object' || data.auth === null || typeof data.auth.jwt !== 'string') return;
  if (data.auth.jwt.startsWith('redacted:')) return;
  try {
    await job.updateData({ ...data, auth: { jwt: redactedToken(data.auth.jwt) } });
  } catch (err) {
    log().warn({ code: (err as { code?: string }).code }, 'could not remove the user token from the finished job’s stored data');
  }
}

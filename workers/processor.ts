/**
 * The job processor: validate → resolve tenant → look up lens → validate params → acquire from
 * the tenant's pool → run the lens → release → result. Whether a failure is retried is decided
 * from the error class (errors.ts): non-retryable failures become BullMQ `UnrecoverableError`s so
 * they fail once, at once. The stored failure reason is always `CODE: message`.
 */
import { performance } from 'node:perf_hooks';
import { UnrecoverableError, type Job } from 'bullmq';
import type { Logger } from 'pino';
import { parseJobData, type LensResult } from '../queues/contract.js';
import { LensfleetError } from '../src/errors.js';
import { executeLens } from '../src/execute.js';
import type { LensCatalog } from '../src/lens.js';
import type { LensfleetMetrics } from '../src/metrics.js';
import type { PoolRegistry } from '../src/pool/registry.js';
import type { PgTenant } from '../src/tenants.js';

export interface ProcessorDeps {
  readonly catalog: LensCatalog;
  /** Resolves a tenant id (`TENANT_NOT_FOUND` / `TENANT_UNSUPPORTED`); may change on reload. */
  readonly tenants: { getPg(id: string): PgTenant };
  readonly registry: PoolRegistry;
  readonly logger: Logger;
  readonly metrics?: LensfleetMetrics;
  readonly maxPayloadBytes: number;
}

export type LensProcessor = (job: Job) => Promise<LensResult>;

export function createProcessor(deps: ProcessorDeps): LensProcessor {
  const { catalog, tenants, registry, logger, metrics, maxPayloadBytes } = deps;
  return async function processLensJob(job: Job): Promise<LensResult> {
    const started = performance.now();
    let lensName = 'unknown';
    let tenantId = 'unknown';
    // A child logger only when there is something to log: no per-job allocation on the hot path.
    const log = () => logger.child({ jobId: job.id, tenant: tenantId, lens: lensName, attempt: job.attemptsMade + 1 });
    try {
      const data = parseJobData(job.data, maxPayloadBytes);
      const tenant = tenants.getPg(data.tenant);
      tenantId = tenant.id;
      const lens = catalog.get(data.lens);
      lensName = lens.name;
      metrics?.jobStarted(lensName, ((job.processedOn ?? Date.now()) - job.timestamp) / 1000);
      const params = lens.parse(data.params);
      if (data.auth !== undefined) {
        // Running a user's job with the service role would bypass row-level security.
        throw new LensfleetError(
          'AUTH_UNSUPPORTED',
          'jobs with auth.jwt (row-level security as the user) are not supported by this worker version yet; send the job without auth for service-mode lenses',
        );
      }
      const pool = registry.current(tenant) ?? (await registry.get(tenant));
      const r = await executeLens(pool, lens, params, { holder: { jobId: job.id, tenant: tenantId, lens: lensName } });
      const durationMs = performance.now() - started;
      metrics?.jobFinished(lensName, tenantId, 'completed', durationMs / 1000);
      if (logger.isLevelEnabled('debug')) log().debug({ rowCount: r.rowCount, durationMs, acquireMs: r.acquireMs }, 'job completed');
      return { rows: r.rows, rowCount: r.rowCount, lens: lensName, tenant: tenantId, durationMs: Math.round(durationMs * 1000) / 1000 };
    } catch (err) {
      const e = err instanceof LensfleetError ? err : new LensfleetError('INTERNAL', (err as Error)?.message ?? String(err), { cause: err });
      const attempts = job.opts.attempts ?? 1;
      const final = !e.retryable || job.attemptsMade + 1 >= attempts;
      metrics?.jobFinished(lensName, tenantId, final ? 'failed' : 'retried', (performance.now() - started) / 1000);
      const fields = { code: e.code, retryable: e.retryable, final, ...e.details };
      if (final) log().error(fields, e.message);
      else log().warn(fields, e.message);
      if (!e.retryable) throw new UnrecoverableError(e.toString());
      throw new Error(e.toString(), { cause: e });
    }
  };
}

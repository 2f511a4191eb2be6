/**
 * What the worker entry point starts, from the environment: configuration, tenants, lenses, the
 * service. Loaded by `lens-worker.ts` after its signal handlers are installed (this module pulls
 * in BullMQ, pg, pino, zod…, which takes a noticeable fraction of a second).
 */
import type { Logger } from 'pino';
import { loadWorkerConfig, unknownLensfleetVariables, type Env } from '../src/config.js';
import { LensCatalog, loadLensModules } from '../src/lens.js';
import { maritimeLenses } from '../src/lenses/maritime.js';
import { createLogger } from '../src/logger.js';
import { loadTenantDirectory } from '../src/tenants.js';
import { startWorkerService, type WorkerService } from './service.js';

export interface StartedWorker {
  readonly service: WorkerService;
  /** SIGHUP: re-read the tenants (environment of this process, tenants file, secret files). */
  reload(): Promise<void>;
}

/** The process logger, at `info` until the configuration (and its LOG_LEVEL) has been read. */
export function createProcessLogger(): Logger {
  return createLogger({ level: 'info' });
}

/** Read the configuration and start the service. Throws `INVALID_CONFIG` naming the setting. */
export async function startFromEnvironment(env: Env, logger: Logger): Promise<StartedWorker> {
  const config = loadWorkerConfig(env);
  logger.level = config.logLevel;
  const unknown = unknownLensfleetVariables(env);
  if (unknown.length > 0) logger.warn({ variables: unknown }, 'unknown LENSFLEET_* variables are ignored (misspelled?); see the README for the settings');
  const tenants = loadTenantDirectory(config, env);
  if (tenants.ids().length === 0) logger.warn('no tenants configured (LENSFLEET_TENANTS / LENSFLEET_TENANTS_FILE): every job will fail with TENANT_NOT_FOUND');
  const catalog = new LensCatalog(maritimeLenses);
  await loadLensModules(catalog, config.lensModules);
  const service = await startWorkerService({ config, tenants, catalog, logger });
  return {
    service,
    async reload() {
      const next = loadTenantDirectory(loadWorkerConfig(env), env);
      await service.reload(next);
    },
  };
}

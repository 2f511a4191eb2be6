#!/usr/bin/env node
/**
 * Worker process entry point (Procfile: `worker: node dist/workers/lens-worker.js`).
 * Configured only by environment variables (see README). SIGTERM/SIGINT drain: stop taking jobs,
 * finish active ones, close pools, exit 0. A configuration error exits 78 (EX_CONFIG) with a
 * message naming the setting.
 */
import { loadWorkerConfig } from '../src/config.js';
import { LensfleetError } from '../src/errors.js';
import { LensCatalog, loadLensModules } from '../src/lens.js';
import { maritimeLenses } from '../src/lenses/maritime.js';
import { createLogger } from '../src/logger.js';
import { loadTenantDirectory } from '../src/tenants.js';
import { startWorkerService, type WorkerService } from './service.js';

async function main(): Promise<void> {
  let service: WorkerService | undefined;
  const logger = createLogger({ level: process.env.LOG_LEVEL?.toLowerCase() || 'info' });
  try {
    const config = loadWorkerConfig();
    const tenants = loadTenantDirectory(config);
    if (tenants.ids().length === 0)
      logger.warn('no tenants configured (LENSFLEET_TENANTS / LENSFLEET_TENANTS_FILE): every job will fail with TENANT_NOT_FOUND');
    const catalog = new LensCatalog(maritimeLenses);
    await loadLensModules(catalog, config.lensModules);
    service = await startWorkerService({ config, tenants, catalog, logger });
  } catch (err) {
    const configError = err instanceof LensfleetError && err.code === 'INVALID_CONFIG';
    logger.fatal({ code: (err as LensfleetError).code }, `worker failed to start: ${(err as Error).message}`);
    logger.flush();
    setTimeout(() => process.exit(configError ? 78 : 1), 50).unref();
    return;
  }

  let signals = 0;
  const stop = (signal: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      logger.warn({ signal }, 'second signal: exiting now (active jobs will be retried elsewhere)');
      logger.flush();
      process.exit(1);
    }
    logger.info({ signal }, 'shutting down');
    service!
      .close()
      .then(() => {
        logger.flush();
        process.exit(0);
      })
      .catch((err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        logger.flush();
        process.exit(1);
      });
  };
  // SIGHUP re-reads the tenants file (and the environment this process was started with).
  process.on('SIGHUP', () => {
    let next: ReturnType<typeof loadTenantDirectory>;
    try {
      next = loadTenantDirectory(loadWorkerConfig());
    } catch (err) {
      logger.error({ code: (err as LensfleetError).code }, `reload rejected, keeping the current tenants: ${(err as Error).message}`);
      return;
    }
    service!.reload(next).catch((err: unknown) => logger.error({ msg: (err as Error).message }, 'reload: warming pools failed'));
  });
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.on('unhandledRejection', (reason) => logger.error({ err: reason }, 'unhandled rejection (kept running)'));
}

void main();

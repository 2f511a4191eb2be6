/**
 * Vitest global setup: one throwaway Redis and one throwaway Postgres for the whole run, from the
 * system's binaries. Those and the tools some tests run (prometheus and promtool, docker-compose)
 * are installed by `.ci/run`, or here when running as root with apt-get, so that a bare
 * `npm test` works on a new machine too.
 * Test files read them with `inject('redisUrl')` and `inject('pgAdminUrl')`.
 */
import type { TestProject } from 'vitest/node';
import { ensureSystemPackages, startPostgres, startRedis, type LocalPostgres, type LocalRedis } from '../dev/local/servers.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** `redis://127.0.0.1:<port>` of the run's Redis; use a fresh queue name/prefix per test. */
    redisUrl: string;
    /** Superuser URL of the run's Postgres (database `postgres`); create a database per test file. */
    pgAdminUrl: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const log = (line: string): void => console.error(`[global-setup] ${line}`);
  await ensureSystemPackages({ redis: true, postgres: true, prometheus: true, dockerCompose: true, pgbouncer: true, python: true, chromium: true, log });

  let redis: LocalRedis | undefined;
  let postgres: LocalPostgres | undefined;
  const teardown = async (): Promise<void> => {
    // Stop both even if one fails, and report the first failure.
    const results = await Promise.allSettled([redis?.stop(), postgres?.stop()]);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
  };
  // Tests are throwaway, so trade durability for speed; 300 connections leave room for the
  // pools of several parallel test files.
  const [redisStart, postgresStart] = await Promise.allSettled([startRedis(), startPostgres({ fsync: false, maxConnections: 300 })]);
  if (redisStart.status === 'fulfilled') redis = redisStart.value;
  if (postgresStart.status === 'fulfilled') postgres = postgresStart.value;
  if (!redis || !postgres) {
    // Whichever did start must not outlive the failed setup.
    await teardown().catch(() => {});
    throw redisStart.status === 'rejected' ? redisStart.reason : (postgresStart as PromiseRejectedResult).reason;
  }
  project.provide('redisUrl', redis.url);
  project.provide('pgAdminUrl', postgres.adminUrl());
  return teardown;
}

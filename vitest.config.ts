import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Starts one throwaway Redis and Postgres for the whole run (see test/global-setup.ts).
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Forks, not threads: tests start servers and send signals, which want real processes.
    pool: 'forks',
    // CI machines have 2 cores; more workers only contend with the Redis and Postgres servers.
    maxWorkers: 2,
    reporters: ['default'],
  },
});

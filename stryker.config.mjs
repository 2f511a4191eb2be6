// @ts-check
/**
 * Mutation testing, on demand only (`npm run test:mutation`; never part of `npm test` or CI: it
 * takes about an hour on 2 cores). StrykerJS changes the code one small way at a time (a flipped
 * condition, a removed call, another constant) and runs the tests that cover the change; a
 * mutant the tests do not notice ("survived") is behaviour nothing specifies.
 *
 * This file covers the modules that decide what a job, a setting and an endpoint mean: the
 * processor, the error registry, the configuration, the HTTP endpoints and the worker service.
 * The process entry point (`workers/lens-worker.ts`) runs only in child processes, where
 * per-test coverage cannot follow it: `stryker.process.config.mjs` mutates it with coverage
 * analysis off.
 *
 * Each Stryker test runner is a vitest instance whose global setup starts its own Redis and
 * Postgres (test/global-setup.ts), in the sandbox StrykerJS copies the project to. Child worker
 * processes run `dist/` compiled in that sandbox (the build command below) and inherit the
 * active mutant through `activeMutantEnv()` (test/support/harness.ts).
 */

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
const config = {
  testRunner: 'vitest',
  // The suite's config with the test files of mutation runs, ordered for bailing.
  vitest: { configFile: 'vitest.mutation.config.ts', related: true },
  mutate: ['workers/processor.ts', 'src/errors.ts', 'src/config.ts', 'src/http.ts', 'workers/service.ts'],
  // The test files are chosen in vitest.mutation.config.ts, not with Stryker's testFiles: with
  // testFiles, StrykerJS 9.6 activates a mutant of module-level code only once the tests run,
  // after the module has loaded, so such mutants could never be killed.
  coverageAnalysis: 'perTest',
  // Instrumented code does not type-check; child processes need dist/ built from it.
  disableTypeChecks: '{src,workers,queues,cli,dev,test}/**/*.ts',
  buildCommand: 'tsc -p tsconfig.json',
  // 2 cores: one test runner each (every runner has its own Redis and Postgres).
  concurrency: 2,
  // Real servers and real processes: a mutant that hangs is detected by the timeout, after this.
  timeoutMS: 20_000,
  dryRunTimeoutMinutes: 30,
  ignorePatterns: ['dist', 'docs/bench-runs', 'bench/results', 'reports'],
  reporters: ['clear-text', 'progress-append-only', 'html', 'json'],
  htmlReporter: { fileName: 'reports/mutation/modules.html' },
  jsonReporter: { fileName: 'reports/mutation/modules.json' },
  clearTextReporter: { allowEmojis: false, logTests: false, maxTestsToLog: 0 },
  tempDirName: '.stryker-tmp',
  cleanTempDir: 'always',
};

export default config;

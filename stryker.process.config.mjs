// @ts-check
/**
 * Mutation testing of the worker's process entry point (`workers/lens-worker.ts`: signals, exit
 * codes, start-up), the second half of `npm run test:mutation` (see stryker.config.mjs).
 *
 * That module runs only in child processes, and per-test coverage cannot see into a child, so
 * every mutant would count as "no coverage": coverage analysis is off here, and each mutant runs
 * the process-level tests below until one fails. The child learns the active mutant from the
 * environment (`activeMutantEnv()` in test/support/harness.ts) and runs `dist/` built in the
 * sandbox.
 */
import base from './stryker.config.mjs';

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
const config = {
  ...base,
  mutate: ['workers/lens-worker.ts'],
  testFiles: ['test/exit-codes.test.ts', 'test/shutdown.test.ts'],
  coverageAnalysis: 'off',
  // No test imports the entry point (they run it), so vitest's related mode would find none.
  vitest: { ...base.vitest, related: false },
  htmlReporter: { fileName: 'reports/mutation/process.html' },
  jsonReporter: { fileName: 'reports/mutation/process.json' },
};

export default config;

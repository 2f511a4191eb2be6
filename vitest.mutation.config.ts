/**
 * The vitest configuration of mutation runs (`npm run test:mutation`, stryker.config.mjs): the
 * suite's own, with the test files that exercise the mutated modules, ordered for bailing. Stryker stops a mutant's run at the first
 * failing test, and a mutant of module-level code (a settings table, the error registry: "static")
 * runs every test file. Vitest's default order (slowest first) made each such mutant wait for the
 * slowest files before the fast one that kills it; here a file that failed in the previous run
 * (it killed the previous mutant) goes first, then the fastest.
 */
import path from 'node:path';
import { BaseSequencer, type TestSpecification } from 'vitest/node';
import { defineConfig, mergeConfig } from 'vitest/config';
import base from './vitest.config.js';

/**
 * Test files that exercise the mutated modules in process (per-test coverage sees them). Left out:
 * the pool core, identity, dashboard and benchmark suites, tests that run the worker only as a
 * child process (warm-up, result bounds, secret files: per-test coverage cannot credit them) and
 * the 50-tenant budget test; a mutant of module-level code runs every file listed, so each one
 * costs every such mutant its run time.
 */
export const MUTATION_TEST_FILES = [
  'test/config.test.ts',
  'test/settings.test.ts',
  'test/lens-modules.test.ts',
  'test/errors.test.ts',
  'test/retry-policy.test.ts',
  'test/http-endpoints.test.ts',
  'test/http-surface.test.ts',
  'test/observability.test.ts',
  'test/service.test.ts',
  'test/bad-input.test.ts',
  'test/e2e.test.ts',
  'test/reload.test.ts',
  'test/retention.test.ts',
  'test/pool-timeout.test.ts',
  'test/identity-e2e.test.ts',
];

class KillersFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const cache = this.ctx.cache;
    const stats = (f: TestSpecification) => {
      // (the key vitest's own sequencer uses for its results cache)
      const result = cache.getFileTestResults(`${f.project.name}:${path.relative(this.ctx.config.root, f.moduleId)}`);
      return { failed: result?.failed ?? false, duration: result?.duration ?? 0 };
    };
    return [...files].sort((a, b) => {
      const sa = stats(a);
      const sb = stats(b);
      if (sa.failed !== sb.failed) return sa.failed ? -1 : 1;
      return sa.duration - sb.duration;
    });
  }
}

const config = mergeConfig(base, defineConfig({ test: { sequence: { sequencer: KillersFirst } } }));
// Replaced, not merged (mergeConfig would add these to the suite's `test/**/*.test.ts`).
config.test = { ...config.test, include: MUTATION_TEST_FILES };
export default config;

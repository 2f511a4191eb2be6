/**
 * The vitest configuration of mutation runs (`npm run test:mutation`, stryker.config.mjs): the
 * suite's own, with test files ordered for bailing. Stryker stops a mutant's run at the first
 * failing test, and a mutant of module-level code (a settings table, the error registry: "static")
 * runs every test file. Vitest's default order (slowest first) made each such mutant wait for the
 * slowest files before the fast one that kills it; here a file that failed in the previous run
 * (it killed the previous mutant) goes first, then the fastest.
 */
import path from 'node:path';
import { BaseSequencer, type TestSpecification } from 'vitest/node';
import { defineConfig, mergeConfig } from 'vitest/config';
import base from './vitest.config.js';

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

export default mergeConfig(base, defineConfig({ test: { sequence: { sequencer: KillersFirst } } }));

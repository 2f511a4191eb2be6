/**
 * The default process connection budget is sized by what the process can afford — file
 * descriptors and heap — not by its concurrency (issue 13 §1), and never starves running jobs;
 * a worker says at start when its tenants' minSize connections would not fit in it.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { DEFAULT_POOL_SETTINGS } from '../src/config.js';
import { warmFootprint } from '../src/pool/registry.js';
import { BYTES_PER_CONNECTION, defaultConnectionBudget, processLimits, RESERVED_DESCRIPTORS } from '../src/process-limits.js';

const GiB = 2 ** 30;

describe('defaultConnectionBudget', () => {
  it('is half the descriptors left after the reserve when they are scarcer than memory', () => {
    expect(defaultConnectionBudget(16, { openFiles: 1024, heapLimitBytes: 4 * GiB })).toBe((1024 - RESERVED_DESCRIPTORS) / 2);
    expect(defaultConnectionBudget(16, { openFiles: 1025, heapLimitBytes: 4 * GiB })).toBe(384);
  });

  it('is 5 % of the heap limit at 64 KiB a connection when memory is scarcer than descriptors', () => {
    expect(defaultConnectionBudget(16, { openFiles: 1_048_576, heapLimitBytes: 4 * GiB })).toBe(Math.floor((4 * GiB * 0.05) / BYTES_PER_CONNECTION));
    expect(defaultConnectionBudget(16, { openFiles: 1_048_576, heapLimitBytes: 4144 * 2 ** 20 })).toBe(3315);
    expect(defaultConnectionBudget(16, { openFiles: Number.MAX_SAFE_INTEGER, heapLimitBytes: 512 * 2 ** 20 })).toBe(409);
  });

  it('never goes below 2 × concurrency (every running job and as many idle connections)', () => {
    expect(defaultConnectionBudget(64, { openFiles: 256, heapLimitBytes: 4 * GiB })).toBe(128);
    expect(defaultConnectionBudget(64, { openFiles: 300, heapLimitBytes: 64 * 2 ** 20 })).toBe(128);
  });
});

describe('processLimits', () => {
  it('reads the soft open-file limit of this process and V8’s heap limit', () => {
    const limits = processLimits();
    expect(limits.heapLimitBytes).toBeGreaterThan(64 * 2 ** 20);
    if (process.platform === 'linux') {
      // The test runs where /proc exists: the value is the kernel's, not the 1,024 fallback, unless that is the limit.
      const line = readFileSync('/proc/self/limits', 'utf8')
        .split('\n')
        .find((l) => l.startsWith('Max open files'))!;
      const soft = line.slice('Max open files'.length).trim().split(/\s+/)[0]!;
      expect(limits.openFiles).toBe(soft === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(soft));
    }
  });
});

describe('warmFootprint', () => {
  const tenant = (minSize: number, extra: Partial<{ backend: string; pooling: boolean; maxSize: number; maxOverflow: number }> = {}) => ({
    id: `t${minSize}`,
    backend: extra.backend ?? 'pg',
    pooling: extra.pooling ?? true,
    pool: { ...DEFAULT_POOL_SETTINGS, minSize, maxSize: extra.maxSize ?? 20, maxOverflow: extra.maxOverflow ?? 5 },
  });

  it('adds each pooled Postgres tenant’s minSize, clamped to its effective max', () => {
    expect(warmFootprint([tenant(5), tenant(1), tenant(0)], 16)).toBe(6);
    // concurrency 4 clamps minSize 5 to 4; maxSize 2 + overflow 0 clamps it to 2
    expect(warmFootprint([tenant(5), tenant(5, { maxSize: 2, maxOverflow: 0 })], 4)).toBe(6);
  });

  it('leaves out tenants that keep no connections: connect-per-job and Supabase REST', () => {
    expect(warmFootprint([tenant(5, { pooling: false }), tenant(5, { backend: 'supabase' }), tenant(3)], 16)).toBe(3);
  });
});

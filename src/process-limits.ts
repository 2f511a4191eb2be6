/**
 * What one process can afford in connections: the default of the process connection budget
 * (`LENSFLEET_PROCESS_MAX_CONNECTIONS`). The budget protects the process — its file descriptors
 * and its memory — and nothing else: each tenant database is protected by its own pool ceiling
 * and fleet cap. A budget sized from the worker's concurrency alone (2 × 16 = 32) made a worker
 * with 1,000 tenants close a connection for almost every job (docs/BENCHMARKS.md, many tenants).
 */
import { readFileSync } from 'node:fs';
import { getHeapStatistics } from 'node:v8';

/** Descriptors kept for everything but tenant connections: Redis, HTTP, files, REST sockets. */
export const RESERVED_DESCRIPTORS = 256;
/** Share of the V8 heap limit tenant connections may take. */
export const HEAP_SHARE = 0.05;
/**
 * Heap one open connection is allowed: a `pg.Client` with its parser, buffers and our metadata,
 * rounded up from the 37 KB of RSS measured per idle tenant with its one connection
 * (docs/BENCHMARKS.md, "Many tenants").
 */
export const BYTES_PER_CONNECTION = 64 * 1024;

export interface ProcessLimits {
  /** The soft limit on open file descriptors (RLIMIT_NOFILE). */
  readonly openFiles: number;
  /** V8's heap size limit in bytes. */
  readonly heapLimitBytes: number;
}

/** This process's limits: Linux's /proc/self/limits, or 1,024 descriptors (a common default) elsewhere. */
export function processLimits(): ProcessLimits {
  return { openFiles: softOpenFiles() ?? 1024, heapLimitBytes: getHeapStatistics().heap_size_limit };
}

/**
 * The default process connection budget: as many connections as half the spare descriptors and
 * 5 % of the heap limit allow, and never below 2 × concurrency (room for every running job and
 * as many idle ones).
 */
export function defaultConnectionBudget(concurrency: number, limits: ProcessLimits): number {
  const byDescriptors = Math.floor((limits.openFiles - RESERVED_DESCRIPTORS) / 2);
  const byMemory = Math.floor((limits.heapLimitBytes * HEAP_SHARE) / BYTES_PER_CONNECTION);
  return Math.max(2 * concurrency, Math.min(byDescriptors, byMemory));
}

function softOpenFiles(): number | undefined {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
    if (soft === undefined) return undefined;
    // "unlimited" has no number: the heap bound decides then.
    return soft === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number.parseInt(soft, 10) || undefined;
  } catch {
    return undefined;
  }
}

/**
 * Bounded metric cardinality: with 1,000 tenant pools the scrape keeps the busiest N tenants by
 * name and folds the rest into tenant="other", with counters that never go backwards. The pool
 * stats here are synthetic on purpose: the point is the exporter's shape and size, not Postgres.
 */
import { performance } from 'node:perf_hooks';
import { describe, expect, it } from 'vitest';
import { LensfleetMetrics, type ProcessSnapshot } from '../src/metrics.js';
import { labelOf, POOL_COUNTER_KEYS, POOL_COUNTER_METRICS } from '../src/metrics-counters.js';
import { METRIC_CONTRACT } from './support/metric-contract.js';
import type { PoolStats } from '../src/pool/tenant-pool.js';

function stats(tenant: string, requests: number, inUse = 1): PoolStats {
  return {
    tenant,
    key: `${tenant}:service`,
    backend: 'pg',
    pooling: true,
    max: 4,
    min: 1,
    maxSize: 20,
    size: 2,
    opening: 0,
    inUse,
    idle: 2 - inUse,
    waiting: 0,
    requests_total: requests,
    requests_wait_ms_total: 0,
    acquire_timeouts_total: 0,
    pool_busy_total: 0,
    connections_opened_total: 2,
    connections_closed_total: { idle: 1 },
    connection_errors_total: {},
    pings_failed_total: 0,
    leaks_total: 0,
    lease_waits_total: 0,
    lease_timeouts_total: 0,
    idle_for_ms: 0,
    leases: 0,
  };
}

const proc: ProcessSnapshot = { pools: 0, connections: 0, maxConnections: 16, concurrency: 8, activeJobs: 0, pooling: true, ready: true };

function value(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

function tenantLabels(text: string, metric: string): Set<string> {
  const out = new Set<string>();
  for (const m of text.matchAll(new RegExp(`^${metric}\\{[^}]*tenant="([^"]+)"`, 'gm'))) out.add(m[1]!);
  return out;
}

describe('metric cardinality', () => {
  it('1,000 tenants: the busiest N by name, the rest summed under tenant="other"; scrape size bounded', async () => {
    let pools = Array.from({ length: 1000 }, (_, i) => stats(`y${String(i).padStart(4, '0')}`, i));
    const metrics = new LensfleetMetrics({ poolStats: () => pools, processStats: () => proc }, { defaultMetrics: false, maxTenantLabels: 20, rerankMs: 0 });
    const t0 = performance.now();
    const text = await metrics.metrics();
    const scrapeMs = performance.now() - t0;
    const labels = tenantLabels(text, 'lensfleet_pool_max_connections');
    expect(labels.size).toBe(21);
    expect(labels.has('other')).toBe(true);
    // the 20 busiest (most requests since the last ranking) keep their names
    for (let i = 980; i < 1000; i++) expect(labels.has(`y${String(i).padStart(4, '0')}`)).toBe(true);
    expect(value(text, 'lensfleet_pool_max_connections{tenant="other"}')).toBe(980 * 4);
    expect(value(text, 'lensfleet_pool_connections{tenant="other",state="in_use"}')).toBe(980);
    expect(value(text, 'lensfleet_pool_saturation_ratio{tenant="other"}')).toBeCloseTo(0.25);
    const otherRequests = (979 * 980) / 2; // 0 + 1 + … + 979
    expect(value(text, 'lensfleet_pool_acquire_requests_total{tenant="other"}')).toBe(otherRequests);
    expect(text.length).toBeLessThan(64 * 1024);
    console.log(
      `[figure] /metrics with 1,000 tenants (20 named + other, no default metrics): ${text.length} bytes, ${text.split('\n').length} lines, first scrape ${scrapeMs.toFixed(1)} ms`,
    );

    // Tenant y0000 becomes the busiest: it gets its name, and "other" keeps growing, never shrinking.
    pools = pools.map((p) => (p.tenant === 'y0000' ? stats('y0000', 1_000_000) : stats(p.tenant, p.requests_total + 1)));
    const text2 = await metrics.metrics();
    expect(tenantLabels(text2, 'lensfleet_pool_max_connections').has('y0000')).toBe(true);
    const other2 = value(text2, 'lensfleet_pool_acquire_requests_total{tenant="other"}')!;
    expect(other2).toBeGreaterThanOrEqual(otherRequests);
    expect(tenantLabels(text2, 'lensfleet_pool_max_connections').size).toBe(21);
  });

  it('scrape size and time at 1 and 1,000 tenants (figures for the docs)', async () => {
    for (const n of [1, 1000]) {
      const pools = Array.from({ length: n }, (_, i) => stats(`y${i}`, i));
      const metrics = new LensfleetMetrics({ poolStats: () => pools, processStats: () => proc }, { defaultMetrics: true });
      await metrics.metrics();
      const runs: number[] = [];
      let size = 0;
      for (let i = 0; i < 20; i++) {
        const t0 = performance.now();
        size = (await metrics.metrics()).length;
        runs.push(performance.now() - t0);
      }
      runs.sort((a, b) => a - b);
      console.log(`[figure] /metrics at ${n} tenant(s) (default 100 named): ${size} bytes, median scrape ${runs[10]!.toFixed(2)} ms`);
      expect(size).toBeLessThan(256 * 1024);
    }
  });

  it('a closed pool takes its named series with it', async () => {
    let pools = [stats('yA', 5), stats('yB', 3)];
    const metrics = new LensfleetMetrics({ poolStats: () => pools, processStats: () => proc }, { defaultMetrics: false });
    metrics.poolObserver.acquired?.('yA', 0.001);
    metrics.jobFinished('receiving.recent', 'yA', 'completed', 0.002);
    const before = await metrics.metrics();
    expect(before).toContain('lensfleet_pool_acquire_seconds_count{tenant="yA"} 1');
    expect(before).toContain('lensfleet_jobs_total{lens="receiving.recent",tenant="yA",outcome="completed"} 1');
    pools = [stats('yB', 3)];
    metrics.poolClosed('yA');
    const after = await metrics.metrics();
    expect(after).not.toContain('tenant="yA"');
    expect(after).toContain('lensfleet_pool_max_connections{tenant="yB"} 4');
  });

  it("one vocabulary: every counter of a pool's stats is exported under the metric the table names, with its value (ms as seconds), and is in the metric contract", async () => {
    const pool: PoolStats = {
      ...stats('yAll', 7),
      requests_wait_ms_total: 2500,
      acquire_timeouts_total: 2,
      pool_busy_total: 3,
      connections_opened_total: 4,
      connections_closed_total: { idle: 1, evicted: 5 },
      connection_errors_total: { connect: 6, process_budget_timeout: 8 },
      pings_failed_total: 9,
      leaks_total: 10,
    };
    const metrics = new LensfleetMetrics({ poolStats: () => [pool], processStats: () => proc }, { defaultMetrics: false });
    const text = await metrics.metrics();
    const expected: Record<string, number> = {
      'lensfleet_pool_acquire_requests_total{tenant="yAll"}': 7,
      'lensfleet_pool_acquire_wait_seconds_total{tenant="yAll"}': 2.5,
      'lensfleet_pool_acquire_timeouts_total{tenant="yAll"}': 2,
      'lensfleet_pool_busy_total{tenant="yAll"}': 3,
      'lensfleet_pool_connections_opened_total{tenant="yAll"}': 4,
      'lensfleet_pool_connections_closed_total{tenant="yAll",reason="idle"}': 1,
      'lensfleet_pool_connections_closed_total{tenant="yAll",reason="evicted"}': 5,
      'lensfleet_pool_connection_errors_total{tenant="yAll",kind="connect"}': 6,
      'lensfleet_pool_connection_errors_total{tenant="yAll",kind="process_budget_timeout"}': 8,
      'lensfleet_pool_pings_failed_total{tenant="yAll"}': 9,
      'lensfleet_pool_leaks_total{tenant="yAll"}': 10,
    };
    for (const [series, v] of Object.entries(expected)) expect(value(text, series), series).toBe(v);
    // Every counter key of the snapshot has a row, and every row is a contract counter with its labels.
    const counterKeys = Object.entries(pool)
      .filter(([k, v]) => k.endsWith('_total') && (typeof v === 'number' || typeof v === 'object'))
      .map(([k]) => k);
    expect([...POOL_COUNTER_KEYS].sort()).toEqual(counterKeys.sort());
    for (const key of POOL_COUNTER_KEYS) {
      const spec = POOL_COUNTER_METRICS[key];
      const label = labelOf(spec);
      expect(METRIC_CONTRACT.find((m) => m.name === spec.name)).toEqual({ name: spec.name, type: 'counter', labels: label ? ['tenant', label] : ['tenant'] });
    }
  });
});

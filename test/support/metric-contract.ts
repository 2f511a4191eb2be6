/**
 * The metric contract every worker exports on `GET /metrics` (docs/OBSERVABILITY.md).
 * Dashboards, alert rules and the metrics code are checked against this one list.
 *
 * Labels are the ones the worker sets; Prometheus adds `job` and `instance` at scrape time.
 * prom-client's default process metrics (`process_*`, `nodejs_*`) are exported too but are
 * not part of this list.
 */

export type MetricType = 'counter' | 'gauge' | 'histogram';

export interface MetricSpec {
  readonly name: string;
  readonly type: MetricType;
  readonly labels: readonly string[];
}

export const METRIC_CONTRACT: readonly MetricSpec[] = Object.freeze([
  // Per tenant pool (low-traffic tenants may be aggregated into tenant="other").
  { name: 'lensfleet_pool_connections', type: 'gauge', labels: ['tenant', 'state'] },
  { name: 'lensfleet_pool_max_connections', type: 'gauge', labels: ['tenant'] },
  { name: 'lensfleet_pool_min_connections', type: 'gauge', labels: ['tenant'] },
  { name: 'lensfleet_pool_waiting_requests', type: 'gauge', labels: ['tenant'] },
  { name: 'lensfleet_pool_saturation_ratio', type: 'gauge', labels: ['tenant'] },
  { name: 'lensfleet_pool_acquire_seconds', type: 'histogram', labels: ['tenant'] },
  { name: 'lensfleet_pool_connect_seconds', type: 'histogram', labels: ['tenant'] },
  { name: 'lensfleet_pool_acquire_requests_total', type: 'counter', labels: ['tenant'] },
  { name: 'lensfleet_pool_acquire_wait_seconds_total', type: 'counter', labels: ['tenant'] },
  { name: 'lensfleet_pool_acquire_timeouts_total', type: 'counter', labels: ['tenant'] },
  { name: 'lensfleet_pool_busy_total', type: 'counter', labels: ['tenant'] },
  { name: 'lensfleet_pool_connection_errors_total', type: 'counter', labels: ['tenant', 'kind'] },
  { name: 'lensfleet_pool_connections_opened_total', type: 'counter', labels: ['tenant'] },
  { name: 'lensfleet_pool_connections_closed_total', type: 'counter', labels: ['tenant', 'reason'] },
  { name: 'lensfleet_pool_pings_failed_total', type: 'counter', labels: ['tenant'] },
  { name: 'lensfleet_pool_leaks_total', type: 'counter', labels: ['tenant'] },
  // Per tenant: the fleet connection cap (leases held by this worker, opens that waited or timed out).
  { name: 'lensfleet_fleet_leases', type: 'gauge', labels: ['tenant'] },
  { name: 'lensfleet_fleet_lease_waits_total', type: 'counter', labels: ['tenant'] },
  { name: 'lensfleet_fleet_lease_timeouts_total', type: 'counter', labels: ['tenant'] },
  // Per tenant: admission (jobs put back in the queue; the tenant's circuit breaker in this worker).
  { name: 'lensfleet_job_deferrals_total', type: 'counter', labels: ['tenant', 'reason'] },
  { name: 'lensfleet_breaker_state', type: 'gauge', labels: ['tenant'] },
  { name: 'lensfleet_breaker_transitions_total', type: 'counter', labels: ['tenant', 'to'] },
  // Per process.
  { name: 'lensfleet_pools', type: 'gauge', labels: [] },
  { name: 'lensfleet_process_connections', type: 'gauge', labels: [] },
  { name: 'lensfleet_process_max_connections', type: 'gauge', labels: [] },
  { name: 'lensfleet_worker_concurrency', type: 'gauge', labels: [] },
  { name: 'lensfleet_worker_active_jobs', type: 'gauge', labels: [] },
  { name: 'lensfleet_pooling_enabled', type: 'gauge', labels: [] },
  { name: 'lensfleet_worker_ready', type: 'gauge', labels: [] },
  { name: 'lensfleet_warmup_failures_total', type: 'counter', labels: [] },
  { name: 'lensfleet_fleet_redis_errors_total', type: 'counter', labels: ['operation'] },
  // Per lens.
  { name: 'lensfleet_jobs_total', type: 'counter', labels: ['lens', 'tenant', 'outcome'] },
  { name: 'lensfleet_job_duration_seconds', type: 'histogram', labels: ['lens'] },
  { name: 'lensfleet_job_queue_wait_seconds', type: 'histogram', labels: ['lens'] },
  // Queue depth: identical on every worker, so aggregate fleet-wide with max, never sum.
  { name: 'lensfleet_queue_jobs', type: 'gauge', labels: ['queue', 'state'] },
] satisfies MetricSpec[]);

export const METRIC_NAMES: readonly string[] = Object.freeze(METRIC_CONTRACT.map((m) => m.name));

const HISTOGRAM_SERIES_SUFFIXES = ['_bucket', '_sum', '_count'] as const;

/**
 * The contract metric a series name belongs to (`lensfleet_job_duration_seconds_bucket` →
 * `lensfleet_job_duration_seconds`), or `undefined` when the name is not in the contract.
 */
export function contractMetricOf(seriesName: string): MetricSpec | undefined {
  const exact = METRIC_CONTRACT.find((m) => m.name === seriesName);
  if (exact) return exact;
  for (const suffix of HISTOGRAM_SERIES_SUFFIXES) {
    if (!seriesName.endsWith(suffix)) continue;
    const base = seriesName.slice(0, -suffix.length);
    const spec = METRIC_CONTRACT.find((m) => m.name === base);
    if (spec?.type === 'histogram') return spec;
  }
  return undefined;
}

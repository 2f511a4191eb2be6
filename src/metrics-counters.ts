/**
 * One vocabulary for pool counters: every counter of a pool's stats snapshot (`PoolCounters`,
 * whose keys carry their unit) and the Prometheus metric it is exported as. The exporter
 * (metrics.ts) and the per-tenant accumulation (metrics-tenants.ts) loop over this table; the
 * compiler checks that every counter has exactly one row, and that a counter kept per reason or
 * kind has the label it goes under. Metric names are a contract (README, deploy/): never rename one.
 */
import type { PoolCounters } from './pool/types.js';

export type PoolCounterKey = keyof PoolCounters;

interface PlainCounterMetric {
  readonly name: string;
  readonly help: string;
  /** Multiplier from the stats unit to the metric's base unit (milliseconds → seconds). @defaultValue 1 */
  readonly scale?: number;
}

interface KeyedCounterMetric {
  readonly name: string;
  readonly help: string;
  /** The label a keyed counter's keys (close reasons, error kinds) go under. */
  readonly label: string;
}

export type PoolCounterMetric = PlainCounterMetric | KeyedCounterMetric;

type CounterTable = { readonly [K in PoolCounterKey]: PoolCounters[K] extends number ? PlainCounterMetric : KeyedCounterMetric };

export const POOL_COUNTER_METRICS = {
  requests_total: {
    name: 'lensfleet_pool_acquire_requests_total',
    help: 'Connection acquire requests of a tenant pool.',
  },
  requests_wait_ms_total: {
    name: 'lensfleet_pool_acquire_wait_seconds_total',
    help: 'Time acquire requests of a tenant pool waited, whatever their outcome (granted, timed out, failed); divided by the acquire requests, the mean wait.',
    scale: 0.001,
  },
  acquire_timeouts_total: {
    name: 'lensfleet_pool_acquire_timeouts_total',
    help: 'Acquires that waited longer than the acquire timeout (POOL_TIMEOUT).',
  },
  pool_busy_total: {
    name: 'lensfleet_pool_busy_total',
    help: 'Acquires refused at once because max_waiting acquires were already waiting (POOL_BUSY).',
  },
  connections_opened_total: {
    name: 'lensfleet_pool_connections_opened_total',
    help: 'Connections opened by a tenant pool.',
  },
  connections_closed_total: {
    name: 'lensfleet_pool_connections_closed_total',
    help: 'Connections closed by a tenant pool by reason.',
    label: 'reason',
  },
  connection_errors_total: {
    name: 'lensfleet_pool_connection_errors_total',
    help: 'Connection errors of a tenant pool by kind (connect, connect_timeout, process_budget_timeout, idle, active).',
    label: 'kind',
  },
  pings_failed_total: {
    name: 'lensfleet_pool_pings_failed_total',
    help: 'Idle connections of a tenant pool that failed their pre-ping and were replaced before hand-out.',
  },
  leaks_total: {
    name: 'lensfleet_pool_leaks_total',
    help: 'Connections held longer than the leak detection threshold.',
  },
  lease_waits_total: {
    name: 'lensfleet_fleet_lease_waits_total',
    help: "Connection opens that waited for a fleet lease because the tenant's fleet connection cap (fleetMaxConnections) was reached.",
  },
  lease_timeouts_total: {
    name: 'lensfleet_fleet_lease_timeouts_total',
    help: 'Connection opens that got no fleet lease within the connect timeout (FLEET_CAP_TIMEOUT).',
  },
} as const satisfies CounterTable;

/** The table's keys, in its order. */
export const POOL_COUNTER_KEYS = Object.keys(POOL_COUNTER_METRICS) as readonly PoolCounterKey[];

/** The label of a keyed counter, undefined for a plain one. */
export function labelOf(metric: PoolCounterMetric): string | undefined {
  return 'label' in metric ? metric.label : undefined;
}

/**
 * Prometheus metrics: an observer of the pools and the worker. Pool gauges and counters are read
 * from the pools' stats snapshots at scrape time (pull, as HikariCP's adapter does), so a pool
 * that closes takes its series with it; only what happens per job or acquire (latencies, the jobs
 * counter) is observed per event, into cells found by label value (metrics-hot.ts).
 * Metric names are a contract (README, deploy/): never rename one.
 */
import client, { Counter, Gauge, Registry } from 'prom-client';
import { labelOf, POOL_COUNTER_KEYS, POOL_COUNTER_METRICS } from './metrics-counters.js';
import { KeyedCounter3, KeyedHistogram } from './metrics-hot.js';
import { TenantLabels, type TenantSeries } from './metrics-tenants.js';
import type { BreakerSnapshot, BreakerState } from './breaker.js';
import { DEFER_REASONS, type DeferReason } from './deferral.js';
import { FLEET_OPERATIONS, type FleetOperation } from './fleet/leases.js';
import type { PoolObserver, PoolStats } from './pool/tenant-pool.js';
import { withTimeout } from './timeout.js';

export interface ProcessSnapshot {
  readonly pools: number;
  readonly connections: number;
  readonly maxConnections: number;
  readonly concurrency: number;
  readonly activeJobs: number;
  readonly pooling: boolean;
  readonly ready: boolean;
}

export interface MetricsSources {
  poolStats(): PoolStats[];
  processStats(): ProcessSnapshot;
  /** Queue depth by state, read at scrape time (one Redis round trip). */
  queueCounts?(): Promise<Record<string, number>>;
  readonly queueName?: string;
  /** Tenants' circuit breakers that are not closed or have failures counted, read at scrape time. */
  breakers?(): readonly BreakerSnapshot[];
}

/** `lensfleet_breaker_state`'s values: the worse state wins when tenants share a label. */
const BREAKER_STATE_VALUES: Readonly<Record<BreakerState, number>> = { closed: 0, half_open: 1, open: 2 };

export type JobOutcome = 'completed' | 'failed' | 'retried';

export interface MetricsOptions {
  /** Export prom-client's process metrics. @defaultValue true */
  readonly defaultMetrics?: boolean;
  /** Tenants exported under their own label; the rest become tenant="other". @defaultValue 100 */
  readonly maxTenantLabels?: number;
  /** How often the busiest tenants are re-ranked. @defaultValue 60000 */
  readonly rerankMs?: number;
}

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** BullMQ keeps jobs added with a priority apart from `waiting`, in `prioritized`. */
export const QUEUE_STATES = ['waiting', 'prioritized', 'active', 'delayed', 'failed'] as const;

export class LensfleetMetrics {
  readonly registry = new Registry();
  readonly poolObserver: PoolObserver;
  // Observed per job or per acquire: cells found by label value (metrics-hot.ts).
  readonly #acquire: KeyedHistogram;
  readonly #connect: KeyedHistogram;
  readonly #jobs: KeyedCounter3;
  readonly #jobDuration: KeyedHistogram;
  readonly #queueWait: KeyedHistogram;
  readonly #warmUpFailures: Counter;
  readonly #fleetErrors: Counter<'operation'>;
  readonly #deferrals: Counter<'tenant' | 'reason'>;
  readonly #breakerTransitions: Counter<'tenant' | 'to'>;

  readonly #labels: TenantLabels;
  /** The per-scrape tenant aggregation (shared by all pool metrics) must be recomputed. */
  #stale = true;

  constructor(sources: MetricsSources, opts: MetricsOptions = {}) {
    const registers = [this.registry];
    if (opts.defaultMetrics !== false) {
      client.collectDefaultMetrics({ register: this.registry });
      // Gauges named *_total break `promtool check metrics`; the per-type series
      // (nodejs_active_handles etc.) carry the same information.
      for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'])
        this.registry.removeSingleMetric(name);
    }

    // Tenant labels are bounded (busiest N named, the rest "other"); one aggregation per scrape
    // is shared by every pool metric's collect().
    const labels = new TenantLabels(opts.maxTenantLabels ?? 100, opts.rerankMs ?? 60_000, (label) => this.#dropLabel(label));
    this.#labels = labels;
    let snapshot = new Map<string, TenantSeries>();
    const series = (): Map<string, TenantSeries> => {
      if (this.#stale) {
        snapshot = labels.collect(sources.poolStats());
        this.#stale = false;
      }
      return snapshot;
    };
    const poolGauge = (name: string, help: string, value: (s: TenantSeries) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ['tenant'],
        registers,
        collect() {
          this.reset();
          for (const [tenant, s] of series()) this.set({ tenant }, value(s));
        },
      });
    new Gauge({
      name: 'lensfleet_pool_connections',
      help: 'Open connections of a tenant pool by state (in_use, idle).',
      labelNames: ['tenant', 'state'],
      registers,
      collect() {
        this.reset();
        for (const [tenant, s] of series()) {
          this.set({ tenant, state: 'in_use' }, s.inUse);
          this.set({ tenant, state: 'idle' }, s.idle);
        }
      },
    });
    poolGauge(
      'lensfleet_pool_max_connections',
      'Effective connection ceiling of a tenant pool: min(max_size + max_overflow, worker concurrency).',
      (s) => s.max,
    );
    poolGauge('lensfleet_pool_min_connections', 'Connections a tenant pool keeps warm (min_size).', (s) => s.min);
    poolGauge('lensfleet_pool_waiting_requests', 'Acquires waiting for a connection of a tenant pool.', (s) => s.waiting);
    poolGauge(
      'lensfleet_fleet_leases',
      'Fleet connection leases this worker holds for a tenant with a fleet cap (fleetMaxConnections); sum by tenant over the fleet to compare with the cap. 0 for tenants without a cap.',
      (s) => s.leases,
    );
    poolGauge('lensfleet_pool_saturation_ratio', 'Connections in use divided by the effective ceiling (0..1).', (s) => (s.max > 0 ? s.inUse / s.max : 0));
    // Every pool counter, from the one table (metrics-counters.ts): stats key → metric.
    for (const key of POOL_COUNTER_KEYS) {
      const spec = POOL_COUNTER_METRICS[key];
      const label = labelOf(spec);
      const scale = 'scale' in spec ? spec.scale : 1;
      new Counter({
        name: spec.name,
        help: spec.help,
        labelNames: label === undefined ? ['tenant'] : ['tenant', label],
        registers,
        collect() {
          this.reset();
          for (const [tenant, s] of series()) {
            const values = s.counters.get(key);
            if (label !== undefined) {
              for (const [k, n] of values ?? []) this.inc({ tenant, [label]: k }, n);
            } else {
              // A plain counter is exported from the start, at 0 (rate() needs the first sample).
              this.inc({ tenant }, (values?.get('') ?? 0) * scale);
            }
          }
        },
      });
    }

    this.#acquire = new KeyedHistogram({
      name: 'lensfleet_pool_acquire_seconds',
      help: 'Time from an acquire request to hand-out of a connection.',
      labelName: 'tenant',
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.#connect = new KeyedHistogram({
      name: 'lensfleet_pool_connect_seconds',
      help: 'Time to open one new connection.',
      labelName: 'tenant',
      buckets: LATENCY_BUCKETS,
      registers,
    });
    const acquire = this.#acquire;
    const connect = this.#connect;
    this.poolObserver = {
      acquired: (tenant, seconds) => acquire.observe(labels.label(tenant), seconds),
      connected: (tenant, seconds) => connect.observe(labels.label(tenant), seconds),
    };
    const proc = (name: string, help: string, value: (p: ProcessSnapshot) => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(value(sources.processStats()));
        },
      });
    proc('lensfleet_pools', 'Active tenant pools in this process.', (p) => p.pools);
    proc(
      'lensfleet_process_connections',
      'Open database connections over all tenant pools of this process (what the process budget counts; REST sockets of Supabase tenants are not included).',
      (p) => p.connections,
    );
    proc(
      'lensfleet_process_max_connections',
      'Connection budget of this process over all tenants (LENSFLEET_PROCESS_MAX_CONNECTIONS).',
      (p) => p.maxConnections,
    );
    proc('lensfleet_worker_concurrency', 'Jobs this worker runs at once.', (p) => p.concurrency);
    proc('lensfleet_worker_active_jobs', 'Jobs running now in this worker.', (p) => p.activeJobs);
    proc('lensfleet_pooling_enabled', '1 when pooling is on, 0 when the rollback switch (LENSFLEET_POOLING=off) is set.', (p) => (p.pooling ? 1 : 0));
    proc('lensfleet_worker_ready', '1 when the worker is ready (Redis reachable, not draining).', (p) => (p.ready ? 1 : 0));
    this.#warmUpFailures = new Counter({
      name: 'lensfleet_warmup_failures_total',
      help: "Warm tenants (LENSFLEET_WARM_TENANTS) whose pool could not be created at start or reload (not one connection opened); the tenant's first job tries again.",
      registers,
    });
    this.#fleetErrors = new Counter({
      name: 'lensfleet_fleet_redis_errors_total',
      help: 'Redis calls of the fleet that failed, by operation (acquire, renew, release: connection leases; heartbeat: membership). While Redis is unreachable a capped tenant opens no new connection (the fleet cap fails closed).',
      labelNames: ['operation'],
      registers,
    });
    // Every operation from the start, at 0 (rate() needs the first sample).
    for (const operation of FLEET_OPERATIONS) this.#fleetErrors.inc({ operation }, 0);

    if (sources.queueCounts) {
      const queue = sources.queueName ?? 'lens-queries';
      const counts = sources.queueCounts;
      new Gauge({
        name: 'lensfleet_queue_jobs',
        help: 'Jobs in the queue by state. Every worker reports the same value: aggregate with max by (queue, state), never sum.',
        labelNames: ['queue', 'state'],
        registers,
        async collect() {
          this.reset();
          try {
            const c = await withTimeout(counts(), 1000);
            for (const state of QUEUE_STATES) this.set({ queue, state }, c[state] ?? 0);
          } catch {
            // Redis unreachable: omit the series rather than report a false zero.
          }
        },
      });
    }

    // A tenant's series from its first scrape, at 0 (rate() and increase() need a first sample).
    this.#deferrals = new Counter({
      name: 'lensfleet_job_deferrals_total',
      help: 'Jobs put back in the queue, delayed, without using up an attempt, by tenant and reason: busy = its pool could not serve it now (LENSFLEET_DEFER_WHEN_BUSY), breaker_open = its circuit breaker is open.',
      labelNames: ['tenant', 'reason'],
      registers,
      collect() {
        for (const tenant of series().keys()) for (const reason of DEFER_REASONS) this.inc({ tenant, reason }, 0);
      },
    });
    new Gauge({
      name: 'lensfleet_breaker_state',
      help: 'A tenant\'s circuit breaker in this worker: 0 closed, 1 half-open (one probe job runs), 2 open (its jobs are delayed); for tenant="other" the worst of its tenants.',
      labelNames: ['tenant'],
      registers,
      collect() {
        this.reset();
        const values = new Map<string, number>();
        for (const tenant of series().keys()) values.set(tenant, 0);
        for (const b of sources.breakers?.() ?? []) {
          const label = labels.label(b.tenant);
          values.set(label, Math.max(values.get(label) ?? 0, BREAKER_STATE_VALUES[b.state]));
        }
        for (const [tenant, v] of values) this.set({ tenant }, v);
      },
    });
    this.#breakerTransitions = new Counter({
      name: 'lensfleet_breaker_transitions_total',
      help: "Changes of a tenant's circuit breaker in this worker, by the state entered (open, half_open, closed).",
      labelNames: ['tenant', 'to'],
      registers,
      collect() {
        for (const tenant of series().keys()) this.inc({ tenant, to: 'open' }, 0);
      },
    });

    this.#jobs = new KeyedCounter3({
      name: 'lensfleet_jobs_total',
      help: 'Lens jobs by lens, tenant and outcome (completed, failed = final failure, retried).',
      labelNames: ['lens', 'tenant', 'outcome'],
      registers,
    });
    this.#jobDuration = new KeyedHistogram({
      name: 'lensfleet_job_duration_seconds',
      help: 'Processing time of a lens job in the worker (validation, acquire, query).',
      labelName: 'lens',
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.#queueWait = new KeyedHistogram({
      name: 'lensfleet_job_queue_wait_seconds',
      help: 'Time a job waited in the queue before a worker started it.',
      labelName: 'lens',
      buckets: LATENCY_BUCKETS,
      registers,
    });
  }

  /** Record a finished job attempt. `lens`/`tenant` must be known names or "unknown" (bounded cardinality). */
  jobFinished(lens: string, tenant: string, outcome: JobOutcome, durationSeconds: number): void {
    const label = tenant === 'unknown' ? tenant : this.#labels.label(tenant);
    this.#jobs.inc(lens, label, outcome);
    this.#jobDuration.observe(lens, durationSeconds);
  }

  /** A warm tenant's pool could not be created (the log line names the tenant; no label here: warm tenants may be all tenants). */
  /** A Redis call of the fleet (lease ask, renewal, release, heartbeat) failed. */
  fleetRedisError(operation: FleetOperation): void {
    this.#fleetErrors.inc({ operation });
  }

  /** A job was put back in the queue (deferred). */
  jobDeferred(tenant: string, reason: DeferReason, count = 1): void {
    this.#deferrals.inc({ tenant: this.#labels.label(tenant), reason }, count);
  }

  /** A tenant's circuit breaker changed state. */
  breakerTransition(tenant: string, to: BreakerState): void {
    this.#breakerTransitions.inc({ tenant: this.#labels.label(tenant), to });
  }

  warmUpFailed(): void {
    this.#warmUpFailures.inc();
  }

  jobStarted(lens: string, queueWaitSeconds: number): void {
    if (queueWaitSeconds >= 0) this.#queueWait.observe(lens, queueWaitSeconds);
  }

  /** A tenant's pool closed: its series go (a named tenant) or it stops adding to "other". */
  poolClosed(tenant: string): void {
    this.#labels.forget(tenant);
    this.#stale = true;
  }

  #dropLabel(label: string): void {
    this.#acquire.remove(label);
    this.#connect.remove(label);
    for (const reason of DEFER_REASONS) this.#deferrals.remove({ tenant: label, reason });
    for (const to of Object.keys(BREAKER_STATE_VALUES)) this.#breakerTransitions.remove({ tenant: label, to });
    this.#jobs.removeSecond(label);
  }

  contentType(): string {
    return this.registry.contentType;
  }

  /** One scrape: pool stats are read once and shared by every pool metric. */
  metrics(): Promise<string> {
    this.#stale = true;
    return this.registry.metrics();
  }
}

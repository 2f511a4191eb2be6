/**
 * Bounded tenant cardinality for metrics. The busiest `maxNamed` tenants (by acquire requests
 * since the last ranking) keep their own `tenant` label; every other tenant is folded into
 * `tenant="other"`. Gauges are summed per label at scrape time. Counters are accumulated from
 * per-tenant deltas, so each label's counter only ever grows — a tenant moving in or out of the
 * named set, or a pool being replaced, never makes a counter go backwards.
 */
import { POOL_COUNTER_KEYS, type PoolCounterKey } from './metrics-counters.js';
import type { PoolStats } from './pool/tenant-pool.js';

export const OTHER_TENANT = 'other';

/** Values of one `tenant` label at one scrape. */
export interface TenantSeries {
  inUse: number;
  idle: number;
  max: number;
  min: number;
  waiting: number;
  /** Fleet leases held. */
  leases: number;
  /**
   * Monotonic counters by stats key (metrics-counters.ts): a keyed counter's values by key (close
   * reason, error kind), a plain counter's under ''.
   */
  readonly counters: CounterValues;
}

export type CounterValues = Map<PoolCounterKey, Map<string, number>>;

export class TenantLabels {
  readonly #maxNamed: number;
  readonly #rerankMs: number;
  readonly #onDrop: (label: string) => void;
  readonly #named = new Set<string>();
  /** Counters accumulated per label. */
  readonly #acc = new Map<string, CounterValues>();
  /** The values each tenant's pool reported at the last scrape, to add only what grew since. */
  readonly #last = new Map<string, CounterValues>();
  readonly #requestsAtRank = new Map<string, number>();
  #rankedAt = Date.now();

  /** `onDrop(label)` is called when a label stops being exported (remove its series elsewhere). */
  constructor(maxNamed: number, rerankMs: number, onDrop: (label: string) => void) {
    this.#maxNamed = maxNamed;
    this.#rerankMs = rerankMs;
    this.#onDrop = onDrop;
  }

  /** The label a tenant's observations go under now. */
  label(tenant: string): string {
    if (this.#named.has(tenant)) return tenant;
    if (this.#named.size < this.#maxNamed) {
      this.#named.add(tenant);
      return tenant;
    }
    return OTHER_TENANT;
  }

  /** Series per label for this scrape. */
  collect(stats: readonly PoolStats[]): Map<string, TenantSeries> {
    if (Date.now() - this.#rankedAt >= this.#rerankMs) this.#rerank(stats);
    const out = new Map<string, TenantSeries>();
    for (const s of stats) {
      const label = this.label(s.tenant);
      let series = out.get(label);
      if (series === undefined) {
        series = { inUse: 0, idle: 0, max: 0, min: 0, waiting: 0, leases: 0, counters: this.#accumulator(label) };
        out.set(label, series);
      }
      series.inUse += s.inUse;
      series.idle += s.idle;
      series.max += s.max;
      series.min += s.min;
      series.waiting += s.waiting;
      series.leases += s.leases;
      this.#addDeltas(s, series.counters);
    }
    // A label whose pools all closed keeps exporting its counters until it is dropped.
    for (const [label, counters] of this.#acc) {
      if (!out.has(label)) out.set(label, { inUse: 0, idle: 0, max: 0, min: 0, waiting: 0, leases: 0, counters });
    }
    return out;
  }

  /** A tenant's pool closed: a named tenant's series go, an `other` tenant stops contributing. */
  forget(tenant: string): void {
    this.#last.delete(tenant);
    this.#requestsAtRank.delete(tenant);
    if (this.#named.delete(tenant)) this.#drop(tenant);
  }

  #accumulator(label: string): CounterValues {
    let acc = this.#acc.get(label);
    if (acc === undefined) {
      acc = new Map();
      this.#acc.set(label, acc);
    }
    return acc;
  }

  #addDeltas(s: PoolStats, acc: CounterValues): void {
    let last = this.#last.get(s.tenant);
    if (last === undefined) {
      last = new Map();
      this.#last.set(s.tenant, last);
    }
    for (const key of POOL_COUNTER_KEYS) {
      const value = s[key];
      if (typeof value === 'number') add(last, acc, key, '', value);
      else for (const k in value) add(last, acc, key, k, value[k]!);
    }
  }

  #rerank(stats: readonly PoolStats[]): void {
    this.#rankedAt = Date.now();
    const activity = stats.map((s) => {
      const a = s.requests_total - (this.#requestsAtRank.get(s.tenant) ?? 0);
      this.#requestsAtRank.set(s.tenant, s.requests_total);
      return { tenant: s.tenant, a };
    });
    activity.sort((x, y) => y.a - x.a || (x.tenant < y.tenant ? -1 : 1));
    const next = new Set(activity.slice(0, this.#maxNamed).map((x) => x.tenant));
    for (const t of [...this.#named]) {
      if (!next.has(t)) {
        this.#named.delete(t);
        this.#drop(t);
      }
    }
    for (const t of next) this.#named.add(t);
  }

  #drop(label: string): void {
    this.#acc.delete(label);
    this.#onDrop(label);
  }
}

/** Add what one counter of one tenant's pool grew by since the last scrape to its label's total. */
function add(last: CounterValues, acc: CounterValues, key: PoolCounterKey, k: string, current: number): void {
  const seen = inner(last, key);
  const previous = seen.get(k) ?? 0;
  // A replaced pool starts again from zero: count its whole value as new.
  const delta = current >= previous ? current - previous : current;
  seen.set(k, current);
  const total = inner(acc, key);
  total.set(k, (total.get(k) ?? 0) + delta);
}

function inner(values: CounterValues, key: PoolCounterKey): Map<string, number> {
  let m = values.get(key);
  if (m === undefined) {
    m = new Map();
    values.set(key, m);
  }
  return m;
}

/**
 * The metrics observed on every job (queue wait, duration, acquire time, the jobs counter), kept
 * in plain cells found by their label values, and exported through prom-client's registry in the
 * text prom-client's own Histogram and Counter produce.
 *
 * Why not prom-client's classes here: each `observe`/`inc` builds a closure and a labels object,
 * validates the labels and builds a hash string of them, so a job's three observations and one
 * increment cost about 3 µs of a worker's ~40 µs of its own work per job (CPU profile of the
 * primary-key lens; docs/BENCHMARKS.md). Here an observation is a Map lookup (of the label value
 * itself) and a bucket increment. Everything scraped is computed at scrape time.
 */
import type { Registry } from 'prom-client';

/** What prom-client's registry reads from a metric (`get()`), and the reset it calls. */
interface RegisteredMetric {
  readonly name: string;
  readonly help: string;
  readonly type: 'histogram' | 'counter';
  readonly aggregator: 'sum';
  get(): Promise<{
    name: string;
    help: string;
    type: 'histogram' | 'counter';
    aggregator: 'sum';
    values: { labels: Record<string, string | number>; value: number; metricName?: string }[];
  }>;
  reset(): void;
}

interface HistogramCell {
  /** Observations per bucket (not cumulative); the last slot is above every bound. */
  readonly counts: Float64Array;
  sum: number;
  count: number;
}

/** A histogram with one label, observed by that label's value. */
export class KeyedHistogram implements RegisteredMetric {
  readonly type = 'histogram' as const;
  readonly aggregator = 'sum' as const;
  readonly name: string;
  readonly help: string;
  readonly #labelName: string;
  readonly #bounds: readonly number[];
  readonly #cells = new Map<string, HistogramCell>();

  constructor(opts: { name: string; help: string; labelName: string; buckets: readonly number[]; registers: readonly Registry[] }) {
    this.name = opts.name;
    this.help = opts.help;
    this.#labelName = opts.labelName;
    this.#bounds = [...opts.buckets].sort((a, b) => a - b);
    for (const r of opts.registers) r.registerMetric(this as never);
  }

  observe(labelValue: string, value: number): void {
    if (!Number.isFinite(value)) return;
    let cell = this.#cells.get(labelValue);
    if (cell === undefined) {
      cell = { counts: new Float64Array(this.#bounds.length + 1), sum: 0, count: 0 };
      this.#cells.set(labelValue, cell);
    }
    const bounds = this.#bounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    cell.counts[i]!++;
    cell.sum += value;
    cell.count++;
  }

  /** Drop a label value's series (a tenant that stopped being exported). */
  remove(labelValue: string): void {
    this.#cells.delete(labelValue);
  }

  reset(): void {
    this.#cells.clear();
  }

  async get() {
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
    const bucket = `${this.name}_bucket`;
    for (const [labelValue, cell] of this.#cells) {
      let acc = 0;
      for (let i = 0; i < this.#bounds.length; i++) {
        acc += cell.counts[i]!;
        values.push({ labels: { le: this.#bounds[i]!, [this.#labelName]: labelValue }, value: acc, metricName: bucket });
      }
      values.push({ labels: { le: '+Inf', [this.#labelName]: labelValue }, value: cell.count, metricName: bucket });
      values.push({ labels: { [this.#labelName]: labelValue }, value: cell.sum, metricName: `${this.name}_sum` });
      values.push({ labels: { [this.#labelName]: labelValue }, value: cell.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }
}

/** A counter with labels (a, b, c), incremented by their values: three nested Map lookups, no key string. */
export class KeyedCounter3 implements RegisteredMetric {
  readonly type = 'counter' as const;
  readonly aggregator = 'sum' as const;
  readonly name: string;
  readonly help: string;
  readonly #labelNames: readonly [string, string, string];
  readonly #cells = new Map<string, Map<string, Map<string, { value: number }>>>();

  constructor(opts: { name: string; help: string; labelNames: readonly [string, string, string]; registers: readonly Registry[] }) {
    this.name = opts.name;
    this.help = opts.help;
    this.#labelNames = opts.labelNames;
    for (const r of opts.registers) r.registerMetric(this as never);
  }

  inc(a: string, b: string, c: string, by = 1): void {
    let byA = this.#cells.get(a);
    if (byA === undefined) {
      byA = new Map();
      this.#cells.set(a, byA);
    }
    let byB = byA.get(b);
    if (byB === undefined) {
      byB = new Map();
      byA.set(b, byB);
    }
    const cell = byB.get(c);
    if (cell === undefined) byB.set(c, { value: by });
    else cell.value += by;
  }

  /** Drop every series whose second label is `b` (a tenant that stopped being exported). */
  removeSecond(b: string): void {
    for (const byA of this.#cells.values()) byA.delete(b);
  }

  reset(): void {
    this.#cells.clear();
  }

  async get() {
    const [na, nb, nc] = this.#labelNames;
    const values: { labels: Record<string, string>; value: number }[] = [];
    for (const [a, byA] of this.#cells)
      for (const [b, byB] of byA) for (const [c, cell] of byB) values.push({ labels: { [na]: a, [nb]: b, [nc]: c }, value: cell.value });
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }
}

/**
 * What a workload hands back, and how it is printed: small markdown tables, and a targets list
 * that says met / missed and by how much.
 */
import { summarize, type Summary } from './stats.js';

export interface Table {
  readonly title: string;
  readonly headers: readonly string[];
  readonly rows: readonly (readonly string[])[];
}

export interface TargetResult {
  readonly target: string;
  /** What was measured, e.g. "1.04× (0.98–1.09)". */
  readonly measured: string;
  /** undefined = not measured in this run. */
  readonly met: boolean | undefined;
  /** By how much it was missed, or a remark. */
  readonly note?: string;
}

export interface WorkloadReport {
  readonly name: string;
  readonly title: string;
  readonly tables: readonly Table[];
  readonly targets: readonly TargetResult[];
  readonly notes: readonly string[];
  /** Every measured value, for the JSON results file. */
  readonly raw: unknown;
}

const grouped = (n: number, digits: number): string => n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

/** A number with thousands separators; "–" for NaN. */
export function num(n: number, digits = 0): string {
  return Number.isFinite(n) ? grouped(n, digits) : '–';
}

/** "median (min–max)" of repetitions; just the value when there is one. */
export function med(values: readonly number[] | Summary, digits = 0, unit = ''): string {
  const s = Array.isArray(values) ? summarize(values) : (values as Summary);
  if (s.n === 0) return '–';
  if (s.n === 1 || s.min === s.max) return `${num(s.median, digits)}${unit}`;
  return `${num(s.median, digits)}${unit} (${num(s.min, digits)}–${num(s.max, digits)})`;
}

/** Per-repetition ratios a[i] / b[i]. */
export function ratios(a: readonly number[], b: readonly number[]): number[] {
  return a.map((x, i) => x / (b[i] ?? Number.NaN)).filter((r) => Number.isFinite(r));
}

/**
 * A ratio target: met when the median of the per-pair ratios is on the right side of the bound.
 * `higher`: ratio ≥ bound is good; otherwise ratio ≤ bound is good.
 */
export function ratioTarget(target: string, pairRatios: readonly number[], bound: number, higher: boolean): TargetResult {
  const s = summarize(pairRatios);
  if (s.n === 0) return { target, measured: 'not measured', met: undefined };
  const met = higher ? s.median >= bound : s.median <= bound;
  const measured = med(s, 2, '×');
  if (met) return { target, measured, met };
  const missBy = higher ? (bound - s.median) / bound : (s.median - bound) / bound;
  return { target, measured, met, note: `missed by ${num(missBy * 100, 0)} % of the bound` };
}

/** A bound on a plain value (latency, bytes): met when the median is ≤ bound. */
export function maxTarget(target: string, values: readonly number[], bound: number, digits: number, unit: string): TargetResult {
  const s = summarize(values);
  if (s.n === 0) return { target, measured: 'not measured', met: undefined };
  const met = s.median <= bound;
  return {
    target,
    measured: med(s, digits, unit),
    met,
    ...(met ? {} : { note: `${num(s.median - bound, digits)}${unit} over (${num(s.median / bound, 1)}× the bound)` }),
  };
}

export function markdownTable(t: Table): string {
  const row = (cells: readonly string[]): string => `| ${cells.join(' | ')} |`;
  return [row(t.headers), row(t.headers.map(() => '---')), ...t.rows.map(row)].join('\n');
}

export function targetsTable(targets: readonly TargetResult[]): Table {
  return {
    title: 'Targets',
    headers: ['target', 'measured (median, range over pairs)', 'met?'],
    rows: targets.map((t) => [t.target, t.measured, t.met === undefined ? 'n/a' : t.met ? 'yes' : `**no**${t.note ? ` — ${t.note}` : ''}`]),
  };
}

/**
 * Run `fn` for every variant in every repetition, interleaved: repetition 1 in order A B C,
 * repetition 2 in reverse (C B A), and so on, so slow drift of a shared machine hits every
 * variant alike. Results come back indexed [variant][rep].
 */
export async function interleaved<V extends string, R>(
  variants: readonly V[],
  reps: number,
  fn: (variant: V, rep: number) => Promise<R>,
): Promise<Record<V, R[]>> {
  const out = Object.fromEntries(variants.map((v) => [v, [] as R[]])) as Record<V, R[]>;
  for (let rep = 0; rep < reps; rep++) {
    const order = rep % 2 === 0 ? variants : [...variants].reverse();
    for (const v of order) out[v][rep] = await fn(v, rep);
  }
  return out;
}

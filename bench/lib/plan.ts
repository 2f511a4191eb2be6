/**
 * Sizes of a run. `full` is the default (≈ 10 minutes on a 2-core machine); `quick` (≈ 2
 * minutes) is for checking that everything works, not for quoting numbers.
 */
export interface Plan {
  readonly mode: 'full' | 'quick';
  /** Interleaved repetitions of every compared variant. */
  readonly reps: number;
  readonly local: {
    readonly warmUpJobs: number;
    readonly drainJobs: number;
    readonly drainCapSeconds: number;
    /** The target's rate, then lower rates: where the knee is on this machine (latency without a backlog). */
    readonly openRates: readonly number[];
    readonly openSeconds: number;
    /** How long an open loop may take to finish after the last arrival (then its backlog is dropped). */
    readonly openGraceSeconds: number;
  };
  /** Pooled vs pooling off, locally and through the delay proxy with TLS. */
  readonly pooling: {
    readonly warmUpJobs: number;
    readonly drainJobs: number;
    readonly drainCapSeconds: number;
    readonly lowRate: number;
    readonly lowRateSeconds: number;
    readonly firstJobs: number;
  };
  readonly remote: { readonly delayMs: number; readonly lowRate: number; readonly lowRateSeconds: number; readonly drainCapSeconds: number };
  readonly tenants: { readonly count: number; readonly databases: number; readonly jobs: number; readonly capSeconds: number; readonly concurrency: number };
  readonly micro: { readonly pairs: number; readonly secondsEach: number };
  /** Noisy neighbour: A's slow flood, B's quick jobs spread over it; each run capped. */
  readonly fairness: { readonly aJobs: number; readonly bJobs: number; readonly capSeconds: number };
  /**
   * Identity and hygiene: per variant (pg: service, service without hygiene, user; Supabase REST
   * through the stand-in: service, user) a warm-up, an open loop at a low rate (e2e latency
   * without a backlog), a drain. REST variants drain fewer jobs: the stand-in is slower.
   */
  readonly identity: {
    readonly warmUpJobs: number;
    readonly drainJobs: number;
    readonly restDrainJobs: number;
    readonly drainCapSeconds: number;
    readonly lowRate: number;
    readonly lowRateSeconds: number;
  };
}

// Full-run sizes are bounded by caps, so a slow variant (or a busy machine) cannot stretch the
// run without limit; a capped measurement says so in the report.
export const FULL: Plan = {
  mode: 'full',
  reps: 5,
  local: { warmUpJobs: 500, drainJobs: 20_000, drainCapSeconds: 30, openRates: [2500, 2000, 1000], openSeconds: 2, openGraceSeconds: 8 },
  pooling: { warmUpJobs: 100, drainJobs: 5000, drainCapSeconds: 6, lowRate: 10, lowRateSeconds: 3, firstJobs: 11 },
  remote: { delayMs: 10, lowRate: 10, lowRateSeconds: 3, drainCapSeconds: 6 },
  tenants: { count: 1000, databases: 4, jobs: 20_000, capSeconds: 60, concurrency: 16 },
  micro: { pairs: 7, secondsEach: 2 },
  fairness: { aJobs: 5000, bJobs: 200, capSeconds: 180 },
  identity: { warmUpJobs: 500, drainJobs: 10_000, restDrainJobs: 2000, drainCapSeconds: 30, lowRate: 50, lowRateSeconds: 2 },
};

export const QUICK: Plan = {
  mode: 'quick',
  reps: 1,
  local: { warmUpJobs: 200, drainJobs: 2000, drainCapSeconds: 5, openRates: [2500, 500], openSeconds: 1, openGraceSeconds: 3 },
  pooling: { warmUpJobs: 30, drainJobs: 1000, drainCapSeconds: 2, lowRate: 10, lowRateSeconds: 1, firstJobs: 4 },
  remote: { delayMs: 10, lowRate: 10, lowRateSeconds: 1, drainCapSeconds: 2 },
  tenants: { count: 100, databases: 1, jobs: 300, capSeconds: 8, concurrency: 16 },
  micro: { pairs: 2, secondsEach: 0.5 },
  fairness: { aJobs: 1000, bJobs: 50, capSeconds: 60 },
  identity: { warmUpJobs: 200, drainJobs: 2000, restDrainJobs: 600, drainCapSeconds: 5, lowRate: 50, lowRateSeconds: 1 },
};

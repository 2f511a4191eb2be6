/**
 * Messages between the benchmark (parent) and a worker child process, over the fork() IPC channel.
 *
 * The parent arms the child with a job count; the child records every finished job's timings
 * and reports once that many jobs have finished (completed or failed for good).
 */

/** Which worker a child runs. */
export type WorkerMode =
  /** lensfleet's worker service: validation, registry, pools, metrics, logs. */
  | 'lensfleet'
  /** The baseline a user would write: BullMQ Worker + bare pg.Pool(max = concurrency) per tenant. */
  | 'baseline'
  /** The same with pg's named (prepared) statements: the hand-written worker at its strongest. */
  | 'baseline-named'
  /** BullMQ Worker whose processor does nothing: the queue's own ceiling. */
  | 'noop';

export type ParentMessage =
  | { readonly t: 'arm'; readonly count: number }
  /** Report now what finished since `arm` (as a `done` message), even if fewer than armed. */
  | { readonly t: 'flush' }
  /** Memory and pool figures; `gc` first runs a full garbage collection (for memory deltas). */
  | { readonly t: 'info'; readonly gc: boolean }
  | { readonly t: 'stop' };

/** Timings of the jobs finished since the last `arm`. */
export interface FinishedReport {
  readonly completed: number;
  /** Failed attempts (each retry counts). */
  readonly failed: number;
  readonly firstFailure: string | undefined;
  /** Epoch ms of the first job's processedOn and the last job's finishedOn. */
  readonly firstProcessedOn: number;
  readonly lastFinishedOn: number;
  /** Per completed job: finishedOn − timestamp (end to end) and finishedOn − processedOn (service), ms. */
  readonly e2eMs: number[];
  readonly serviceMs: number[];
  /** The worker's event loop since `arm`: p99 and max of how late it ran a 1 ms timer, ms. */
  readonly loopDelayP99Ms: number;
  readonly loopDelayMaxMs: number;
  /** The worker's garbage-collection pauses since `arm`: the longest, and their sum, ms. */
  readonly gcMaxMs: number;
  readonly gcTotalMs: number;
}

export interface ChildInfo {
  readonly rssBytes: number;
  readonly heapUsedBytes: number;
  /** lensfleet only: tenant pools and open connections held by the registry. */
  readonly pools: number;
  readonly connections: number;
  /** lensfleet only: connections opened so far, and closed by reason, over the live pools. */
  readonly connectionsOpened: number;
  readonly connectionsClosed: Readonly<Record<string, number>>;
  /** lensfleet only: the registry's process connection budget, when it has one. */
  readonly budget: number | undefined;
  /** lensfleet only: the most connections (open or opening) one tenant pool holds now, and the lowest pool ceiling. */
  readonly maxTenantConnections: number;
  readonly tenantCeiling: number | undefined;
}

export type ChildMessage =
  | { readonly t: 'ready' }
  | { readonly t: 'progress'; readonly finished: number }
  | ({ readonly t: 'done' } & FinishedReport)
  | ({ readonly t: 'info' } & ChildInfo)
  | { readonly t: 'fatal'; readonly message: string };

/**
 * The producer API: enqueue lens queries and, when wanted, wait for their results.
 *
 * ```ts
 * import type { MaritimeCatalog } from 'lensfleet/lenses/maritime'; // or CatalogOf<typeof myLenses> from 'lensfleet/lens'
 * const queue = createLensQueue<MaritimeCatalog>({ connection: { url: redisUrl }, name: 'lens-queries' });
 * // Redis Cluster: pass an ioredis Cluster (the queue's keys get the hash-tagged prefix, see queuePrefix)
 * const queue = createLensQueue({ connection: new Cluster([{ host: 'redis-1', port: 6379 }]), name: 'lens-queries' });
 * // Sentinel: ioredis's sentinel options
 * const queue = createLensQueue({ connection: { sentinels: [{ host: 'sentinel-1', port: 26379 }], name: 'mymaster' }, name: 'lens-queries' });
 * const job = await enqueue(queue, { tenant: 'yTEST_YACHT_001', lens: 'work_orders.open', params: { limit: 5 } });
 * const result = await run(queue, events, { tenant: 'yTEST_YACHT_001', lens: 'receiving.recent' }, { waitTimeoutMs: 10_000 });
 * ```
 *
 * Typed by catalog: a queue made with `createLensQueue<C>` takes only requests for the lenses of
 * `C` with their params (a wrong lens name or param is a compile error). A queue made without
 * one (`LensQueue`, the default) takes any lens name and params: the escape hatch for dynamic
 * use, and a typed queue passes wherever an untyped one is expected. Types only: at run time the
 * SDK checks the job data (`INVALID_JOB`), and the worker checks the params against the lens.
 */
import { Queue, QueueEvents, type ConnectionOptions, type Job, type JobsOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import { ERROR_CODES, type ErrorCode, LensfleetError } from '../src/errors.js';
import {
  type AnyLensCatalog,
  DEFAULT_JOB_OPTIONS,
  DEFAULT_MAX_PAYLOAD_BYTES,
  DEFAULT_QUEUE_NAME,
  type LensCatalogShape,
  type LensJobData,
  type LensRequest,
  type LensRequestOf,
  type LensResult,
  parseJobData,
  queuePrefix,
} from './contract.js';

/** Type-only key of a queue's catalog (never set at run time). */
declare const LENS_CATALOG: unique symbol;

/** A BullMQ queue of lens jobs; `C` is the lens catalog its requests are checked against. */
export type LensQueue<C extends LensCatalogShape = AnyLensCatalog> = Queue<LensJobData, LensResult, string> & { readonly [LENS_CATALOG]?: C };
export type LensJob = Job<LensJobData, LensResult, string>;

/** BullMQ's job options, plus an idempotency key. */
export interface LensJobOptions extends JobsOptions {
  /**
   * Add the job at most once per tenant and key: the job id becomes `idem-<tenant>-<key>`, and
   * adding the same request (lens and params) again with a key whose job is still in Redis adds
   * nothing and returns the job already there (`run` then waits for, or returns, its result: no
   * second run). Another request under a key already taken fails with `IDEMPOTENCY_CONFLICT`
   * and adds nothing (the token in `auth` may differ: a retry may carry a fresh one). A job
   * stays in Redis while waiting, delayed or active, and after it
   * ends for as long as it is kept (DEFAULT_JOB_OPTIONS: completed 1 h / 10,000 jobs, failed
   * 7 days); after that the key adds a new job. `[A-Za-z0-9_.-]`, 1–128 characters (BullMQ job ids
   * may not contain `:`). Not together with `jobId`.
   */
  readonly idempotencyKey?: string;
}

/** A request of enqueueMany: the request, and its own idempotency key (see LensJobOptions). */
export type LensBulkRequest<C extends LensCatalogShape = AnyLensCatalog> = LensRequestOf<C> & { readonly idempotencyKey?: string };

export interface LensQueueOptions {
  /**
   * Connection options or an ioredis client. For a Redis Cluster pass an ioredis `Cluster`: the
   * queue then uses the Cluster's hash-tagged key prefix (`queuePrefix`), as the workers do.
   */
  readonly connection: ConnectionOptions;
  /**
   * Queue name; the worker's `LENSFLEET_QUEUE`. The SDK reads no environment variable: the
   * application passes its setting here. @defaultValue lens-queries
   */
  readonly name?: string;
  /** Merged over DEFAULT_JOB_OPTIONS. */
  readonly defaultJobOptions?: JobsOptions;
}

/**
 * A queue of lens jobs. `C` types its requests: `createLensQueue<MaritimeCatalog>(…)` or
 * `createLensQueue<CatalogOf<typeof myLenses>>(…)`; without it any lens and params type-check.
 */
export function createLensQueue<C extends LensCatalogShape = AnyLensCatalog>(opts: LensQueueOptions): LensQueue<C> {
  const name = opts.name ?? DEFAULT_QUEUE_NAME;
  // The prefix is not an option: the contract decides it, so a producer and the workers on the
  // same Redis cannot end up on two different queues.
  const queue = new Queue<LensJobData, LensResult, string>(name, {
    connection: opts.connection,
    prefix: queuePrefix(name, isClusterConnection(opts.connection)),
    defaultJobOptions: { ...DEFAULT_JOB_OPTIONS, ...opts.defaultJobOptions },
  });
  // Every `run()` waiting for its result adds one 'closing' listener to the queue (BullMQ's
  // waitUntilFinished) and removes it when the result arrives: more than 10 concurrent runs are
  // normal use, not a leak, and must not print MaxListenersExceededWarning.
  queue.setMaxListeners(0);
  return queue as LensQueue<C>;
}

/**
 * Whether a connection is an ioredis Cluster. Read from the client's own `isCluster` flag rather
 * than `instanceof`, which fails when the application has its own copy of ioredis.
 */
export function isClusterConnection(connection: ConnectionOptions): boolean {
  return (connection as { isCluster?: unknown }).isCluster === true;
}

/** Validate a request and turn it into versioned job data (`INVALID_JOB` / `PAYLOAD_TOO_LARGE`). */
export function toJobData(req: LensRequest, maxPayloadBytes = DEFAULT_MAX_PAYLOAD_BYTES): LensJobData {
  if (req === null || typeof req !== 'object') throw new LensfleetError('INVALID_JOB', 'a lens request must be an object {tenant, lens, params}');
  const data: Record<string, unknown> = { v: 1, tenant: req.tenant, lens: req.lens, params: req.params ?? {} };
  if (req.auth !== undefined) data.auth = req.auth;
  return parseJobData(data, maxPayloadBytes);
}

const IDEMPOTENCY_KEY = /^[A-Za-z0-9_.-]{1,128}$/;

/**
 * The BullMQ job id of an idempotency key: `idem-<tenant>-<key>` (a tenant id has no `-`, so the
 * id names one tenant and key; the prefix keeps a key like `42` from being an integer id, which
 * BullMQ refuses). A producer in another language uses the same id to share the keys.
 */
export function idempotentJobId(tenant: string, key: string): string {
  if (typeof key !== 'string' || !IDEMPOTENCY_KEY.test(key)) {
    throw new LensfleetError('INVALID_JOB', `idempotencyKey must match ${IDEMPOTENCY_KEY.source}`);
  }
  return `idem-${tenant}-${key}`;
}

/** BullMQ's options for one job: the key, when given, becomes the job id. */
function jobOptions(data: LensJobData, opts: LensJobOptions | undefined, key: string | undefined): JobsOptions | undefined {
  if (opts === undefined && key === undefined) return undefined;
  const { idempotencyKey: _, ...rest } = opts ?? {};
  if (key === undefined) return rest;
  if (rest.jobId !== undefined) throw new LensfleetError('INVALID_JOB', 'idempotencyKey and jobId are exclusive (the key makes the job id)');
  return { ...rest, jobId: idempotentJobId(data.tenant, key) };
}

/**
 * The job a keyed add left in Redis: BullMQ's add returns a Job made from the caller's data, even
 * when the id already existed and nothing was added; the stored one is the truth. It must be the
 * same request (lens, params), else IDEMPOTENCY_CONFLICT: returning another request's job would
 * hand its result to this caller.
 */
async function stored(queue: LensQueue<LensCatalogShape>, job: LensJob): Promise<LensJob> {
  const kept = (await queue.getJob(job.id!)) ?? job;
  if (!sameRequest(kept.data, job.data)) {
    throw new LensfleetError(
      'IDEMPOTENCY_CONFLICT',
      `idempotency key of job ${job.id} is already taken by a different request (another lens or other params): nothing was added; give a new request a new key`,
      { details: { jobId: job.id } },
    );
  }
  return kept;
}

/** Whether two jobs' data are the same request: lens and params, compared as JSON values (key order aside). */
function sameRequest(a: LensJobData | undefined, b: LensJobData): boolean {
  return a !== undefined && a.lens === b.lens && canonicalJson(a.params) === canonicalJson(b.params);
}

function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0)))
      : v,
  );
}

/**
 * Add one lens query; the job is named after the lens. With `idempotencyKey`, a second add of
 * the same request with the same key returns the job already there, and a different request
 * under a taken key fails with IDEMPOTENCY_CONFLICT (see LensJobOptions).
 */
export async function enqueue<C extends LensCatalogShape>(queue: LensQueue<C>, req: NoInfer<LensRequestOf<C>>, opts?: LensJobOptions): Promise<LensJob> {
  const data = toJobData(req as LensRequest);
  const job = await queue.add(data.lens, data, jobOptions(data, opts, opts?.idempotencyKey));
  return opts?.idempotencyKey === undefined ? job : stored(queue, job);
}

/**
 * Add many lens queries through BullMQ's addBulk: one round trip (one MULTI) per `batchSize`
 * jobs. All are validated before any is added. Each request may carry its own idempotencyKey;
 * `opts` apply to every job and so take none. Requests whose key is taken by a different
 * request are not added: the others are, then IDEMPOTENCY_CONFLICT lists the conflicting ones
 * (`details.conflicts`: index and job id) and the added ones (`details.added`).
 */
export async function enqueueMany<C extends LensCatalogShape>(
  queue: LensQueue<C>,
  reqs: readonly NoInfer<LensBulkRequest<C>>[],
  opts?: JobsOptions,
  batchSize = 1000,
): Promise<LensJob[]> {
  if ((opts as LensJobOptions | undefined)?.idempotencyKey !== undefined) {
    throw new LensfleetError('INVALID_JOB', 'enqueueMany: an idempotencyKey belongs to each request, not to the options of all');
  }
  const bulk = reqs.map((r) => {
    const data = toJobData(r as LensRequest);
    const key = (r as { idempotencyKey?: string }).idempotencyKey;
    const jobOpts = jobOptions(data, opts, key);
    return { keyed: key !== undefined, entry: jobOpts ? { name: data.lens, data, opts: jobOpts } : { name: data.lens, data } };
  });
  const jobs: LensJob[] = [];
  const conflicts: { index: number; jobId: string | undefined }[] = [];
  for (let i = 0; i < bulk.length; i += batchSize) {
    const batch = bulk.slice(i, i + batchSize);
    const added = await queue.addBulk(batch.map((b) => b.entry));
    const settled = await Promise.allSettled(added.map((job, j) => (batch[j]!.keyed ? stored(queue, job) : job)));
    settled.forEach((r, j) => {
      if (r.status === 'fulfilled') jobs.push(r.value);
      else if (r.reason instanceof LensfleetError && r.reason.code === 'IDEMPOTENCY_CONFLICT') conflicts.push({ index: i + j, jobId: added[j]!.id });
      else throw r.reason;
    });
  }
  if (conflicts.length > 0) {
    const shown = conflicts.slice(0, 10).map((c) => `#${c.index} (job ${c.jobId})`);
    throw new LensfleetError(
      'IDEMPOTENCY_CONFLICT',
      `enqueueMany: request${conflicts.length > 1 ? 's' : ''} ${shown.join(', ')}${conflicts.length > 10 ? ` and ${conflicts.length - 10} more` : ''} reuse an idempotency key already taken by a different request (another lens or other params) and were not added; the other ${jobs.length} were`,
      { details: { conflicts, added: jobs.map((j) => j.id) } },
    );
  }
  return jobs;
}

export interface RunOptions extends LensJobOptions {
  /** How long to wait for the result. @defaultValue 30000 */
  readonly waitTimeoutMs?: number;
}

/** Where a job is when `run` stops waiting for it (`RunTimeoutError.state`). */
export type RunTimeoutState = 'waiting' | 'delayed' | 'active' | 'failed' | 'unknown';

/**
 * `run` got no result in its wait time (code `RUN_TIMEOUT`). The job itself goes on (unless it
 * failed): `state` says where it is — `waiting` (no worker took it: none running, all busy, or
 * the queue paused; a prioritized job counts as waiting), `delayed` (its delay, or the backoff
 * before a retry), `active` (a worker runs it), `failed` (it failed for good, but its failure
 * event did not reach this waiter in time), `unknown` (removed). `failedCode` is the error code
 * of its last failed attempt, when it had one (a retrying job is `delayed` with it).
 */
export class RunTimeoutError extends LensfleetError {
  readonly state: RunTimeoutState;
  readonly jobId: string;
  readonly attemptsMade: number;
  readonly failedCode: ErrorCode | undefined;

  constructor(facts: { jobId: string; state: RunTimeoutState; waitTimeoutMs: number; attemptsMade: number; failedCode: ErrorCode | undefined }) {
    const after = facts.failedCode === undefined ? '' : `; attempt ${facts.attemptsMade} failed with ${facts.failedCode}`;
    super('RUN_TIMEOUT', `no result within ${facts.waitTimeoutMs} ms: job ${facts.jobId} is ${STATE_TEXT[facts.state]}${after}`, {
      details: { jobId: facts.jobId, state: facts.state, attemptsMade: facts.attemptsMade, failedCode: facts.failedCode },
    });
    this.state = facts.state;
    this.jobId = facts.jobId;
    this.attemptsMade = facts.attemptsMade;
    this.failedCode = facts.failedCode;
  }
}

const STATE_TEXT: Record<RunTimeoutState, string> = {
  waiting: 'still waiting (no worker took it)',
  delayed: 'delayed (its delay or a retry backoff)',
  active: 'active (a worker is running it)',
  failed: 'failed',
  unknown: 'gone (removed)',
};

/** The code of a failedReason in the worker's `CODE: message` form; undefined for any other text. */
export function failedReasonCode(failedReason: string | undefined): ErrorCode | undefined {
  const code = /^([A-Z][A-Z0-9_]*): /.exec(failedReason ?? '')?.[1];
  return code !== undefined && Object.hasOwn(ERROR_CODES, code) ? (code as ErrorCode) : undefined;
}

/**
 * Enqueue and wait for the result. Rejects with the job's failure reason (`CODE: message`) when
 * it fails for good, and with `RunTimeoutError` (`RUN_TIMEOUT`, saying where the job is) when no
 * result arrives within waitTimeoutMs. With `idempotencyKey`, a second run of the same key waits
 * for the first one's job (or returns its kept result) instead of adding another.
 */
export async function run<C extends LensCatalogShape>(
  queue: LensQueue<C>,
  events: QueueEvents,
  req: NoInfer<LensRequestOf<C>>,
  opts: RunOptions = {},
): Promise<LensResult> {
  const { waitTimeoutMs = 30_000, ...jobOpts } = opts;
  const job = await enqueue(queue, req, jobOpts);
  // BullMQ rejects a timed-out wait with a message, not a type; this flag, set by a timer that
  // starts before BullMQ's own of the same length (so fires first), tells a timeout from a failure.
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
  }, waitTimeoutMs);
  try {
    return (await job.waitUntilFinished(events, waitTimeoutMs)) as LensResult;
  } catch (err) {
    if (!timedOut) throw err; // the job failed for good: BullMQ's error carries its failedReason
    return await afterTimeout(queue, job.id!, waitTimeoutMs, err);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * What a timed-out wait ends with, from the job's state now: its result when it completed right
 * at the deadline (the event lost the race), else the RUN_TIMEOUT error saying where it is.
 */
async function afterTimeout(queue: LensQueue<LensCatalogShape>, jobId: string, waitTimeoutMs: number, original: unknown): Promise<LensResult> {
  let now: LensJob | undefined;
  let state: string;
  try {
    now = await queue.getJob(jobId);
    state = now === undefined ? 'unknown' : await now.getState();
  } catch {
    throw original; // the queue is closing or Redis is gone: nothing more to say than BullMQ's error
  }
  if (state === 'completed' && now !== undefined) return now.returnvalue;
  const mapped: RunTimeoutState =
    state === 'prioritized' || state === 'waiting' || state === 'waiting-children'
      ? 'waiting'
      : state === 'delayed' || state === 'active' || state === 'failed'
        ? state
        : 'unknown';
  throw new RunTimeoutError({
    jobId,
    state: mapped,
    waitTimeoutMs,
    attemptsMade: now?.attemptsMade ?? 0,
    failedCode: failedReasonCode(now?.failedReason),
  });
}

/**
 * QueueEvents for this queue that miss nothing from now on: it reads the events stream from its
 * current last entry, fetched here, before any job you add next. BullMQ's default starts at
 * `$` on its first blocking read, which comes a round trip after `waitUntilReady()`; a job that
 * finishes in between (a fast job on a busy machine) is never seen, and `waitUntilFinished`
 * times out. Use it for a short-lived waiter (a CLI, a script); close it when done.
 */
export async function createLensQueueEvents(queue: LensQueue, connection: ConnectionOptions, opts: { autorun?: boolean } = {}): Promise<QueueEvents> {
  // The queue's client is ioredis here (createLensQueue passes connection options, not a client).
  const client = (await queue.client) as unknown as Redis;
  const last = await client.xrevrange(queue.keys.events!, '+', '-', 'COUNT', 1);
  return new QueueEvents(queue.name, { connection, prefix: queue.opts.prefix, lastEventId: last[0]?.[0] ?? '0-0', autorun: opts.autorun ?? true });
}

export { QueueEvents };

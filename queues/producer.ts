/**
 * The producer API: enqueue lens queries and, when wanted, wait for their results.
 *
 * ```ts
 * const queue = createLensQueue({ connection: { url: redisUrl }, name: 'lens-queries' });
 * // Redis Cluster: pass an ioredis Cluster (the queue's keys get the hash-tagged prefix, see queuePrefix)
 * const queue = createLensQueue({ connection: new Cluster([{ host: 'redis-1', port: 6379 }]), name: 'lens-queries' });
 * // Sentinel: ioredis's sentinel options
 * const queue = createLensQueue({ connection: { sentinels: [{ host: 'sentinel-1', port: 26379 }], name: 'mymaster' }, name: 'lens-queries' });
 * const job = await enqueue(queue, { tenant: 'yTEST_YACHT_001', lens: 'work_orders.open', params: { limit: 5 } });
 * const result = await run(queue, events, { tenant: 'yTEST_YACHT_001', lens: 'receiving.recent' });
 * ```
 */
import { Queue, QueueEvents, type ConnectionOptions, type Job, type JobsOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import { LensfleetError } from '../src/errors.js';
import {
  DEFAULT_JOB_OPTIONS,
  DEFAULT_MAX_PAYLOAD_BYTES,
  DEFAULT_QUEUE_NAME,
  parseJobData,
  queuePrefix,
  type LensJobData,
  type LensRequest,
  type LensResult,
} from './contract.js';

export type LensQueue = Queue<LensJobData, LensResult, string>;
export type LensJob = Job<LensJobData, LensResult, string>;

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

export function createLensQueue(opts: LensQueueOptions): LensQueue {
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
  return queue;
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

/** Add one lens query; the job is named after the lens. */
export async function enqueue(queue: LensQueue, req: LensRequest, opts?: JobsOptions): Promise<LensJob> {
  const data = toJobData(req);
  return queue.add(data.lens, data, opts);
}

/** Add many lens queries in one round trip per batch. All are validated before any is added. */
export async function enqueueMany(queue: LensQueue, reqs: readonly LensRequest[], opts?: JobsOptions, batchSize = 1000): Promise<LensJob[]> {
  const data = reqs.map((r) => toJobData(r));
  const jobs: LensJob[] = [];
  for (let i = 0; i < data.length; i += batchSize) {
    const batch = data.slice(i, i + batchSize).map((d) => (opts ? { name: d.lens, data: d, opts } : { name: d.lens, data: d }));
    jobs.push(...(await queue.addBulk(batch)));
  }
  return jobs;
}

export interface RunOptions extends JobsOptions {
  /** How long to wait for the result. @defaultValue 30000 */
  readonly waitTimeoutMs?: number;
}

/**
 * Enqueue and wait for the result. Rejects with the job's failure reason (`CODE: message`) when
 * it fails for good, or when no result arrives within waitTimeoutMs (the job itself goes on).
 */
export async function run(queue: LensQueue, events: QueueEvents, req: LensRequest, opts: RunOptions = {}): Promise<LensResult> {
  const { waitTimeoutMs = 30_000, ...jobOpts } = opts;
  const job = await enqueue(queue, req, jobOpts);
  return (await job.waitUntilFinished(events, waitTimeoutMs)) as LensResult;
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

/**
 * `lensfleet queue`: the lens queue as an operator needs it — job counts by state, failed jobs
 * grouped by error code (a failed job's failedReason is `CODE: message`, src/errors.ts), and the
 * failed jobs of one code retried or removed (`--dry-run` first: how many it would touch).
 */
import { Queue } from 'bullmq';
import { queuePrefix } from '../queues/contract.js';
import { loadRedisSettings, PROCESS_SETTINGS } from '../src/config.js';
import { ERROR_CODES, type ErrorCode } from '../src/errors.js';
import { describeRedis, isCluster, type RedisSettings, redisConnection, safeRedisMessage } from '../src/redis.js';
import { type Env, readSettings } from '../src/settings.js';
import { duration, table } from './format.js';
import { parseCommandArgs } from './args.js';

export const QUEUE_EXIT = {
  /** Shown, or done (also when no job matched). */
  OK: 0,
  /** Redis could not be reached or read (or a job could not be changed). */
  FAILED: 1,
  /** Bad usage, an unknown error code or an invalid setting. */
  USAGE: 2,
} as const;

const SETTINGS = { queueName: PROCESS_SETTINGS.queueName };
/** Reported for a failedReason that does not start with a registered code (a stalled job, a plain producer's failure). */
export const NO_CODE = '(no code)';
const STATES = ['waiting', 'prioritized', 'active', 'delayed', 'waiting-children', 'paused', 'failed', 'completed'] as const;
/** Failed jobs read per Redis round trip. */
const PAGE = 500;

export const QUEUE_USAGE = `usage: lensfleet queue [--queue <name>] [--json]
       lensfleet queue retry --code <CODE> [--dry-run] [--queue <name>] [--json]
       lensfleet queue remove --code <CODE> [--dry-run] [--queue <name>] [--json]

queue          job counts by state, and the failed jobs grouped by their error code (the code
               their failedReason starts with: POOL_TIMEOUT, CONNECTION_FAILED… see the README's
               error codes), with whether the code is retried, a sample message and when the
               newest of them failed
queue retry    move every failed job with that code back to waiting (its attempts start again):
               after the cause is fixed (a tenant's password, a database back up)
queue remove   delete every failed job with that code (their reasons are gone with them)
Both print how many jobs they moved or removed; with --dry-run, how many they would, and change
nothing. Progress goes to stderr on a long scan.

options:
  --code <CODE>   the error code (required for retry and remove)
  --dry-run       count only
  --queue <name>  the queue (default: LENSFLEET_QUEUE)
  --json          one JSON object
  --help          this text
environment: REDIS_URL (or REDIS_URL_FILE) or LENSFLEET_REDIS_* (as the worker), LENSFLEET_QUEUE
exit codes: 0 shown or done (also when no job matched), 1 Redis could not be read or a job could
not be changed, 2 bad usage, an unknown code or an invalid setting`;

export interface FailedGroup {
  readonly code: string;
  readonly count: number;
  /** Whether the worker retries this code (src/errors.ts); null for NO_CODE. */
  readonly retryable: boolean | null;
  readonly sample: string;
  /** Date.now() when the newest of them failed. */
  readonly lastFailedAt: number | null;
}

export async function queueCommand(argv: readonly string[], env: Env): Promise<number> {
  const action = argv[0] === 'retry' || argv[0] === 'remove' ? argv[0] : undefined;
  const parsed = parseCommandArgs<{ code?: string; 'dry-run': boolean; queue?: string; json: boolean }>(
    action ? argv.slice(1) : argv,
    {
      code: { type: 'string' },
      'dry-run': { type: 'boolean', default: false },
      queue: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
    QUEUE_USAGE,
  );
  if ('exit' in parsed) return parsed.exit;
  const { values } = parsed;
  if (action === undefined && (values.code !== undefined || values['dry-run'])) return usage('--code and --dry-run go with `queue retry` or `queue remove`');
  if (action !== undefined && values.code === undefined) return usage(`queue ${action} needs --code <CODE>`);
  if (values.code !== undefined && !(values.code in ERROR_CODES))
    return usage(`--code ${values.code} is not an error code; the codes are ${Object.keys(ERROR_CODES).join(', ')}`);
  let redisSettings: RedisSettings;
  let queueName: string;
  try {
    redisSettings = loadRedisSettings(env);
    queueName = readSettings(SETTINGS, values.queue === undefined ? env : { ...env, LENSFLEET_QUEUE: values.queue }).queueName;
  } catch (err) {
    console.error((err as Error).message);
    return QUEUE_EXIT.USAGE;
  }
  const redis = redisConnection(redisSettings, 'cli', { lazyConnect: true });
  redis.on('error', () => {}); // reported below, once
  let queue: Queue | undefined;
  try {
    await redis.connect();
    queue = new Queue(queueName, { connection: redis, prefix: queuePrefix(queueName, isCluster(redis)) });
    if (action === undefined) {
      const counts = await queue.getJobCounts(...STATES);
      const failed = await groupFailed(queue);
      const report = { queue: queueName, redis: describeRedis(redisSettings), counts, failed };
      console.log(values.json ? JSON.stringify(report, null, 2) : render(report));
      return QUEUE_EXIT.OK;
    }
    return await changeFailed(queue, action, values.code as ErrorCode, values['dry-run'], values.json);
  } catch (err) {
    console.error(`lensfleet queue: cannot read queue ${queueName} from Redis at ${describeRedis(redisSettings)}: ${safeRedisMessage(err, redisSettings)}`);
    return QUEUE_EXIT.FAILED;
  } finally {
    // The connection is shared, so closing the queue leaves it open.
    await queue?.close().catch(() => {});
    redis.disconnect();
  }
}

function usage(message: string): number {
  console.error(`${message}\n\n${QUEUE_USAGE}`);
  return QUEUE_EXIT.USAGE;
}

/** The code a failedReason starts with, or NO_CODE. */
export function codeOf(failedReason: string | undefined): string {
  const m = /^([A-Z][A-Z0-9_]*):/.exec(failedReason ?? '');
  return m !== null && m[1]! in ERROR_CODES ? m[1]! : NO_CODE;
}

type FailedJob = {
  id?: string | undefined;
  failedReason?: string;
  finishedOn?: number | undefined;
  retry(state?: 'failed' | 'completed', opts?: { resetAttemptsMade?: boolean; resetAttemptsStarted?: boolean }): Promise<void>;
  remove(): Promise<void>;
};

/** Every failed job, a page at a time (a progress line on stderr when there are many). */
async function forEachFailed(queue: Queue, visit: (job: FailedJob) => void): Promise<void> {
  const total = await queue.getFailedCount();
  // Newest first; jobs that change state meanwhile only shift later pages (a job seen twice or
  // missed is possible under a live worker: the counts are a snapshot).
  for (let start = 0; start < total; start += PAGE) {
    const jobs = (await queue.getFailed(start, start + PAGE - 1)) as unknown as (FailedJob | undefined)[];
    for (const job of jobs) if (job) visit(job);
    if (total > PAGE) process.stderr.write(`  read ${Math.min(start + PAGE, total)}/${total} failed jobs\n`);
  }
}

async function groupFailed(queue: Queue): Promise<FailedGroup[]> {
  const groups = new Map<string, { count: number; sample: string; lastFailedAt: number | null }>();
  await forEachFailed(queue, (job) => {
    const code = codeOf(job.failedReason);
    const g = groups.get(code) ?? { count: 0, sample: clipped(job.failedReason ?? ''), lastFailedAt: null };
    g.count++;
    if (job.finishedOn !== undefined && (g.lastFailedAt === null || job.finishedOn > g.lastFailedAt)) {
      g.lastFailedAt = job.finishedOn;
      g.sample = clipped(job.failedReason ?? '');
    }
    groups.set(code, g);
  });
  return [...groups.entries()]
    .map(([code, g]) => ({ code, retryable: code === NO_CODE ? null : ERROR_CODES[code as ErrorCode], ...g }))
    .sort((a, b) => b.count - a.count || (a.code < b.code ? -1 : 1));
}

async function changeFailed(queue: Queue, action: 'retry' | 'remove', code: ErrorCode, dryRun: boolean, json: boolean): Promise<number> {
  const matching: FailedJob[] = [];
  await forEachFailed(queue, (job) => {
    if (codeOf(job.failedReason) === code) matching.push(job);
  });
  let changed = 0;
  const errors: string[] = [];
  if (!dryRun) {
    for (const [i, job] of matching.entries()) {
      try {
        // Its attempts start again: without the reset a job that failed on a retried code would
        // get no retries this time (BullMQ keeps attemptsMade), and the deferral count with it.
        if (action === 'retry') await job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true });
        else await job.remove();
        changed++;
      } catch (err) {
        // A job a worker or another operator moved meanwhile: reported, the others go on.
        errors.push(`job ${job.id}: ${(err as Error).message}`);
      }
      if (matching.length > PAGE && (i + 1) % PAGE === 0) process.stderr.write(`  ${action === 'retry' ? 'retried' : 'removed'} ${i + 1}/${matching.length}\n`);
    }
  }
  const verb = action === 'retry' ? (dryRun ? 'would retry' : 'retried') : dryRun ? 'would remove' : 'removed';
  const report = { queue: queue.name, action, code, dryRun, matched: matching.length, changed, errors };
  if (json) console.log(JSON.stringify(report, null, 2));
  else {
    console.log(
      `${verb} ${dryRun ? matching.length : changed} failed job${(dryRun ? matching.length : changed) === 1 ? '' : 's'} with code ${code} in queue ${queue.name}`,
    );
    for (const e of errors.slice(0, 20)) console.log(`  not ${action === 'retry' ? 'retried' : 'removed'}: ${e}`);
    if (errors.length > 20) console.log(`  … and ${errors.length - 20} more`);
  }
  return errors.length > 0 ? QUEUE_EXIT.FAILED : QUEUE_EXIT.OK;
}

const clipped = (text: string): string => (text.length > 160 ? `${text.slice(0, 160)}…` : text);

function render(r: { queue: string; redis: string; counts: Record<string, number>; failed: readonly FailedGroup[] }): string {
  const out: string[] = [];
  out.push(`queue ${r.queue} on ${r.redis}`);
  out.push('');
  out.push(
    table(
      STATES.map((s) => s.toUpperCase()),
      [STATES.map((s) => r.counts[s] ?? 0)],
    ),
  );
  out.push('');
  if (r.failed.length === 0) out.push('no failed jobs');
  else {
    out.push(
      table(
        ['CODE', 'FAILED', 'RETRYABLE', 'LAST FAILED', 'SAMPLE'],
        r.failed.map((g) => [
          g.code,
          g.count,
          g.retryable === null ? '-' : g.retryable ? 'yes' : 'no',
          g.lastFailedAt === null ? '-' : `${duration(Math.max(0, Date.now() - g.lastFailedAt))} ago`,
          g.sample,
        ]),
      ),
    );
    out.push('');
    out.push('retry or remove them by code: lensfleet queue retry --code <CODE> [--dry-run] (or remove)');
  }
  return out.join('\n');
}

/**
 * `lensfleet enqueue`: add one lens query to the queue, validated as the SDK validates it (before
 * anything reaches Redis); with `--wait`, wait for its result and print it.
 */
import type { QueueEvents } from 'bullmq';
import { createLensQueue, createLensQueueEvents, enqueue } from '../queues/producer.js';
import { loadRedisSettings, PROCESS_SETTINGS, REDIS_SETTINGS } from '../src/config.js';
import { LensfleetError } from '../src/errors.js';
import { hangUp, type RedisClient, type RedisSettings, redisConnection } from '../src/redis.js';
import { type Env, readSettings } from '../src/settings.js';
import { parseCommandArgs } from './args.js';

export const ENQUEUE_EXIT = {
  /** Enqueued (with --wait: the job completed; its result is printed). */
  OK: 0,
  /** The job failed, no result arrived in time, or Redis failed. */
  FAILED: 1,
  /** Bad usage, an invalid request (refused before it reaches Redis) or an invalid setting. */
  USAGE: 2,
} as const;

/** The settings the command reads: the worker's own rows, so names and defaults cannot drift. */
const CLI_SETTINGS = { queueName: PROCESS_SETTINGS.queueName };

/** `REDIS_URL (default …; or REDIS_URL_FILE)` lines of the settings a queue command reads. */
export const QUEUE_ENVIRONMENT = `${[REDIS_SETTINGS.url, ...Object.values(CLI_SETTINGS)].map((s) => `  ${s.env} (default ${s.default}${s.secret ? `; or ${s.env}_FILE` : ''})`).join('\n')}
  LENSFLEET_REDIS_MODE=cluster|sentinel with LENSFLEET_REDIS_NODES, … (as the worker; see the README)`;

export const ENQUEUE_USAGE = `usage: lensfleet enqueue --tenant <id> --lens <name> [--params '<json object>'] [--wait] [--timeout-ms <ms>]

Adds one lens query to the queue (validated first: nothing invalid reaches Redis) and prints its
job id; with --wait, waits for the result and prints it.

options:
  --tenant <id>      the tenant (required)
  --lens <name>      the lens (required; \`lensfleet lenses\` lists them)
  --params <json>    the lens's parameters, a JSON object (default {})
  --wait             wait for the job to finish and print its result
  --timeout-ms <ms>  with --wait: how long (default 30000)
  --help             this text
environment:
${QUEUE_ENVIRONMENT}
exit codes: 0 enqueued (with --wait: completed), 1 the job failed or timed out (or Redis failed),
2 bad usage, an invalid request or an invalid setting`;

export async function enqueueCommand(argv: readonly string[], env: Env): Promise<number> {
  const parsed = parseCommandArgs<{ tenant?: string; lens?: string; params: string; wait: boolean; 'timeout-ms': string }>(
    argv,
    {
      tenant: { type: 'string' },
      lens: { type: 'string' },
      params: { type: 'string', default: '{}' },
      wait: { type: 'boolean', default: false },
      'timeout-ms': { type: 'string', default: '30000' },
    },
    ENQUEUE_USAGE,
  );
  if ('exit' in parsed) return parsed.exit;
  const { values } = parsed;
  if (!values.tenant || !values.lens) {
    console.error(`--tenant and --lens are required\n${ENQUEUE_USAGE}`);
    return ENQUEUE_EXIT.USAGE;
  }
  let params: unknown;
  try {
    params = JSON.parse(values.params);
  } catch (err) {
    console.error(`--params is not valid JSON: ${(err as Error).message}`);
    return ENQUEUE_EXIT.USAGE;
  }
  if (params === null || typeof params !== 'object' || Array.isArray(params)) {
    console.error('--params must be a JSON object, e.g. \'{"limit": 5}\'');
    return ENQUEUE_EXIT.USAGE;
  }
  const timeoutMs = Number(values['timeout-ms']);
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) {
    console.error('--timeout-ms must be a positive whole number');
    return ENQUEUE_EXIT.USAGE;
  }
  let settings: ReturnType<typeof readSettings<typeof CLI_SETTINGS>>;
  let redis: RedisSettings;
  try {
    redis = loadRedisSettings(env);
    settings = readSettings(CLI_SETTINGS, env);
  } catch (err) {
    console.error((err as Error).message);
    return ENQUEUE_EXIT.USAGE;
  }
  const connection = redisConnection(redis, 'commands');
  connection.on('error', () => {}); // a failure is reported once, below
  const clients: RedisClient[] = [connection];
  const queue = createLensQueue({ connection, name: settings.queueName });
  let events: QueueEvents | undefined;
  try {
    if (values.wait) {
      // A blocking reader: BullMQ wants it to retry forever (and refuses otherwise); --timeout-ms
      // bounds the wait. QueueEvents reads through its own copy of this (unconnected) client.
      const blocking = redisConnection(redis, 'blocking', { lazyConnect: true });
      blocking.on('error', () => {});
      clients.push(blocking);
      events = await createLensQueueEvents(queue, blocking);
      await events.waitUntilReady();
    }
    const job = await enqueue(queue, { tenant: values.tenant, lens: values.lens, params: params as Record<string, unknown> });
    if (!events) {
      console.log(JSON.stringify({ jobId: job.id, queue: queue.name, tenant: values.tenant, lens: values.lens }));
      return ENQUEUE_EXIT.OK;
    }
    // Progress on stderr: stdout stays the result alone.
    console.error(`job ${job.id} enqueued on ${queue.name}; waiting for its result (at most ${timeoutMs} ms)…`);
    try {
      const result = await job.waitUntilFinished(events, timeoutMs);
      console.log(JSON.stringify({ jobId: job.id, ...result }, null, 2));
      return ENQUEUE_EXIT.OK;
    } catch (err) {
      console.error(`job ${job.id} failed: ${(err as Error).message}`);
      return ENQUEUE_EXIT.FAILED;
    }
  } catch (err) {
    if (err instanceof LensfleetError) {
      console.error(err.toString());
      return ENQUEUE_EXIT.USAGE;
    }
    console.error(`lensfleet: ${(err as Error).message}`);
    return ENQUEUE_EXIT.FAILED;
  } finally {
    await events?.close();
    await queue.close();
    // BullMQ does not close a connection it was handed.
    await Promise.all(clients.map(hangUp));
  }
}

#!/usr/bin/env node
/**
 * `lensfleet` command line.
 *
 *   lensfleet enqueue --tenant T --lens L [--params '{"limit":5}'] [--wait] [--timeout-ms 30000]
 *   lensfleet lenses
 *   lensfleet status [--fleet F] [--json]                    (cli/status.ts: its own exit codes)
 *   lensfleet plan (--workers N [--concurrency C] | --live) [--json]   (cli/plan.ts: its own exit codes)
 *   lensfleet procfile [--scale worker=3]                  (cli/procfile.ts: its own exit codes)
 *
 * Reads REDIS_URL (or REDIS_URL_FILE) or LENSFLEET_REDIS_* (a Cluster, Sentinel) and
 * LENSFLEET_QUEUE like the worker (the same settings tables). Exit codes: 0 ok, 1 the job failed or timed out (or Redis failed), 2 bad usage, an
 * invalid request or an invalid setting.
 */
import { parseArgs } from 'node:util';
import type { QueueEvents } from 'bullmq';
import { createLensQueue, createLensQueueEvents, enqueue } from '../queues/producer.js';
import { loadRedisSettings, PROCESS_SETTINGS, REDIS_SETTINGS } from '../src/config.js';
import { LensfleetError } from '../src/errors.js';
import { maritimeLenses } from '../src/lenses/maritime.js';
import { hangUp, type RedisClient, type RedisSettings, redisConnection } from '../src/redis.js';
import { readSettings } from '../src/settings.js';
import { planCommand } from './plan.js';
import { procfileCommand } from './procfile.js';
import { statusCommand } from './status.js';

export const EXIT_OK = 0;
/** The job failed, no result arrived in time, or Redis failed. */
export const EXIT_FAILED = 1;
/** Bad usage, an invalid request (refused before it reaches Redis) or an invalid setting. */
export const EXIT_USAGE = 2;

/** The settings the CLI reads: the worker's own rows, so names and defaults cannot drift. */
const CLI_SETTINGS = { queueName: PROCESS_SETTINGS.queueName };

const USAGE = `usage:
  lensfleet enqueue --tenant <id> --lens <name> [--params '<json object>'] [--wait] [--timeout-ms <ms>]
  lensfleet lenses
  lensfleet status [--fleet <name>] [--json]       the live fleet: workers, queues, connections per tenant
  lensfleet plan (--workers <n> [--concurrency <c>] | --live) [--json]
                                                   could the fleet overrun a tenant's database?
  lensfleet procfile [--procfile <path>] [--scale worker=<n>]
                                                   run the Procfile's processes here (as foreman does)
  lensfleet <command> --help                       a command's options and exit codes
environment:
${[REDIS_SETTINGS.url, ...Object.values(CLI_SETTINGS)].map((s) => `  ${s.env} (default ${s.default}${s.secret ? `; or ${s.env}_FILE` : ''})`).join('\n')}
  LENSFLEET_REDIS_MODE=cluster|sentinel with LENSFLEET_REDIS_NODES, … (as the worker; see the README)
exit codes (enqueue): 0 done, 1 the job failed or timed out, 2 bad usage or invalid request`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  // Every command answers --help (status and plan print their own).
  if ((command === 'lenses' || command === 'enqueue') && (rest.includes('--help') || rest.includes('-h'))) {
    console.log(USAGE);
    return EXIT_OK;
  }
  if (command === 'lenses') {
    for (const l of maritimeLenses) console.log(`${l.name.padEnd(20)} ${l.description}`);
    return EXIT_OK;
  }
  if (command === 'help' || command === '--help') {
    console.log(USAGE);
    return EXIT_OK;
  }
  if (command === 'status') return statusCommand(rest, process.env);
  if (command === 'plan') return planCommand(rest, process.env);
  if (command === 'procfile') return procfileCommand(rest, process.env);
  if (command === 'ui') return (await import('./ui.js')).uiCommand(rest, process.env);
  if (command !== 'enqueue') {
    console.error(command ? `unknown command "${command}"\n${USAGE}` : USAGE);
    return EXIT_USAGE;
  }
  let values: { tenant?: string; lens?: string; params: string; wait: boolean; 'timeout-ms': string };
  try {
    ({ values } = parseArgs({
      args: rest,
      options: {
        tenant: { type: 'string' },
        lens: { type: 'string' },
        params: { type: 'string', default: '{}' },
        wait: { type: 'boolean', default: false },
        'timeout-ms': { type: 'string', default: '30000' },
      },
      strict: true,
    }));
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    return EXIT_USAGE;
  }
  if (!values.tenant || !values.lens) {
    console.error(`--tenant and --lens are required\n${USAGE}`);
    return EXIT_USAGE;
  }
  let params: unknown;
  try {
    params = JSON.parse(values.params);
  } catch (err) {
    console.error(`--params is not valid JSON: ${(err as Error).message}`);
    return EXIT_USAGE;
  }
  if (params === null || typeof params !== 'object' || Array.isArray(params)) {
    console.error('--params must be a JSON object, e.g. \'{"limit": 5}\'');
    return EXIT_USAGE;
  }
  const timeoutMs = Number(values['timeout-ms']);
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) {
    console.error('--timeout-ms must be a positive whole number');
    return EXIT_USAGE;
  }
  let settings: ReturnType<typeof readSettings<typeof CLI_SETTINGS>>;
  let redis: RedisSettings;
  try {
    redis = loadRedisSettings(process.env);
    settings = readSettings(CLI_SETTINGS, process.env);
  } catch (err) {
    console.error((err as Error).message);
    return EXIT_USAGE;
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
      return EXIT_OK;
    }
    try {
      const result = await job.waitUntilFinished(events, timeoutMs);
      console.log(JSON.stringify({ jobId: job.id, ...result }, null, 2));
      return EXIT_OK;
    } catch (err) {
      console.error(`job ${job.id} failed: ${(err as Error).message}`);
      return EXIT_FAILED;
    }
  } catch (err) {
    if (err instanceof LensfleetError) {
      console.error(err.toString());
      return EXIT_USAGE;
    }
    console.error(`lensfleet: ${(err as Error).message}`);
    return EXIT_FAILED;
  } finally {
    await events?.close();
    await queue.close();
    // BullMQ does not close a connection it was handed.
    await Promise.all(clients.map(hangUp));
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(EXIT_FAILED);
  },
);

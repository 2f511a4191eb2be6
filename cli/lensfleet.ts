#!/usr/bin/env node
/**
 * `lensfleet` command line.
 *
 *   lensfleet enqueue --tenant T --lens L [--params '{"limit":5}'] [--wait] [--timeout-ms 30000]
 *   lensfleet lenses
 *
 * Reads REDIS_URL and LENSFLEET_QUEUE like the worker. Exit codes: 0 ok, 1 the job failed or
 * timed out, 2 bad usage or invalid request.
 */
import { parseArgs } from 'node:util';
import type { QueueEvents } from 'bullmq';
import { createLensQueue, createLensQueueEvents, enqueue } from '../queues/producer.js';
import { LensfleetError } from '../src/errors.js';
import { maritimeLenses } from '../src/lenses/maritime.js';

const USAGE = `usage:
  lensfleet enqueue --tenant <id> --lens <name> [--params '<json object>'] [--wait] [--timeout-ms <ms>]
  lensfleet lenses
environment: REDIS_URL (default redis://127.0.0.1:6379), LENSFLEET_QUEUE (default lens-queries)`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === 'lenses') {
    for (const l of maritimeLenses) console.log(`${l.name.padEnd(20)} ${l.description}`);
    return 0;
  }
  if (command !== 'enqueue') {
    console.error(command && command !== 'help' && command !== '--help' ? `unknown command "${command}"\n${USAGE}` : USAGE);
    return command === 'help' || command === '--help' ? 0 : 2;
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
    return 2;
  }
  if (!values.tenant || !values.lens) {
    console.error(`--tenant and --lens are required\n${USAGE}`);
    return 2;
  }
  let params: unknown;
  try {
    params = JSON.parse(values.params);
  } catch (err) {
    console.error(`--params is not valid JSON: ${(err as Error).message}`);
    return 2;
  }
  if (params === null || typeof params !== 'object' || Array.isArray(params)) {
    console.error('--params must be a JSON object, e.g. \'{"limit": 5}\'');
    return 2;
  }
  const timeoutMs = Number(values['timeout-ms']);
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) {
    console.error('--timeout-ms must be a positive whole number');
    return 2;
  }
  const connection = { url: process.env.REDIS_URL || 'redis://127.0.0.1:6379', maxRetriesPerRequest: 2, connectTimeout: 5000 };
  const queue = createLensQueue({ connection });
  let events: QueueEvents | undefined;
  try {
    if (values.wait) {
      events = await createLensQueueEvents(queue, connection);
      await events.waitUntilReady();
    }
    const job = await enqueue(queue, { tenant: values.tenant, lens: values.lens, params: params as Record<string, unknown> });
    if (!events) {
      console.log(JSON.stringify({ jobId: job.id, queue: queue.name, tenant: values.tenant, lens: values.lens }));
      return 0;
    }
    try {
      const result = await job.waitUntilFinished(events, timeoutMs);
      console.log(JSON.stringify({ jobId: job.id, ...result }, null, 2));
      return 0;
    } catch (err) {
      console.error(`job ${job.id} failed: ${(err as Error).message}`);
      return 1;
    }
  } catch (err) {
    if (err instanceof LensfleetError) {
      console.error(err.toString());
      return 2;
    }
    console.error(`lensfleet: ${(err as Error).message}`);
    return 1;
  } finally {
    await events?.close();
    await queue.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);

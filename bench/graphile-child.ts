/**
 * The Postgres-backed job queue side of the benchmark: a graphile-worker runner in its own
 * process (forked by bench/workloads/graphile.ts), running the same lens SQL the way the
 * hand-written BullMQ baseline does (bench/lib/bare-lens.ts). Jobs live
 * in graphile-worker's tables in their own database (GRAPHILE_URL) on the same Postgres server.
 *
 * Parent → child: `{ t: 'start' }` (run the runner), `{ t: 'pause' }` (stop it; the process and
 * its tenant pools stay warm), `{ t: 'arm', count }` (report `done` after `count` more finished
 * jobs), `{ t: 'stop' }`. Child → parent: `ready`, `started`, `paused`, `progress`, `done`.
 */
import { Logger, run, type Runner, type Task } from 'graphile-worker';
import { bareLensRunner } from './lib/bare-lens.js';

export type GraphileRequest = { readonly t: 'start' } | { readonly t: 'pause' } | { readonly t: 'arm'; readonly count: number } | { readonly t: 'stop' };
export type GraphileMessage =
  | { readonly t: 'ready' | 'started' | 'paused' }
  | { readonly t: 'progress'; readonly finished: number }
  | { readonly t: 'done'; readonly completed: number; readonly failed: number; readonly lastFinishedOn: number; readonly firstFailure: string | undefined };

const send = (m: GraphileMessage): void => void process.send?.(m);

async function main(): Promise<void> {
  const env = process.env;
  const concurrency = Number(env.LENSFLEET_CONCURRENCY ?? 16);
  const localQueueSize = Number(env.GRAPHILE_LOCAL_QUEUE_SIZE ?? concurrency + 1);
  const batchDelayMs = Number(env.GRAPHILE_BATCH_DELAY_MS ?? 250);
  const bare = bareLensRunner(env, concurrency, env.GRAPHILE_NAMED === '1');
  const lensTask: Task = async (payload) => {
    const { tenant, lens, params } = payload as { tenant: string; lens: string; params: Record<string, unknown> };
    await bare.run(tenant, lens, params);
  };

  let completed = 0;
  let failed = 0;
  let target = Number.POSITIVE_INFINITY;
  let lastFinishedOn = 0;
  let firstFailure: string | undefined;
  const finishedOne = (): void => {
    lastFinishedOn = Date.now();
    if (completed + failed >= target) {
      target = Number.POSITIVE_INFINITY;
      send({ t: 'done', completed, failed, lastFinishedOn, firstFailure });
    }
  };
  setInterval(() => send({ t: 'progress', finished: completed + failed }), 500).unref();

  let runner: Runner | undefined;
  const start = async (): Promise<void> => {
    runner = await run({
      connectionString: env.GRAPHILE_URL!,
      concurrency,
      // One connection per concurrent job plus the runner's own (LISTEN, completions).
      maxPoolSize: concurrency + 2,
      noHandleSignals: true,
      taskList: { lens: lensTask },
      logger: new Logger(() => () => {}),
      // Its throughput settings (worker.graphile.org/docs/performance#batching), from the
      // workload: jobs fetched and locked localQueue.size at a time, completions (and failures)
      // written in batches gathered for batchDelay ms; -1 turns either off.
      preset: {
        worker: {
          ...(localQueueSize > 0 ? { localQueue: { size: localQueueSize } } : {}),
          completeJobBatchDelay: batchDelayMs,
          failJobBatchDelay: batchDelayMs,
        },
      },
    });
    runner.events.on('job:success', () => {
      completed++;
      finishedOne();
    });
    runner.events.on('job:error', ({ error }) => {
      failed++;
      firstFailure ??= String((error as Error)?.message ?? error).slice(0, 300);
      finishedOne();
    });
  };

  process.on('message', (m: GraphileRequest) => {
    void (async () => {
      if (m.t === 'start') {
        await start();
        send({ t: 'started' });
      } else if (m.t === 'pause') {
        await runner?.stop();
        runner = undefined;
        send({ t: 'paused' });
      } else if (m.t === 'arm') {
        completed = 0;
        failed = 0;
        firstFailure = undefined;
        target = m.count;
      } else {
        await runner?.stop().catch(() => {});
        await bare.close();
        process.exit(0);
      }
    })().catch((err: unknown) => {
      process.stderr.write(`${(err as Error)?.stack ?? String(err)}\n`);
      process.exit(1);
    });
  });
  process.on('disconnect', () => process.exit(1));
  send({ t: 'ready' });
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});

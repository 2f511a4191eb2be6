/**
 * The fault ledger (issue 14): jobs with known ids go in, a fault is injected, the system
 * recovers, and every id is accounted for — completed, or failed with a reason — with the runs
 * that happened more than once, the connections seen against their bound, the recovery time and
 * what was left behind (`idle in transaction` sessions, worker processes that died).
 */
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { createLensQueue, enqueueMany, QueueEvents, type LensQueue } from '../../queues/producer.js';
import type { LensJobData } from '../../queues/contract.js';
import { sleep } from './harness.js';

export interface LedgerRow {
  readonly fault: string;
  readonly jobs: number;
  readonly completed: number;
  /** Failed for good, by error code (the stored reason is `CODE: message`). */
  readonly failed: Readonly<Record<string, number>>;
  /** Ids that never ended (or vanished): must be 0. */
  readonly lost: number;
  /**
   * Attempts beyond the first, summed over the jobs: retries after a failed attempt (most of them
   * failed to connect and never ran the lens) and stalled re-runs.
   */
  readonly extraRuns: number;
  /** Jobs active when the fault hit: the bound on lens runs done twice by the fault itself. */
  readonly activeAtFault: number;
  /** Most connections seen to one tenant's database, and the bound (workers × effective max). */
  readonly maxConnections: number;
  readonly bound: number;
  /** From the end of the injection to the next completed job. */
  readonly recoveryMs: number;
  /** Sessions left `idle in transaction` after the run: must be 0. */
  readonly idleInTransaction: number;
  readonly note?: string;
}

/**
 * Worker settings a ledger run needs: every finished job kept until it is accounted for (by default
 * a worker keeps 10,000 completed jobs, and one removed by retention would count as lost).
 */
export const KEEP_WORKER_ENV = { LENSFLEET_KEEP_COMPLETED_COUNT: '1000000', LENSFLEET_KEEP_FAILED_COUNT: '1000000' } as const;

/** Jobs on a fresh queue, completion times recorded as they come (QueueEvents). */
export class JobLedger {
  readonly queue: LensQueue;
  readonly #events: QueueEvents;
  readonly #ids: string[] = [];
  readonly #byTenant = new Map<string, string>();
  /** Completions as they came: when (performance.now(), so in order) and whose. */
  readonly #completed: { at: number; tenant: string | undefined }[] = [];

  private constructor(queue: LensQueue, events: QueueEvents) {
    this.queue = queue;
    this.#events = events;
    events.on('completed', ({ jobId }) => {
      this.#completed.push({ at: performance.now(), tenant: this.#byTenant.get(jobId) });
    });
  }

  static async open(redisUrl: string, name: string): Promise<JobLedger> {
    const queue = createLensQueue({ connection: { url: redisUrl }, name });
    const events = new QueueEvents(name, { connection: { url: redisUrl } });
    await events.waitUntilReady();
    return new JobLedger(queue, events);
  }

  get ids(): readonly string[] {
    return this.#ids;
  }

  async add(data: readonly LensJobData[]): Promise<void> {
    for (let i = 0; i < data.length; i += 500) {
      // Kept until the ledger is read (the workers' retention must allow it too: KEEP_WORKER_ENV).
      const jobs = await enqueueMany(this.queue, data.slice(i, i + 500), { removeOnComplete: false, removeOnFail: false });
      for (const [k, j] of jobs.entries()) {
        this.#ids.push(j.id!);
        this.#byTenant.set(j.id!, data[i + k]!.tenant);
      }
    }
  }

  /** Completed jobs of these tenants per second between two instants. */
  throughput(from: number, to: number, tenants?: ReadonlySet<string>): number {
    const n = this.#completed.filter((c) => c.at >= from && c.at < to && (tenants === undefined || (c.tenant !== undefined && tenants.has(c.tenant)))).length;
    return n / Math.max(0.001, (to - from) / 1000);
  }

  /** Completions seen so far. */
  get completedCount(): number {
    return this.#completed.length;
  }

  /** The first completion at or after `t` (performance.now()), minus `t`; Infinity if none. */
  recoveryAfter(t: number): number {
    const next = this.#completed.find((c) => c.at >= t);
    return next === undefined ? Number.POSITIVE_INFINITY : next.at - t;
  }

  /** Until every id has ended (completed or failed) or the time is up. */
  async settle(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let said = Date.now();
    while (Date.now() < deadline) {
      const c = await this.queue.getJobCounts('completed', 'failed', 'active', 'wait', 'delayed', 'prioritized', 'paused');
      if ((c.completed ?? 0) + (c.failed ?? 0) >= this.#ids.length) return;
      // Progress on long runs (and what is left, if it never settles).
      if (Date.now() - said > 15_000) {
        said = Date.now();
        console.log(`[ledger] ${this.queue.name}: ${JSON.stringify(c)} of ${this.#ids.length}`);
      }
      await sleep(100);
    }
  }

  /** Every id, accounted for. */
  async account(): Promise<Pick<LedgerRow, 'jobs' | 'completed' | 'failed' | 'lost' | 'extraRuns'>> {
    let completed = 0;
    let lost = 0;
    let extraRuns = 0;
    const failed: Record<string, number> = {};
    for (const id of this.#ids) {
      const job = await this.queue.getJob(id);
      if (job === undefined) {
        lost++;
        continue;
      }
      const state = await job.getState();
      extraRuns += Math.max(0, (job.attemptsStarted ?? job.attemptsMade) - 1);
      if (state === 'completed') completed++;
      else if (state === 'failed') {
        const code = /^([A-Z_]+):/.exec(job.failedReason ?? '')?.[1] ?? `(no code) ${(job.failedReason ?? '').slice(0, 60)}`;
        failed[code] = (failed[code] ?? 0) + 1;
      } else lost++;
    }
    return { jobs: this.#ids.length, completed, failed, lost, extraRuns };
  }

  async close(): Promise<void> {
    await this.#events.close();
    await this.queue.obliterate({ force: true }).catch(() => {});
    await this.queue.close();
  }
}

/** Sessions of these databases left `idle in transaction` (a job that never ended its transaction). */
export async function idleInTransaction(adminUrl: string, databases: readonly string[]): Promise<number> {
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    const r = await admin.query<{ n: string }>("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = ANY($1) AND state LIKE 'idle in transaction%'", [
      databases,
    ]);
    return Number(r.rows[0]?.n ?? 0);
  } finally {
    await admin.end();
  }
}

const rows: LedgerRow[] = [];

/** Print one row (a `[ledger]` line the CI log keeps) and remember it for the table at the end. */
export function record(row: LedgerRow): void {
  rows.push(row);
  const failed = Object.entries(row.failed)
    .map(([c, n]) => `${c} ${n}`)
    .join(', ');
  console.log(
    `[ledger] ${row.fault}: jobs ${row.jobs}, completed ${row.completed}, failed ${failed || '0'}, lost ${row.lost}, extra attempts ${row.extraRuns} (active at fault ${row.activeAtFault}), ` +
      `max connections of a tenant ${row.maxConnections}/${row.bound}, recovery ${Number.isFinite(row.recoveryMs) ? `${Math.round(row.recoveryMs)} ms` : 'none'}, idle in transaction ${row.idleInTransaction}` +
      (row.note ? `; ${row.note}` : ''),
  );
}

/** The ledger so far as a Markdown table (docs). */
export function ledgerTable(): string {
  const head =
    '| fault | jobs | completed | failed (reason) | lost | extra attempts (active at fault) | max connections of a tenant / bound | recovery | idle in transaction | note |';
  const sep = '|---|---|---|---|---|---|---|---|---|---|';
  return [
    head,
    sep,
    ...rows.map(
      (r) =>
        `| ${r.fault} | ${r.jobs} | ${r.completed} | ${
          Object.entries(r.failed)
            .map(([c, n]) => `${c} ${n}`)
            .join(', ') || '0'
        } | ${r.lost} | ${r.extraRuns} (${r.activeAtFault}) | ${r.maxConnections} / ${r.bound} | ${Number.isFinite(r.recoveryMs) ? `${Math.round(r.recoveryMs)} ms` : '–'} | ${r.idleInTransaction} | ${r.note ?? ''} |`,
    ),
  ].join('\n');
}

/**
 * A TCP proxy in front of a database that can be switched to a black hole: connections are then
 * accepted and never answered (a server gone silent, a network partition), and the ones it was
 * forwarding are cut. A fake where the fake is the point: Postgres cannot be made to hang.
 */
export async function switchProxy(targetPort: number): Promise<{ port: number; blackhole(on: boolean): void; close(): Promise<void> }> {
  const { default: net } = await import('node:net');
  let dark = false;
  const live = new Set<import('node:net').Socket>();
  const server = net.createServer((client) => {
    live.add(client);
    client.on('close', () => live.delete(client));
    client.on('error', () => {});
    if (dark) return; // accepted, never answered
    const upstream = net.connect({ host: '127.0.0.1', port: targetPort });
    live.add(upstream);
    upstream.on('close', () => {
      live.delete(upstream);
      client.destroy();
    });
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as import('node:net').AddressInfo).port,
    blackhole(on) {
      dark = on;
      if (on) for (const s of live) s.destroy();
    },
    async close() {
      for (const s of live) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/**
 * The fleet-wide per-tenant connection cap, proven with real processes (issue 13 item 3): four
 * worker processes × concurrency 16 against one tenant capped at 6 connections (in the tenants
 * file). pg_stat_activity, sampled every 10 ms, never shows more than 6 connections to the
 * tenant's database, and every job completes. Then a worker holding leases is killed with
 * SIGKILL: its leases go back within the TTL, and its membership record disappears.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLensQueue, enqueueMany, QueueEvents, type LensQueue } from '../queues/producer.js';
import { FleetKeys } from '../src/fleet/keys.js';
import { readMembers } from '../src/fleet/membership.js';
import { createTenants, killWorker, redisClient, redisUrl, sampleConnections, spawnWorker, uniqueId, waitFor, type ChildWorker } from './support/harness.js';

const TENANT = uniqueId('yCap');
const QUEUE = uniqueId('q_cap');
const CAP = 6;
const WORKERS = 4;
const CONCURRENCY = 16;
const TTL_MS = 3000;
const JOBS = 800;

describe(`fleet connection cap: ${WORKERS} worker processes × concurrency ${CONCURRENCY}, one tenant capped at ${CAP}`, () => {
  let tenants: Awaited<ReturnType<typeof createTenants>>;
  let dir: string;
  const children: ChildWorker[] = [];
  let queue: LensQueue;
  let events: QueueEvents;
  const keys = new FleetKeys(QUEUE);

  beforeAll(async () => {
    tenants = await createTenants([TENANT], 10);
    dir = mkdtempSync(path.join(os.tmpdir(), 'lf-cap-'));
    const file = path.join(dir, 'tenants.json');
    writeFileSync(file, JSON.stringify({ tenants: { [TENANT]: { pool: { fleetMaxConnections: CAP, minSize: 0 } } } }));
    queue = createLensQueue({ connection: { url: redisUrl() }, name: QUEUE });
    events = new QueueEvents(QUEUE, { connection: { url: redisUrl() } });
    events.setMaxListeners(10_000);
    await events.waitUntilReady();
    const env = {
      ...tenants.env,
      LENSFLEET_TENANTS_FILE: file,
      LENSFLEET_QUEUE: QUEUE,
      LENSFLEET_CONCURRENCY: String(CONCURRENCY),
      LENSFLEET_FLEET_TTL_MS: String(TTL_MS),
      LOG_LEVEL: 'warn',
    };
    children.push(...(await Promise.all(Array.from({ length: WORKERS }, () => spawnWorker(env)))));
  }, 120_000);
  afterAll(async () => {
    await Promise.all(children.map((c) => killWorker(c)));
    await events?.close();
    await queue?.obliterate({ force: true }).catch(() => {});
    await queue?.close();
    await tenants?.drop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  /** Live leases of the tenant in Redis (by holder), on Redis's clock. */
  async function liveLeases(): Promise<Map<string, number>> {
    const r = redisClient();
    try {
      const [s, us] = await r.time();
      const now = Number(s) * 1000 + Math.floor(Number(us) / 1000);
      const ids = await r.zrangebyscore(keys.leases(TENANT), `(${now}`, '+inf');
      const by = new Map<string, number>();
      for (const id of ids) {
        const worker = id.slice(0, id.lastIndexOf('|'));
        by.set(worker, (by.get(worker) ?? 0) + 1);
      }
      return by;
    } finally {
      r.disconnect();
    }
  }

  it(`${JOBS} jobs: pg_stat_activity (every 10 ms) never shows more than ${CAP} connections to the tenant, and every job completes`, async () => {
    const sampler = sampleConnections(tenants.dbs[0]!.database, 10);
    let maxSeen = 0;
    const started = performance.now();
    let jobs: Awaited<ReturnType<typeof enqueueMany>> = [];
    try {
      jobs = await enqueueMany(
        queue,
        Array.from({ length: JOBS }, () => ({ tenant: TENANT, lens: 'test.sleep', params: { seconds: 0.02 } })),
      );
      const results = await Promise.all(jobs.map((j) => j.waitUntilFinished(events, 90_000)));
      expect(results).toHaveLength(JOBS);
    } finally {
      maxSeen = await sampler.stop();
    }
    const seconds = (performance.now() - started) / 1000;
    let retried = 0;
    for (const j of jobs) if ((await queue.getJob(j.id!))!.attemptsMade > 1) retried++;
    const r = redisClient();
    const members = await readMembers(r, keys).finally(() => r.disconnect());
    const perWorker = members.members.map((m) => m.pools[TENANT]?.open ?? 0);
    console.error(
      `[fleet-cap] ${JOBS} jobs by ${WORKERS} workers × ${CONCURRENCY} in ${seconds.toFixed(1)} s: max ${maxSeen} connections seen (cap ${CAP}); ${retried} jobs retried; connections per worker at the end ${perWorker.join('/')}`,
    );
    expect(maxSeen).toBeGreaterThan(0);
    expect(maxSeen).toBeLessThanOrEqual(CAP);
    // Every worker is a member of the fleet, with the tenant's cap in its record.
    expect(members.members).toHaveLength(WORKERS);
    for (const m of members.members) expect(m.concurrency).toBe(CONCURRENCY);
  }, 120_000);

  it(`a worker killed with SIGKILL gives its leases back within the TTL (${TTL_MS} ms) and leaves the fleet`, async () => {
    // Long jobs keep every worker busy, so each holds leases when the victim dies.
    const jobs = await enqueueMany(
      queue,
      Array.from({ length: 200 }, () => ({ tenant: TENANT, lens: 'test.sleep', params: { seconds: 0.3 } })),
    );
    const r = redisClient();
    const members = (await readMembers(r, keys)).members;
    r.disconnect();
    const victim = children[0]!;
    const victimId = members.find((m) => m.pid === victim.proc.pid)?.id;
    expect(victimId).toBeDefined();
    await waitFor('the victim to hold leases', async () => ((await liveLeases()).get(victimId!) ?? 0) > 0, 20_000, 20);
    const sampler = sampleConnections(tenants.dbs[0]!.database, 10);
    const killedAt = performance.now();
    victim.proc.kill('SIGKILL');
    await victim.exited;
    await waitFor('the victim’s leases to expire', async () => !(await liveLeases()).has(victimId!), TTL_MS + 5000, 20);
    const returnedMs = performance.now() - killedAt;
    await waitFor(
      'the victim to leave the fleet',
      async () => {
        const c = redisClient();
        try {
          return !(await readMembers(c, keys)).members.some((m) => m.id === victimId);
        } finally {
          c.disconnect();
        }
      },
      TTL_MS + 5000,
      50,
    );
    const leftMs = performance.now() - killedAt;
    // The survivors take the freed leases up to the cap again.
    await waitFor('the survivors to use the whole cap', async () => [...(await liveLeases()).values()].reduce((a, b) => a + b, 0) === CAP, 20_000, 20);
    const maxSeen = await sampler.stop();
    console.error(
      `[fleet-cap] SIGKILL: leases back after ${Math.round(returnedMs)} ms, left the fleet after ${Math.round(leftMs)} ms (TTL ${TTL_MS} ms); max ${maxSeen} connections seen`,
    );
    expect(returnedMs).toBeLessThanOrEqual(TTL_MS + 1000);
    expect(maxSeen).toBeLessThanOrEqual(CAP);
    // Its unfinished jobs are stalled (BullMQ retries them elsewhere later); the rest complete.
    await Promise.allSettled(jobs.map((j) => j.waitUntilFinished(events, 1)));
  }, 120_000);
});

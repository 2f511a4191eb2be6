/**
 * Fleet membership (issue 13 item 2) on the real Redis: every worker keeps a record of itself
 * (id, host, pid, queue, concurrency, version, start, its pools: tenant → connections) that a
 * heartbeat refreshes and that expires with the TTL; a closed worker deletes it at once.
 */
import os from 'node:os';
import { Redis } from 'ioredis';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FleetKeys } from '../src/fleet/keys.js';
import { FleetMembership, readMembers, type MemberRecord } from '../src/fleet/membership.js';
import { packageVersion } from '../src/version.js';
import { createTenants, redisClient, redisUrl, startTestWorker, uniqueId, waitFor, type TestWorker } from './support/harness.js';

const TENANT = uniqueId('yMem');

describe('fleet membership', () => {
  let tenants: Awaited<ReturnType<typeof createTenants>>;
  const redis = redisClient();

  beforeAll(async () => {
    tenants = await createTenants([TENANT], 5);
  });
  afterAll(async () => {
    redis.disconnect();
    await tenants?.drop();
  });

  it('two workers of one queue are two members, with host, pid, concurrency, version, start and their pools; a closed one leaves at once', async () => {
    const queueName = uniqueId('q_mem');
    const workers: TestWorker[] = [];
    try {
      workers.push(await startTestWorker({ env: tenants.env, queueName, concurrency: 3 }));
      workers.push(await startTestWorker({ env: tenants.env, queueName, concurrency: 5 }));
      const keys = new FleetKeys(queueName);
      const first = await readMembers(redis, keys);
      expect(first.members.map((m) => m.concurrency).sort()).toEqual([3, 5]);
      for (const m of first.members) {
        expect(m).toMatchObject({ host: os.hostname(), pid: process.pid, queue: queueName, version: packageVersion(), draining: false, ttlMs: 10_000 });
        expect(m.version).toMatch(/^\d+\.\d+\.\d+/);
        expect(Date.parse(m.startedAt)).toBeGreaterThan(Date.now() - 60_000);
      }
      expect(new Set(first.members.map((m) => m.id)).size).toBe(2);
      expect(first.members.map((m) => m.id).sort()).toEqual(workers.map((w) => w.service.fleet.workerId).sort());

      // A job opens a pool in the worker that runs it; the next heartbeat carries it.
      const job = await workers[0]!.queue.add('whoami', { v: 1, tenant: TENANT, lens: 'test.whoami', params: {} });
      await job.waitUntilFinished(workers[0]!.events, 15_000);
      for (const w of workers) await w.service.fleet.membership.beat();
      const after = await readMembers(redis, keys);
      const pools = after.members.flatMap((m) => Object.entries(m.pools));
      expect(pools.length).toBe(1);
      expect(pools[0]![0]).toBe(TENANT);
      expect(pools[0]![1]).toMatchObject({ open: expect.any(Number), inUse: 0, leases: 0 });
      expect(pools[0]![1].open).toBeGreaterThanOrEqual(1);
      expect(pools[0]![1].cap).toBeUndefined();

      await workers[1]!.close();
      const left = await readMembers(redis, keys);
      expect(left.members.map((m) => m.id)).toEqual([workers[0]!.service.fleet.workerId]);
    } finally {
      await Promise.all(workers.map((w) => w.close()));
    }
  });

  it('a worker that stops its heartbeat (killed) disappears within the TTL', async () => {
    const keys = new FleetKeys(uniqueId('fl'));
    const own = new Redis(redisUrl(), { maxRetriesPerRequest: 1, enableOfflineQueue: false });
    await new Promise((resolve) => own.once('ready', resolve));
    const record = (id: string): MemberRecord => ({
      id,
      host: 'h',
      pid: 1,
      queue: 'q',
      concurrency: 1,
      processMaxConnections: 2,
      version: '0.0.0',
      startedAt: new Date().toISOString(),
      heartbeatAt: new Date().toISOString(),
      ttlMs: 2000,
      activeJobs: 0,
      draining: false,
      pools: {},
    });
    const m = new FleetMembership({ redis: own, keys, workerId: 'w1', ttlMs: 2000, record: () => record('w1'), logger: pino({ level: 'silent' }) });
    await m.start();
    try {
      expect((await readMembers(redis, keys)).members.map((x) => x.id)).toEqual(['w1']);
      // Heartbeats keep it beyond the TTL…
      await new Promise((r) => setTimeout(r, 3000));
      expect((await readMembers(redis, keys)).members.map((x) => x.id)).toEqual(['w1']);
      // …until they stop (as when the process is killed): gone within the TTL.
      own.disconnect();
      const stopped = Date.now();
      await waitFor('the record to expire', async () => (await readMembers(redis, keys)).members.length === 0, 5000, 20);
      expect(Date.now() - stopped).toBeLessThanOrEqual(2000 + 1000);
    } finally {
      await m.close();
    }
  });

  it('skips records that are not member records (garbage in Redis never breaks the reader)', async () => {
    const keys = new FleetKeys(uniqueId('fl'));
    const far = Date.now() + 60_000;
    await redis.zadd(keys.members, far, 'junk', far, 'half');
    await redis.set(keys.member('junk'), '{not json', 'PX', 60_000);
    await redis.set(keys.member('half'), JSON.stringify({ id: 'half', pid: 'x' }), 'PX', 60_000);
    const view = await readMembers(redis, keys);
    expect(view.members).toEqual([]);
    expect(view.invalid).toBe(2);
    await redis.del(keys.members, keys.member('junk'), keys.member('half'));
  });
});

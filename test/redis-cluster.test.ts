/**
 * Queues and the fleet on a Redis Cluster (issue 14): a local 3-master cluster (Debian's
 * redis-server, `redis-cli --cluster create`). A worker on it completes jobs added by the producer
 * SDK and by a plain BullMQ producer with the contract's prefix; every key of the queue is in
 * the one slot of its hash tag; a producer without the tag is refused (CROSSSLOT), not silently
 * put on another queue. Two workers share a fleet-capped tenant there: the cap holds, the lease
 * notices flow over the Cluster's pub/sub, and `lensfleet status` reads it all.
 */
import { Queue } from 'bullmq';
import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type LensJobData, queuePrefix } from '../queues/contract.js';
import { enqueueMany, run } from '../queues/producer.js';
import { readStatus, STATUS_EXIT, statusCommand } from '../cli/status.js';
import { startRedisCluster, type LocalRedisCluster } from '../dev/local/redis-topologies.js';
import { ensureSystemPackages } from '../dev/local/servers.js';
import { FleetKeys } from '../src/fleet/keys.js';
import { createTenants, sampleConnections, startTestWorker, uniqueId, waitFor, type TestWorker } from './support/harness.js';

const A = uniqueId('yClA');
const B = uniqueId('yClB');
/** The capped tenant, only for the fleet test (so no other worker's pool counts in its connections). */
const C = uniqueId('yClC');
const CAP = 2;

describe('Redis Cluster: queues and the fleet on a 3-master cluster', () => {
  let cluster: LocalRedisCluster;
  let tenants: Awaited<ReturnType<typeof createTenants>>;
  const clients: Cluster[] = [];
  const workers: TestWorker[] = [];

  /** A Cluster client of the test (closed in afterAll). */
  const client = (): Cluster => {
    const c = new Cluster(cluster.nodes.map((n) => ({ host: n.host, port: n.port })));
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    await ensureSystemPackages({ redis: true });
    [cluster, tenants] = await Promise.all([startRedisCluster(), createTenants([A, B, C], 10)]);
  }, 120_000);
  afterAll(async () => {
    await Promise.allSettled(workers.map((w) => w.close()));
    for (const c of clients) c.disconnect();
    await cluster?.stop();
    await tenants?.drop();
  }, 60_000);

  /** An in-process worker on the cluster; its producer queue and events are on the cluster too. */
  const clusterWorker = (queueName: string, settings: Record<string, string> = {}, concurrency = 4) =>
    startTestWorker({
      env: tenants.env,
      queueName,
      concurrency,
      http: false,
      // REDIS_URL blank = unset: the harness sets it for the run's standalone Redis.
      settings: { ...cluster.env, REDIS_URL: '', ...settings },
      connection: client(),
    }).then((w) => {
      workers.push(w);
      return w;
    });

  it('a worker completes jobs of the producer SDK (enqueueMany, run) and of a plain BullMQ producer with the prefix {<queue>}; every key of the queue is in one slot', async () => {
    const queueName = uniqueId('q_cl');
    const w = await clusterWorker(queueName);
    expect(w.queue.opts.prefix).toBe(`{${queueName}}`);

    const sdkJobs = await enqueueMany(
      w.queue,
      Array.from({ length: 30 }, (_, i) => ({ tenant: i % 2 ? A : B, lens: 'work_orders.open', params: { limit: 2 } })),
    );
    const viaRun = await run(w.queue, w.events, { tenant: A, lens: 'receiving.recent', params: { limit: 3 } });
    expect(viaRun).toMatchObject({ tenant: A, lens: 'receiving.recent', rowCount: 3 });

    const redis = client();
    const plain = new Queue(queueName, { connection: redis, prefix: queuePrefix(queueName, true) });
    const plainJobs = await plain.addBulk(
      Array.from({ length: 10 }, () => ({
        name: 'work_orders.open',
        data: { v: 1, tenant: A, lens: 'work_orders.open', params: { limit: 1 } } satisfies LensJobData,
      })),
    );
    const results = await Promise.all([...sdkJobs, ...plainJobs].map((j) => j.waitUntilFinished(w.events, 60_000)));
    expect(results).toHaveLength(40);
    for (const [i, r] of results.entries()) expect(r).toMatchObject({ lens: 'work_orders.open', rowCount: i < 30 ? 2 : 1 });
    await plain.close();

    // Every key BullMQ made for the queue hashes to the slot of its tag.
    const slot = await redis.cluster('KEYSLOT', `{${queueName}}`);
    const node = (await Promise.all(redis.nodes('master').map(async (n) => ({ n, keys: await n.keys(`{${queueName}}:*`) })))).filter((x) => x.keys.length > 0);
    expect(node).toHaveLength(1);
    expect(node[0]!.keys.length).toBeGreaterThan(5);
    for (const key of node[0]!.keys) expect(await redis.cluster('KEYSLOT', key)).toBe(slot);
    console.log(`[figure] Redis Cluster: 41 jobs (SDK 31, plain BullMQ 10) completed; ${node[0]!.keys.length} keys of the queue, all in slot ${slot}`);
  }, 120_000);

  it('a producer on the Cluster without the hash tag cannot add: Redis answers CROSSSLOT (a mismatch is an error, not a second queue)', async () => {
    const plain = new Queue(uniqueId('q_untagged'), { connection: client() });
    await expect(plain.add('x', { v: 1, tenant: A, lens: 'work_orders.open', params: {} })).rejects.toThrow(/CROSSSLOT/);
    await plain.close();
  }, 60_000);

  it(`two workers share a tenant capped at ${CAP}: never more connections, lease notices over the Cluster's pub/sub, status reads the fleet`, async () => {
    const queueName = uniqueId('q_clfleet');
    const capped = { LENSFLEET_FLEET_MAX_CONNECTIONS: String(CAP), LENSFLEET_POOL_MIN_SIZE: '0', LENSFLEET_FLEET_TTL_MS: '3000' };
    const [w1, w2] = [await clusterWorker(queueName, capped, 4), await clusterWorker(queueName, capped, 4)];
    const keys = new FleetKeys(queueName);
    // A subscriber on a node of its own choosing hears the notices the lease scripts publish on the fleet's slot.
    const listener = client();
    const notices: string[] = [];
    listener.on('message', (_channel: string, message: string) => notices.push(message));
    await listener.subscribe(keys.channel);

    const sampler = sampleConnections(tenants.dbs.find((d) => d.tenant === C)!.database, 10);
    let maxSeen: number;
    try {
      const jobs = await enqueueMany(
        w1.queue,
        Array.from({ length: 60 }, () => ({ tenant: C, lens: 'test.sleep', params: { seconds: 0.05 } })),
      );
      const results = await Promise.all(jobs.map((j) => j.waitUntilFinished(w1.events, 90_000)));
      expect(results).toHaveLength(60);
    } finally {
      maxSeen = await sampler.stop();
    }
    expect(maxSeen).toBeGreaterThan(0);
    expect(maxSeen).toBeLessThanOrEqual(CAP);
    // Eight job slots for two connections: workers waited, and said so over the Cluster.
    await waitFor('a lease notice', () => notices.some((n) => n.startsWith('wanted ') || n.startsWith('freed ')), 10_000);

    const status = await readStatus(client(), queueName, queueName, 'cluster');
    expect(status.workers.map((m) => m.id).sort()).toEqual([w1.service.fleet.workerId, w2.service.fleet.workerId].sort());
    expect(status.queues[queueName]).toMatchObject({ completed: 60, waiting: 0, active: 0 });
    const c = status.tenants.find((t) => t.tenant === C);
    expect(c?.cap).toBe(CAP);
    // The idle connections keep their leases; status finds the lease set on whichever master holds the fleet's slot.
    expect(c?.leases).toBeGreaterThan(0);
    expect(c?.leases).toBeLessThanOrEqual(CAP);
    // The command line, from the workers' settings: it names the cluster, never a password.
    const out = vi.spyOn(console, 'log').mockImplementation(() => {});
    try {
      const code = await statusCommand(['--json'], { ...cluster.env, LENSFLEET_QUEUE: queueName, LENSFLEET_REDIS_PASSWORD: 'S3CRET-unused' });
      expect(code).toBe(STATUS_EXIT.OK);
      const printed = JSON.parse(String(out.mock.calls[0]?.[0])) as { redis: string; workers: unknown[] };
      expect(printed.redis).toBe(`cluster ${cluster.env.LENSFLEET_REDIS_NODES}`);
      expect(printed.workers).toHaveLength(2);
      expect(JSON.stringify(out.mock.calls)).not.toContain('S3CRET');
    } finally {
      out.mockRestore();
    }
    console.log(
      `[figure] Redis Cluster fleet: 60 jobs by 2 workers × 4 on a tenant capped at ${CAP}: max ${maxSeen} connections seen; ${notices.length} lease notices received; status shows ${status.workers.length} workers, ${c?.leases} leases`,
    );
  }, 120_000);
});

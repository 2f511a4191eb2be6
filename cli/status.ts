/**
 * `lensfleet status`: the live fleet as Redis knows it — its workers (membership records), the
 * depth of their queues, and per tenant the connections across the fleet and the fleet leases
 * held against its cap. Read-only; a human table, or `--json`.
 */
import { Queue } from 'bullmq';
import { FLEET_SETTINGS, loadRedisSettings, PROCESS_SETTINGS } from '../src/config.js';
import { FleetKeys } from '../src/fleet/keys.js';
import { type LiveMember, readMembers } from '../src/fleet/membership.js';
import { queuePrefix } from '../queues/contract.js';
import { describeRedis, isCluster, type RedisClient, type RedisSettings, redisConnection, safeRedisMessage, scanTargets } from '../src/redis.js';
import { type Env, readSettings } from '../src/settings.js';
import { duration, table } from './format.js';
import { parseCommandArgs } from './args.js';

export const STATUS_EXIT = {
  /** The fleet was read (also when no worker is live). */
  OK: 0,
  /** Redis could not be reached or read. */
  FAILED: 1,
  /** Bad usage or an invalid setting. */
  USAGE: 2,
} as const;

const SETTINGS = { queueName: PROCESS_SETTINGS.queueName, fleet: FLEET_SETTINGS.name };

export const STATUS_USAGE = `usage: lensfleet status [--fleet <name>] [--json]

The live fleet: its workers (id, host, pid, queue, concurrency, version, uptime, last heartbeat),
the depth of their queues, and per tenant the connections across the fleet (open, in use, idle,
waiting) and the fleet leases held against its cap (fleetMaxConnections).

options:
  --fleet <name>  the fleet to show (default: LENSFLEET_FLEET, else LENSFLEET_QUEUE)
  --json          one JSON object instead of tables
  --help          this text
environment: REDIS_URL (or REDIS_URL_FILE) or LENSFLEET_REDIS_* (as the worker), LENSFLEET_QUEUE, LENSFLEET_FLEET
exit codes: 0 shown (also with no live worker), 1 Redis could not be read, 2 bad usage or an invalid setting`;

const QUEUE_STATES = ['waiting', 'prioritized', 'active', 'delayed', 'failed', 'completed'] as const;

export interface TenantStatus {
  readonly tenant: string;
  /** Workers with a pool for the tenant. */
  readonly workers: number;
  readonly open: number;
  readonly inUse: number;
  readonly idle: number;
  readonly waiting: number;
  /** Live leases in Redis (every worker's, including one killed less than a TTL ago). */
  readonly leases: number;
  /** The cap, as the workers report it (the largest, should they disagree). */
  readonly cap: number | undefined;
}

export interface FleetStatus {
  readonly fleet: string;
  readonly redis: string;
  readonly workers: LiveMember[];
  readonly invalidRecords: number;
  readonly queues: Record<string, Record<string, number>>;
  readonly tenants: TenantStatus[];
}

export async function statusCommand(argv: readonly string[], env: Env): Promise<number> {
  const parsed = parseCommandArgs<{ fleet?: string; json: boolean }>(
    argv,
    { fleet: { type: 'string' }, json: { type: 'boolean', default: false } },
    STATUS_USAGE,
  );
  if ('exit' in parsed) return parsed.exit;
  const { values } = parsed;
  let settings: ReturnType<typeof readSettings<typeof SETTINGS>>;
  let redisSettings: RedisSettings;
  try {
    redisSettings = loadRedisSettings(env);
    settings = readSettings(SETTINGS, env);
    if (values.fleet !== undefined) settings = { ...settings, fleet: readSettings({ fleet: FLEET_SETTINGS.name }, { LENSFLEET_FLEET: values.fleet }).fleet };
  } catch (err) {
    console.error((err as Error).message);
    return STATUS_EXIT.USAGE;
  }
  const redis = redisConnection(redisSettings, 'cli', { lazyConnect: true });
  redis.on('error', () => {}); // reported below, once
  try {
    await redis.connect();
    const status = await readStatus(redis, settings.fleet ?? settings.queueName, settings.queueName, describeRedis(redisSettings));
    console.log(values.json ? JSON.stringify(status, null, 2) : render(status));
    return STATUS_EXIT.OK;
  } catch (err) {
    console.error(`lensfleet status: cannot read the fleet from Redis at ${describeRedis(redisSettings)}: ${safeRedisMessage(err, redisSettings)}`);
    return STATUS_EXIT.FAILED;
  } finally {
    redis.disconnect();
  }
}

/** Everything `status` shows, read from Redis. */
export async function readStatus(redis: RedisClient, fleet: string, queueName: string, redisLocation: string): Promise<FleetStatus> {
  const keys = new FleetKeys(fleet);
  const view = await readMembers(redis, keys);
  const queues: Record<string, Record<string, number>> = {};
  for (const name of new Set([queueName, ...view.members.map((m) => m.queue)])) {
    // The connection is shared, so closing the queue leaves it open.
    const q = new Queue(name, { connection: redis, prefix: queuePrefix(name, isCluster(redis)) });
    try {
      queues[name] = await q.getJobCounts(...QUEUE_STATES);
    } finally {
      await q.close();
    }
  }
  const leases = await liveLeases(redis, keys, view.now);
  const tenants = new Map<string, { workers: number; open: number; inUse: number; idle: number; waiting: number; cap: number | undefined }>();
  for (const m of view.members) {
    for (const [tenant, p] of Object.entries(m.pools)) {
      const t = tenants.get(tenant) ?? { workers: 0, open: 0, inUse: 0, idle: 0, waiting: 0, cap: undefined };
      t.workers++;
      t.open += p.open;
      t.inUse += p.inUse;
      t.idle += p.idle;
      t.waiting += p.waiting;
      if (p.cap !== undefined) t.cap = Math.max(t.cap ?? 0, p.cap);
      tenants.set(tenant, t);
    }
  }
  for (const tenant of leases.keys()) if (!tenants.has(tenant)) tenants.set(tenant, { workers: 0, open: 0, inUse: 0, idle: 0, waiting: 0, cap: undefined });
  return {
    fleet,
    redis: redisLocation,
    workers: view.members,
    invalidRecords: view.invalid,
    queues,
    tenants: [...tenants.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([tenant, t]) => ({ tenant, ...t, leases: leases.get(tenant) ?? 0 })),
  };
}

/** Live leases per tenant (SCAN: the CLI may take its time; a worker never scans). */
async function liveLeases(redis: RedisClient, keys: FleetKeys, now: number): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  // A Cluster's SCAN sees one node's keys: scan every master (the fleet's keys share one slot, so
  // one of them has them all).
  for (const node of scanTargets(redis)) {
    let cursor = '0';
    do {
      const [next, found] = await node.scan(cursor, 'MATCH', keys.leasesPattern, 'COUNT', 1000);
      cursor = next;
      for (const key of found) {
        const tenant = keys.tenantOfLeases(key);
        if (tenant === undefined) continue;
        const n = await redis.zcount(key, `(${now}`, '+inf');
        if (n > 0) out.set(tenant, n);
      }
    } while (cursor !== '0');
  }
  return out;
}

function render(s: FleetStatus): string {
  const out: string[] = [];
  out.push(`fleet ${s.fleet} on ${s.redis}: ${s.workers.length} live worker${s.workers.length === 1 ? '' : 's'}`);
  if (s.invalidRecords > 0) out.push(`(${s.invalidRecords} unreadable membership record${s.invalidRecords === 1 ? '' : 's'} skipped)`);
  out.push('');
  if (s.workers.length > 0) {
    out.push(
      table(
        ['WORKER', 'HOST', 'PID', 'QUEUE', 'CONCURRENCY', 'ACTIVE', 'POOLS', 'CONNECTIONS', 'VERSION', 'UP', 'SEEN', 'STATE'],
        s.workers.map((w) => [
          w.id,
          w.host,
          w.pid,
          w.queue,
          w.concurrency,
          w.activeJobs,
          Object.keys(w.pools).length,
          Object.values(w.pools).reduce((a, p) => a + p.open, 0),
          w.version,
          uptime(w.startedAt),
          `${duration(w.seenMsAgo)} ago`,
          w.draining ? 'draining' : 'running',
        ]),
      ),
    );
    out.push('');
  }
  out.push(
    table(
      ['QUEUE', ...QUEUE_STATES.map((q) => q.toUpperCase())],
      Object.entries(s.queues).map(([name, c]) => [name, ...QUEUE_STATES.map((q) => c[q] ?? 0)]),
    ),
  );
  out.push('');
  if (s.tenants.length === 0) out.push('no tenant pool open in the fleet');
  else
    out.push(
      table(
        ['TENANT', 'WORKERS', 'OPEN', 'IN USE', 'IDLE', 'WAITING', 'LEASES', 'CAP'],
        s.tenants.map((t) => [t.tenant, t.workers, t.open, t.inUse, t.idle, t.waiting, t.leases, t.cap ?? '-']),
      ),
    );
  return out.join('\n');
}

function uptime(startedAt: string): string {
  const t = Date.parse(startedAt);
  return Number.isNaN(t) ? '?' : duration(Math.max(0, Date.now() - t));
}

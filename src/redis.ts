/**
 * Every Redis connection of lensfleet is made here, from the settings (`LENSFLEET_REDIS_*`,
 * `REDIS_URL`, src/config.ts), for three deployments:
 *
 * - **standalone**: one server, `REDIS_URL` (as before);
 * - **cluster**: a Redis Cluster reached through seed nodes (ioredis `Cluster`), which learns the
 *   other nodes and the slot map itself;
 * - **sentinel**: a master found through Sentinel (ioredis `sentinels` + `name`), followed across
 *   failovers: on a disconnect ioredis asks the sentinels again, and with `failoverDetector` it
 *   hears `+switch-master` and moves at once instead of waiting for the old master to drop it.
 *
 * A role says how a connection behaves while Redis is away (fail fast, or wait forever for a
 * blocking reader); the mode says only how to reach Redis. Callers get one client type either way.
 */
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import { queuePrefix } from '../queues/contract.js';
import type { Secret } from './secret.js';

export const REDIS_MODES = ['standalone', 'cluster', 'sentinel'] as const;
export type RedisMode = (typeof REDIS_MODES)[number];

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** Where Redis is: one variant per mode (a mode is a type, not a flag). */
export type RedisSettings =
  | { readonly mode: 'standalone'; readonly url: Secret }
  | { readonly mode: 'cluster'; readonly nodes: readonly HostPort[]; readonly username: string | undefined; readonly password: Secret | undefined }
  | {
      readonly mode: 'sentinel';
      readonly sentinels: readonly HostPort[];
      readonly masterName: string;
      readonly username: string | undefined;
      readonly password: Secret | undefined;
      readonly sentinelPassword: Secret | undefined;
    };

/** A connection of any mode; both classes share ioredis's command interface. */
export type RedisClient = Redis | Cluster;

/**
 * What a connection is for:
 * - `commands`: short commands that fail at once while Redis is away (no offline queue, one
 *   retry): readiness, queue depth, the fleet's scripts — a caller never hangs on them;
 * - `blocking`: BullMQ's worker and event readers, which BullMQ wants to retry forever
 *   (`maxRetriesPerRequest: null`), and the fleet's notice subscriber;
 * - `cli`: one attempt, then an error (a command line must not retry in the background).
 */
export type RedisRole = 'commands' | 'blocking' | 'cli';

/** How long a connection attempt may take. */
const CONNECT_TIMEOUT_MS = 5000;

const ROLE_OPTIONS: Record<RedisRole, { node: RedisOptions; offlineQueue: boolean; retry: boolean }> = {
  commands: { node: { maxRetriesPerRequest: 1, connectTimeout: CONNECT_TIMEOUT_MS }, offlineQueue: false, retry: true },
  blocking: { node: { maxRetriesPerRequest: null, connectTimeout: CONNECT_TIMEOUT_MS }, offlineQueue: true, retry: true },
  cli: { node: { maxRetriesPerRequest: 1, connectTimeout: CONNECT_TIMEOUT_MS }, offlineQueue: false, retry: false },
};

export interface RedisConnectionOptions {
  /** Connect on `connect()` (or the first command) instead of at once. @defaultValue false */
  readonly lazyConnect?: boolean;
  /** The client's name in `CLIENT LIST`. */
  readonly connectionName?: string;
}

/** A new connection to the configured Redis, for one role. The caller closes it. */
export function redisConnection(settings: RedisSettings, role: RedisRole, opts: RedisConnectionOptions = {}): RedisClient {
  const r = ROLE_OPTIONS[role];
  const common: RedisOptions = {
    ...r.node,
    lazyConnect: opts.lazyConnect ?? false,
    ...(opts.connectionName ? { connectionName: opts.connectionName } : {}),
  };
  switch (settings.mode) {
    case 'standalone':
      return new Redis(settings.url.reveal(), {
        ...common,
        enableOfflineQueue: r.offlineQueue,
        ...(r.retry ? {} : { retryStrategy: () => null }),
      });
    case 'sentinel':
      return new Redis({
        ...common,
        sentinels: settings.sentinels.map(({ host, port }) => ({ host, port })),
        name: settings.masterName,
        role: 'master',
        failoverDetector: true,
        username: settings.username,
        password: settings.password?.reveal(),
        sentinelPassword: settings.sentinelPassword?.reveal(),
        enableOfflineQueue: r.offlineQueue,
        ...(r.retry ? {} : { retryStrategy: () => null, sentinelRetryStrategy: () => null }),
      });
    case 'cluster': {
      const { lazyConnect, ...node } = common;
      const cluster: ClusterOptions = {
        lazyConnect,
        enableOfflineQueue: r.offlineQueue,
        redisOptions: { ...node, username: settings.username, password: settings.password?.reveal() },
        ...(r.retry ? {} : { clusterRetryStrategy: () => null }),
      };
      return new Cluster(
        settings.nodes.map(({ host, port }) => ({ host, port })),
        cluster,
      );
    }
  }
}

/** Whether a client is a Cluster client (BullMQ's queues then need a hash-tagged prefix). */
export function isCluster(client: RedisClient): client is Cluster {
  return client instanceof Cluster;
}

/** The BullMQ key prefix of a queue in this deployment (queues/contract.ts decides it). */
export function prefixFor(settings: RedisSettings, queueName: string): string {
  return queuePrefix(queueName, settings.mode === 'cluster');
}

/** Where Redis is, for messages and `lensfleet status`: never a user name or a password. */
export function describeRedis(settings: RedisSettings): string {
  const list = (nodes: readonly HostPort[]) => nodes.map(hostPort).join(',');
  switch (settings.mode) {
    case 'standalone':
      return urlLocation(settings.url.reveal());
    case 'cluster':
      return `cluster ${list(settings.nodes)}`;
    case 'sentinel':
      return `sentinel master ${settings.masterName} via ${list(settings.sentinels)}`;
  }
}

/** Every secret of the settings (to scrub them from a driver's message before printing it). */
export function redisSecrets(settings: RedisSettings): string[] {
  const out: string[] = [];
  if (settings.mode === 'standalone') {
    try {
      const pw = new URL(settings.url.reveal()).password;
      out.push(pw, decodeURIComponent(pw));
    } catch {
      // not a URL: the settings schema rejects that before we get here
    }
  } else {
    if (settings.password) out.push(settings.password.reveal());
    if (settings.mode === 'sentinel' && settings.sentinelPassword) out.push(settings.sentinelPassword.reveal());
  }
  return out.filter((s) => s.length >= 3);
}

/**
 * An error's message safe to print: a driver may quote what it was given, so the URL is replaced
 * by its location and every password of the settings by `***` (ioredis does not quote passwords
 * today; this keeps it so).
 */
export function safeRedisMessage(err: unknown, settings: RedisSettings): string {
  let text = err instanceof Error ? err.message : String(err);
  if (settings.mode === 'standalone') text = text.split(settings.url.reveal()).join(describeRedis(settings));
  for (const secret of redisSecrets(settings)) text = text.split(secret).join('***');
  return text;
}

/** `host:port`, with brackets around an IPv6 address. */
export function hostPort({ host, port }: HostPort): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** `redis://host:port/db` without user and password. */
function urlLocation(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname === '/' ? '' : u.pathname}`;
  } catch {
    return '(invalid URL)';
  }
}

/**
 * Close a connection: QUIT when connected (pending replies arrive first), then stop reconnecting
 * at once (a QUIT to a Redis that is away would wait for it).
 */
export async function hangUp(client: RedisClient): Promise<void> {
  if (client.status === 'ready') await client.quit().catch(() => {});
  client.disconnect();
}

/** Every master of a Cluster, or the one server: where a SCAN must run to see every key. */
export function scanTargets(client: RedisClient): Redis[] {
  return isCluster(client) ? client.nodes('master') : [client];
}

/**
 * One worker's place in its fleet: its id, its membership record and heartbeat, and the
 * connection leases of its capped tenants — over two Redis connections of its own (commands,
 * and a subscriber for the lease notices). `start` connects and sends the first heartbeat;
 * `close` leaves the fleet. Close the tenant pools before the fleet: their connections give
 * their leases back as they close.
 */
import type { Logger } from 'pino';
import { hangUp, type RedisClient, type RedisSettings, redisConnection } from '../redis.js';
import { FleetKeys, newWorkerId } from './keys.js';
import { type FleetOperation, FleetLeases } from './leases.js';
import { FleetMembership, type MemberRecord } from './membership.js';

export interface FleetOptions {
  /** Where Redis is (src/redis.ts). */
  readonly redis: RedisSettings;
  /** The fleet's name (`LENSFLEET_FLEET`). */
  readonly name: string;
  /** Heartbeat and lease TTL (`LENSFLEET_FLEET_TTL_MS`). */
  readonly ttlMs: number;
  readonly logger: Logger;
  /** This worker's membership record (without its id), built at each heartbeat. */
  readonly record: () => Omit<MemberRecord, 'id' | 'ttlMs'>;
  /** A Redis call of the fleet failed (counted by a metric). */
  readonly onRedisError?: (operation: FleetOperation) => void;
  /** @defaultValue a new id: host, pid and a random part */
  readonly workerId?: string;
}

export class Fleet {
  readonly workerId: string;
  readonly keys: FleetKeys;
  readonly leases: FleetLeases;
  readonly membership: FleetMembership;
  readonly #redis: RedisClient;
  readonly #subscriber: RedisClient;
  readonly #logger: Logger;
  #closing: Promise<void> | undefined;

  constructor(opts: FleetOptions) {
    this.workerId = opts.workerId ?? newWorkerId();
    this.keys = new FleetKeys(opts.name);
    this.#logger = opts.logger;
    // Commands fail at once while Redis is down (no offline queue): a lease ask is retried by
    // its own loop until the connect timeout, a heartbeat by the next one.
    // On a Cluster the notices reach the subscriber whichever node it is on: Redis Cluster
    // forwards PUBLISH to every node (ioredis keeps the subscription across node changes).
    this.#redis = redisConnection(opts.redis, 'commands', { lazyConnect: true });
    this.#subscriber = redisConnection(opts.redis, 'blocking', { lazyConnect: true });
    for (const [name, r] of [
      ['commands', this.#redis],
      ['notices', this.#subscriber],
    ] as const) {
      r.on('error', (err) => opts.logger.debug({ connection: name, code: (err as { code?: string }).code }, 'fleet: redis connection error'));
    }
    this.leases = new FleetLeases({
      redis: this.#redis,
      subscriber: this.#subscriber,
      keys: this.keys,
      workerId: this.workerId,
      ttlMs: opts.ttlMs,
      logger: opts.logger,
      ...(opts.onRedisError ? { onRedisError: opts.onRedisError } : {}),
    });
    this.membership = new FleetMembership({
      redis: this.#redis,
      keys: this.keys,
      workerId: this.workerId,
      ttlMs: opts.ttlMs,
      record: () => ({ id: this.workerId, ttlMs: opts.ttlMs, ...opts.record() }),
      logger: opts.logger,
      onRedisError: () => opts.onRedisError?.('heartbeat'),
    });
  }

  /** Connect (ioredis keeps retrying in the background if Redis is down), then join the fleet. */
  async start(): Promise<void> {
    const connected = await Promise.allSettled([this.#redis.connect(), this.#subscriber.connect()]);
    if (connected.some((r) => r.status === 'rejected'))
      this.#logger.warn({ fleet: this.keys.fleet }, 'fleet: Redis not reachable at start; membership and connection leases wait for it');
    await this.leases.start();
    await this.membership.start();
  }

  /** Leave the fleet: stop the heartbeat (the record is deleted), give back leases still held. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await Promise.allSettled([this.membership.close(), this.leases.close()]);
      await Promise.all([hangUp(this.#redis), hangUp(this.#subscriber)]);
    })();
    return this.#closing;
  }
}

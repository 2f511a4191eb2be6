/**
 * Fleet membership: every worker keeps a record of itself in Redis — id, host, pid, queue,
 * concurrency, version, start time and its pools (tenant → connections) — refreshed by a
 * heartbeat every TTL / 3 and expiring with the TTL, so a killed worker disappears within the
 * TTL. `lensfleet status` and `lensfleet plan` read the records; nothing in a worker depends on
 * them (a worker that cannot reach Redis keeps working and says so in a metric).
 */
import type { RedisClient } from '../redis.js';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { FleetKeys } from './keys.js';
import { defineScript, type ScriptCall } from './redis.js';
import { CLOCK_LUA, HEARTBEAT_LUA } from './scripts.js';

const memberPool = z.object({
  /** Open connections. */
  open: z.number().int().nonnegative(),
  inUse: z.number().int().nonnegative(),
  idle: z.number().int().nonnegative(),
  waiting: z.number().int().nonnegative(),
  /** The pool's effective ceiling in this worker. */
  max: z.number().int().nonnegative(),
  /** Fleet leases held (a capped tenant). */
  leases: z.number().int().nonnegative(),
  /** The tenant's fleet connection cap, when it has one. */
  cap: z.number().int().positive().optional(),
});

const memberRecord = z.object({
  id: z.string().min(1).max(200),
  host: z.string().max(255),
  pid: z.number().int(),
  queue: z.string(),
  concurrency: z.number().int().positive(),
  processMaxConnections: z.number().int().positive(),
  version: z.string(),
  /** ISO 8601, the worker's clock. */
  startedAt: z.string(),
  heartbeatAt: z.string(),
  ttlMs: z.number().int().positive(),
  activeJobs: z.number().int().nonnegative(),
  draining: z.boolean(),
  pools: z.record(z.string(), memberPool),
});

export type MemberPool = z.infer<typeof memberPool>;
export type MemberRecord = z.infer<typeof memberRecord>;

export interface MembershipOptions {
  readonly redis: RedisClient;
  readonly keys: FleetKeys;
  readonly workerId: string;
  /** A record expires this long after its last heartbeat; heartbeats come every ttlMs / 3. */
  readonly ttlMs: number;
  /** This worker's record, built at each heartbeat. */
  readonly record: () => MemberRecord;
  readonly logger: Logger;
  /** A heartbeat failed (counted by a metric). */
  readonly onRedisError?: () => void;
}

export class FleetMembership {
  readonly #opts: MembershipOptions;
  readonly #heartbeat: ScriptCall;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;
  #beating: Promise<void> | undefined;

  constructor(opts: MembershipOptions) {
    this.#opts = opts;
    this.#heartbeat = defineScript(opts.redis, 'lensfleetHeartbeat', HEARTBEAT_LUA, 2);
  }

  /** First heartbeat, then one every TTL / 3. Resolves after the first, whether it reached Redis or not. */
  async start(): Promise<void> {
    await this.beat();
    this.#schedule();
  }

  /** Send the record now (also at start and on a change worth showing at once, such as draining). */
  beat(): Promise<void> {
    this.#beating ??= this.#send().finally(() => {
      this.#beating = undefined;
    });
    return this.#beating;
  }

  /** Stop the heartbeat and leave the fleet (the record is deleted, not left to expire). Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      clearTimeout(this.#timer);
      await this.#beating;
      const { redis, keys, workerId } = this.#opts;
      try {
        await redis.multi().del(keys.member(workerId)).zrem(keys.members, workerId).exec();
      } catch (err) {
        this.#failed(err);
      }
    })();
    return this.#closing;
  }

  #schedule(): void {
    if (this.#closed) return;
    this.#timer = setTimeout(
      () => {
        this.#timer = undefined;
        // Rescheduled first: a failing heartbeat never ends the schedule.
        this.#schedule();
        void this.beat();
      },
      Math.max(100, Math.floor(this.#opts.ttlMs / 3)),
    );
    this.#timer.unref();
  }

  async #send(): Promise<void> {
    if (this.#closed) return;
    const { keys, workerId, ttlMs } = this.#opts;
    try {
      await this.#heartbeat(keys.members, keys.member(workerId), workerId, ttlMs, JSON.stringify(this.#opts.record()));
    } catch (err) {
      this.#failed(err);
    }
  }

  #failed(err: unknown): void {
    this.#opts.onRedisError?.();
    this.#opts.logger.debug({ msg: (err as Error | undefined)?.message }, 'fleet: heartbeat failed');
  }
}

/** A live worker's record, and how long ago its last heartbeat reached Redis (on Redis's clock). */
export type LiveMember = MemberRecord & { readonly seenMsAgo: number };

export interface FleetView {
  /** Redis's clock, in ms. */
  readonly now: number;
  readonly members: LiveMember[];
  /** Records that were not valid member records (skipped). */
  readonly invalid: number;
}

/** The live workers of a fleet, by id. */
export async function readMembers(redis: RedisClient, keys: FleetKeys): Promise<FleetView> {
  // On the clock of the server that scored the heartbeats (on a Cluster, the one holding the fleet's slot).
  const now = Number(await defineScript(redis, 'lensfleetClock', CLOCK_LUA, 1)(keys.members));
  // Scores are expiries: the last heartbeat's Redis time plus the worker's TTL.
  const withScores = await redis.zrangebyscore(keys.members, `(${now}`, '+inf', 'WITHSCORES');
  const ids: string[] = [];
  const expiries: number[] = [];
  for (let i = 0; i < withScores.length; i += 2) {
    ids.push(withScores[i]!);
    expiries.push(Number(withScores[i + 1]));
  }
  if (ids.length === 0) return { now, members: [], invalid: 0 };
  const raw = await redis.mget(ids.map((id) => keys.member(id)));
  const members: LiveMember[] = [];
  let invalid = 0;
  for (const [i, text] of raw.entries()) {
    if (text === null) continue; // expired between the two reads
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      invalid++;
      continue;
    }
    const r = memberRecord.safeParse(json);
    if (r.success) members.push({ ...r.data, seenMsAgo: Math.max(0, now - (expiries[i]! - r.data.ttlMs)) });
    else invalid++;
  }
  members.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return { now, members, invalid };
}

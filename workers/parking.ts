/**
 * Parking a busy tenant's queued jobs (issue 13 §4, a flood that arrives at once).
 *
 * BullMQ takes jobs in order. When tenant A adds 5,000 jobs at once and B adds one after them,
 * B's job waits until the workers have taken each of A's 5,000 and put it back (deferral: two
 * Redis round trips each), 0.6 s on this machine, 66× B's latency alone. Deferring jobs one by
 * one as they come up cannot do better: every one of them is in front of B.
 *
 * So when a job of A is deferred because A's pool is busy, this process also moves A's other
 * waiting jobs out of the way, in one Lua pass per 1,000 queued jobs (`PARK_LUA`): each job of A
 * goes to BullMQ's delayed set, with return times at A's pace (its recent job time ÷ its pool's
 * size, the deferral planner's schedule), in queue order; everyone else's jobs keep their order.
 * B's job is then next. A loses nothing: every slot that A frees brings A's next parked job back
 * at once, to the head of the queue (`RELEASE_LUA`, from a per-tenant index of parked jobs), so
 * A's pool stays as busy as before; the paced return times are only the fallback, for when no
 * job of A finishes (e.g. every worker stopped).
 *
 * In a fleet, every worker brings A's parked jobs back, not only the one that parked them: a job
 * of A that finishes anywhere frees a slot of A's. A Redis set names the tenants with parked jobs
 * (`lf:parked`, kept by both scripts); each worker reads it at most every 100 ms, and only while
 * jobs finish there. Without this, A's jobs would flow at the parking worker's pace alone
 * however many workers had room for them.
 *
 * A parked job stays a BullMQ job in a BullMQ state (delayed) throughout: whatever happens to
 * this process, it comes back by time. Nothing is started, so no attempt is used; a job is parked
 * at most `maxParks` times (the deferral bound), then it waits its turn as without parking.
 *
 * The scripts use BullMQ 5's keys (wait list taken from its right end, the delayed set's score
 * `timestamp × 0x1000 + sequence`, the marker set, the events stream) as its own scripts do
 * (moveToDelayed, changeDelay, promoteDelayedJobs). test/parking.test.ts runs them against BullMQ's
 * own worker, so an upgrade that changes the layout fails there.
 */
import type { Logger } from 'pino';
import type { DeferralPlanner } from '../src/deferral.js';
import { defineScript, type ScriptCall } from '../src/fleet/redis.js';
import type { RedisClient } from '../src/redis.js';

/**
 * Park the jobs of tenant ARGV[2] among the `count` queued jobs that are `offset` places from the
 * head of the wait list (its right end, taken next). Returns {parked, scanned, queue length}.
 * KEYS: wait, delayed, marker, events, meta, parked index of the tenant, the set of tenants with
 *       parked jobs.
 * ARGV: job key prefix, tenant, now (ms), offset, count, return time of the first job parked
 *       (ms since epoch), spacing (ms), most parks per job, latest return (ms from now).
 */
export const PARK_LUA = `
local rcall = redis.call
local waitKey, delayedKey, markerKey, eventsKey, metaKey, indexKey, tenantsKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local prefix, tenant = ARGV[1], ARGV[2]
local now, offset, count = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local firstAt, spacing, maxParks, horizon = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local len = rcall('LLEN', waitKey)
if offset >= len then return {0, 0, len} end
local first = len - offset - count
if first < 0 then first = 0 end
local last = len - offset - 1
local ids = rcall('LRANGE', waitKey, first, last)
local maxEvents = tonumber(rcall('HGET', metaKey, 'opts.maxLenEvents')) or 10000
-- A JSON string of the tenant id: a cheap test before decoding (ids need no escaping).
local needle = '"' .. tenant .. '"'
local hole = '\\0lensfleet:parked'
local parked = 0
local latest = 0
-- Oldest first (the right end), so parked jobs come back in their queue order.
for i = #ids, 1, -1 do
  local id = ids[i]
  if string.sub(id, 1, 2) ~= '0:' then
    local jobKey = prefix .. id
    local data = rcall('HGET', jobKey, 'data')
    if data and string.find(data, needle, 1, true) then
      local ok, decoded = pcall(cjson.decode, data)
      if ok and type(decoded) == 'table' and decoded.tenant == tenant
        and (tonumber(rcall('HGET', jobKey, 'lfParks')) or 0) < maxParks then
        local at = math.floor(firstAt + parked * spacing)
        local delay = at - now
        if delay > horizon then break end
        if delay < 0 then delay = 0 end
        -- BullMQ's getDelayedScore: up to 4096 jobs per millisecond keep their order.
        local score = at * 0x1000
        local top = rcall('ZREVRANGEBYSCORE', delayedKey, (at + 1) * 0x1000 - 1, score, 'WITHSCORES', 'LIMIT', 0, 1)
        if top[2] then score = math.min(tonumber(top[2]) + 1, (at + 1) * 0x1000 - 1) end
        rcall('LSET', waitKey, first + i - 1, hole)
        rcall('ZADD', delayedKey, score, id)
        rcall('HSET', jobKey, 'delay', delay)
        rcall('HINCRBY', jobKey, 'lfParks', 1)
        rcall('ZADD', indexKey, score, id)
        rcall('XADD', eventsKey, 'MAXLEN', '~', maxEvents, '*', 'event', 'delayed', 'jobId', id, 'delay', at)
        parked = parked + 1
        latest = delay
      end
    end
  end
end
if parked > 0 then
  rcall('LREM', waitKey, -parked, hole)
  -- Wake a worker when the first delayed job is due (BullMQ's addDelayMarkerIfNeeded).
  local head = rcall('ZRANGE', delayedKey, 0, 0, 'WITHSCORES')
  if head[2] then rcall('ZADD', markerKey, tonumber(head[2]) / 0x1000, '1') end
  local ttl = rcall('PTTL', indexKey)
  if ttl < latest + 60000 then rcall('PEXPIRE', indexKey, latest + 60000) end
  rcall('SADD', tenantsKey, tenant)
end
return {parked, #ids, len}
`;

/**
 * Bring back up to ARGV[2] parked jobs of a tenant, oldest first, to the head of the wait list
 * (taken next). Skips index entries whose job is no longer delayed (it came back by time, or was
 * removed). Not while the queue is paused (they come back by time then). Returns the count. A
 * tenant whose index is empty (or expired) leaves the set of tenants with parked jobs.
 * KEYS: wait, delayed, marker, events, meta, parked index, the set of tenants with parked jobs.
 * ARGV: job key prefix, count, tenant.
 */
export const RELEASE_LUA = `
local rcall = redis.call
local waitKey, delayedKey, markerKey, eventsKey, metaKey, indexKey, tenantsKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local prefix, wanted, tenant = ARGV[1], tonumber(ARGV[2]), ARGV[3]
if rcall('HEXISTS', metaKey, 'paused') == 1 then return 0 end
local maxEvents = tonumber(rcall('HGET', metaKey, 'opts.maxLenEvents')) or 10000
local released, popped = 0, 0
while released < wanted and popped < 100 do
  local top = rcall('ZPOPMIN', indexKey)
  if not top[1] then break end
  popped = popped + 1
  local id = top[1]
  if rcall('ZREM', delayedKey, id) == 1 then
    rcall('RPUSH', waitKey, id)
    rcall('HSET', prefix .. id, 'delay', 0)
    rcall('XADD', eventsKey, 'MAXLEN', '~', maxEvents, '*', 'event', 'waiting', 'jobId', id, 'prev', 'delayed')
    released = released + 1
  end
end
-- Wake a waiting worker (BullMQ's addBaseMarkerIfNeeded).
if released > 0 then rcall('ZADD', markerKey, 0, '0') end
if rcall('ZCARD', indexKey) == 0 then rcall('SREM', tenantsKey, tenant) end
return released
`;

/** The queue's keys, as BullMQ's Worker and Queue have them (`keys`, `toKey`, `client`). */
export interface ParkingQueue {
  readonly keys: { readonly [name: string]: string };
  toKey(type: string): string;
  readonly client: Promise<unknown>;
}

export interface ParkingOptions {
  readonly planner: DeferralPlanner;
  readonly logger: Logger;
  /** Parks of one job before it waits its turn (the deferral bound, LENSFLEET_DEFER_MAX_PER_JOB). */
  readonly maxParks: number;
  /** Queued jobs looked at by a run's first pass, the probe. @defaultValue 100 */
  readonly probeSize?: number;
  /** Queued jobs looked at per later pass (each pass blocks Redis for about 1–3 ms per 1,000). @defaultValue 1000 */
  readonly passSize?: number;
  /** Queued jobs looked at per parking run, over its passes. @defaultValue 50000 */
  readonly maxScan?: number;
  /** No job is parked further away than this; later ones wait their turn. @defaultValue 120000 */
  readonly horizonMs?: number;
  /**
   * The share of a pass's jobs that must be the tenant's for the run to go on: parking is for a
   * tenant whose jobs crowd the queue; one with a job here and there is deferred one by one.
   * @defaultValue 0.2
   */
  readonly minShare?: number;
  /** After a run that found the tenant's jobs sparse, it is not looked for again for this long. @defaultValue 1000 */
  readonly sparseBackoffMs?: number;
  /** Least time between the starts of two runs of this process (runs never overlap). @defaultValue 20 */
  readonly minIntervalMs?: number;
  /** Parked jobs counted as deferrals (the deferral metric). */
  readonly onParked?: (tenant: string, count: number) => void;
  readonly now?: () => number;
}

interface TenantState {
  /** No run for the tenant before this time (ms). */
  notBefore: number;
  /**
   * Jobs of the tenant this process parked and has not brought back, as far as it knows (others
   * may have come back by time): while it is 0, a finished job costs no Redis round trip.
   */
  parked: number;
}

/** After a run that found none of the tenant's jobs queued, no run for it for this long. */
const EMPTY_BACKOFF_MS = 50;
/** How stale this process's copy of the fleet's tenants with parked jobs may get. */
const FLEET_REFRESH_MS = 100;

/**
 * What a run costs is bounded whatever the queue holds: one run at a time per process, at most
 * one every `minIntervalMs`; a run starts with a probe of the queue's first 100 jobs and goes on
 * only while the tenant's jobs are at least `minShare` of what it looks at. With 1,000 tenants
 * round-robin (each a job in a thousand), a busy tenant costs one probe a second.
 */
export class TenantParking {
  readonly #opts: Required<Omit<ParkingOptions, 'onParked'>> & Pick<ParkingOptions, 'onParked'>;
  readonly #tenants = new Map<string, TenantState>();
  #queue: ParkingQueue | undefined;
  #scripts: { park: ScriptCall; release: ScriptCall } | undefined;
  #running = false;
  #lastStart = Number.NEGATIVE_INFINITY;
  /** Tenants with parked jobs anywhere in the fleet, as last read (`lf:parked`), and when. */
  #fleet = new Set<string>();
  #fleetReadAt = Number.NEGATIVE_INFINITY;
  #fleetReading = false;

  constructor(opts: ParkingOptions) {
    this.#opts = {
      probeSize: 100,
      passSize: 1000,
      maxScan: 50_000,
      horizonMs: 120_000,
      minShare: 0.2,
      sparseBackoffMs: 1000,
      minIntervalMs: 20,
      now: Date.now,
      ...opts,
    };
  }

  /** The queue whose jobs are parked (the worker; set once it exists). */
  attach(queue: ParkingQueue): void {
    this.#queue = queue;
  }

  /**
   * A job of `tenant` was deferred because its pool (of `slots` connections) is busy: park the
   * tenant's other queued jobs, unless a run is going on, one started just now, or the tenant's
   * jobs were sparse lately. Never throws and never waits for the run (the deferred job's worker
   * slot is not held by it).
   */
  busy(tenant: string, slots: number): void {
    const s = this.#state(tenant);
    const now = this.#opts.now();
    if (this.#running || now < s.notBefore || now - this.#lastStart < this.#opts.minIntervalMs || this.#queue === undefined) return;
    this.#running = true;
    this.#lastStart = now;
    this.#park(tenant, slots).then(
      ({ parked, backoffMs }) => {
        this.#running = false;
        s.parked += parked;
        s.notBefore = this.#opts.now() + backoffMs;
      },
      (err: unknown) => {
        this.#running = false;
        s.notBefore = this.#opts.now() + this.#opts.sparseBackoffMs;
        this.#opts.logger.warn({ tenant, err: (err as Error)?.message }, 'parking the tenant’s queued jobs failed; they are deferred one by one');
      },
    );
  }

  /**
   * A job of `tenant` finished here (its connection is free again): bring its oldest parked job
   * back to the head of the queue, when this process or another parked jobs of the tenant. A
   * tenant with nothing parked anywhere costs no Redis round trip per job: at most one read of
   * the fleet's set every 100 ms while jobs finish here.
   */
  finished(tenant: string): void {
    if (this.#queue === undefined) return;
    const s = this.#tenants.get(tenant);
    const local = s !== undefined && s.parked > 0;
    if (!local) {
      this.#readFleet();
      if (!this.#fleet.has(tenant)) return;
    }
    if (local) s.parked--;
    this.#release(tenant, 1).then(
      (n) => {
        // None left in the index: the rest came back by time (or were brought back elsewhere).
        if (n === 0) {
          if (s !== undefined) s.parked = 0;
          this.#fleet.delete(tenant);
        }
      },
      (err: unknown) => {
        this.#opts.logger.warn({ tenant, err: (err as Error)?.message }, 'bringing back a parked job failed; it comes back at its time');
      },
    );
  }

  /** Refresh the copy of the fleet's tenants with parked jobs, in the background, at most every 100 ms. */
  #readFleet(): void {
    const now = this.#opts.now();
    if (this.#fleetReading || now - this.#fleetReadAt < FLEET_REFRESH_MS) return;
    this.#fleetReading = true;
    this.#fleetReadAt = now;
    void this.#ready()
      .then(async ({ queue }) => ((await queue.client) as RedisClient).smembers(this.#fleetKey(queue)))
      .then(
        (tenants) => {
          this.#fleet = new Set(tenants);
        },
        () => {
          // Redis away: parked jobs come back by time meanwhile.
        },
      )
      .finally(() => {
        this.#fleetReading = false;
      });
  }

  /** A tenant removed (reload). */
  forget(tenant: string): void {
    this.#tenants.delete(tenant);
  }

  #state(tenant: string): TenantState {
    let s = this.#tenants.get(tenant);
    if (s === undefined) {
      s = { notBefore: 0, parked: 0 };
      this.#tenants.set(tenant, s);
    }
    return s;
  }

  async #ready(): Promise<{ queue: ParkingQueue; park: ScriptCall; release: ScriptCall }> {
    const queue = this.#queue!;
    if (this.#scripts === undefined) {
      const client = (await queue.client) as RedisClient;
      this.#scripts = {
        park: defineScript(client, 'lensfleetParkTenant', PARK_LUA, 7),
        release: defineScript(client, 'lensfleetReleaseParked', RELEASE_LUA, 7),
      };
    }
    return { queue, ...this.#scripts };
  }

  #keys(queue: ParkingQueue, tenant: string): string[] {
    const k = queue.keys;
    return [k.wait!, k.delayed!, k.marker!, k.events!, k.meta!, queue.toKey(`lf:parked:${tenant}`), this.#fleetKey(queue)];
  }

  /** The set of tenants with parked jobs, fleet-wide. */
  #fleetKey(queue: ParkingQueue): string {
    return queue.toKey('lf:parked');
  }

  /**
   * Passes over the queue from its head, a probe then full passes, while the tenant's jobs are
   * dense enough, until the queue's end or maxScan. Returns the jobs parked and how long the
   * tenant is not looked for again: `sparseBackoffMs` when its jobs were sparse in a long queue,
   * a moment when there was none to park (a flood arriving in batches has more soon), else none.
   */
  async #park(tenant: string, slots: number): Promise<{ parked: number; backoffMs: number }> {
    const { queue, park } = await this.#ready();
    const o = this.#opts;
    const keys = this.#keys(queue, tenant);
    const prefix = queue.toKey('');
    const { firstDelayMs, spacingMs } = o.planner.pace(tenant, slots);
    // One time base for all passes, so the schedule does not drift by the passes' own time.
    const firstAt = o.now() + firstDelayMs;
    let offset = 0;
    let scannedAll = 0;
    let total = 0;
    let sparse = false;
    let size = o.probeSize;
    while (scannedAll < o.maxScan && firstAt + total * spacingMs - o.now() <= o.horizonMs) {
      const [parked, scanned, length] = (await park(
        ...keys,
        prefix,
        tenant,
        o.now(),
        offset,
        size,
        firstAt + total * spacingMs,
        spacingMs,
        o.maxParks,
        o.horizonMs,
      )) as [number, number, number];
      total += parked;
      scannedAll += scanned;
      // The jobs kept stay where they were; the next pass starts after them.
      offset += scanned - parked;
      if (scanned < size || offset >= length - parked) break;
      if (parked < scanned * o.minShare) {
        sparse = total < o.probeSize * o.minShare;
        break;
      }
      size = o.passSize;
    }
    if (total > 0) {
      o.planner.booked(tenant, firstAt + (total - 1) * spacingMs);
      o.onParked?.(tenant, total);
      if (o.logger.isLevelEnabled('debug')) o.logger.debug({ tenant, parked: total, scanned: scannedAll }, 'parked the busy tenant’s queued jobs');
    }
    return { parked: total, backoffMs: sparse ? o.sparseBackoffMs : total === 0 ? EMPTY_BACKOFF_MS : 0 };
  }

  async #release(tenant: string, count: number): Promise<number> {
    const { queue, release } = await this.#ready();
    return (await release(...this.#keys(queue, tenant), queue.toKey(''), count, tenant)) as number;
  }
}

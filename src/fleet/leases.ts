/**
 * The fleet-wide per-tenant connection cap. Every open connection of a capped tenant holds a
 * lease in Redis (one sorted-set entry, scripts.ts); a connection opens only once its lease is
 * granted, and gives it back when it has closed. Leases expire unless renewed, so a crashed
 * worker's leases return within the TTL; a live worker renews all of its leases in one call per
 * renewal period.
 *
 * When a tenant's cap is reached, opens wait in a queue per tenant, asking again with backoff
 * (and at once when another worker announces a freed lease), and are dropped quietly when the
 * acquires they were for are served by connections other jobs release. A worker left short is
 * announced, and the holders close their idle connections above minSize at once; while others
 * wait, a holder closes released connections above its fair share of the cap and is granted no
 * more than that share.
 *
 * Redis unreachable: the cap fails closed. No lease, no new connection (FLEET_UNAVAILABLE after
 * the connect timeout); open connections keep working while their leases live, and a worker
 * whose renewals failed for two thirds of the TTL treats its leases as lost (they expire in
 * Redis a third of the TTL later, and the fleet may give them to others then) and closes their
 * connections: idle ones at once, the ones in use when their jobs release them.
 */
import { performance } from 'node:perf_hooks';
import type { RedisClient } from '../redis.js';
import type { Logger } from 'pino';
import { LensfleetError } from '../errors.js';
import type { ConnectionLease, LeaseMember, LeaseProvider, PoolLeases } from '../pool/types.js';
import type { FleetKeys } from './keys.js';
import { defineScript, type ScriptCall } from './redis.js';
import { ACQUIRE_LUA, RELEASE_LUA, RENEW_LUA } from './scripts.js';

/** A Redis call of the fleet that failed (a metrics label). */
export type FleetOperation = 'acquire' | 'renew' | 'release' | 'heartbeat';
export const FLEET_OPERATIONS: readonly FleetOperation[] = ['acquire', 'renew', 'release', 'heartbeat'];

export interface FleetLeasesOptions {
  /** For commands; it should fail fast while disconnected (no offline queue). */
  readonly redis: RedisClient;
  /** For the notices: a subscribed connection runs no other commands. Owned by the caller. */
  readonly subscriber: RedisClient;
  readonly keys: FleetKeys;
  readonly workerId: string;
  /** A lease's lifetime in Redis without renewal; leases are renewed every ttlMs / 3. */
  readonly ttlMs: number;
  readonly logger: Logger;
  /** A Redis call failed (counted by a metric). */
  readonly onRedisError?: (operation: FleetOperation) => void;
}

/** First wait before asking again for a lease, doubled up to RETRY_MAX_MS (with jitter). */
const RETRY_FIRST_MS = 25;
const RETRY_MAX_MS = 250;
/** A waiting worker stays a wanter this long after it last asked (it asks every ≤ RETRY_MAX_MS). */
const WANT_TTL_MS = 2000;
/** Lease ids per release call at shutdown. */
const RELEASE_BATCH = 500;

interface Request {
  readonly needed: () => boolean;
  /** performance.now() clock. */
  readonly deadline: number;
  readonly timeoutMs: number;
  readonly onWait: (() => void) | undefined;
  readonly resolve: (lease: ConnectionLease | undefined) => void;
  readonly reject: (err: Error) => void;
  /** Asked Redis at least once (only then may it be dropped as not needed). */
  tried: boolean;
}

class Lease implements ConnectionLease {
  readonly id: string;
  readonly #tenant: TenantLeases;
  lost = false;
  released = false;
  /** Closing to go to another process: no longer counted in this process's share. */
  givenBack = false;
  /** performance.now() by which Redis has surely expired it, unless renewed. */
  expiresBy: number;

  constructor(id: string, tenant: TenantLeases, expiresBy: number) {
    this.id = id;
    this.#tenant = tenant;
    this.expiresBy = expiresBy;
  }

  release(): void {
    this.#tenant.release(this);
  }
}

/** One tenant's leases in this process, and its opens waiting for one. */
class TenantLeases {
  readonly tenant: string;
  cap: number;
  readonly held = new Map<string, Lease>();
  readonly members = new Set<LeaseMember>();
  readonly queue: Request[] = [];
  /** This process's fair share of the cap, as Redis last said. */
  share = Infinity;
  /** Until when (performance.now()) other processes are known to wait for this tenant. */
  othersWantUntil = 0;
  givenBack = 0;
  pumping = false;
  /** Ends the pump's sleep early (a freed lease, a new request). */
  wake: (() => void) | undefined;
  readonly #fleet: FleetLeases;

  constructor(tenant: string, cap: number, fleet: FleetLeases) {
    this.tenant = tenant;
    this.cap = cap;
    this.#fleet = fleet;
  }

  release(lease: Lease): void {
    if (lease.released) return;
    lease.released = true;
    if (lease.givenBack) this.givenBack--;
    if (this.held.get(lease.id) !== lease) return; // lost: Redis no longer has it
    this.held.delete(lease.id);
    this.#fleet.releaseRemote(this, [lease.id]);
  }

  /** Connections above this process's share while others wait (0 when nobody else waits). */
  surplus(now: number): number {
    if (now >= this.othersWantUntil) return 0;
    return this.held.size - this.givenBack - this.share;
  }
}

export class FleetLeases {
  readonly #opts: FleetLeasesOptions;
  readonly #acquire: ScriptCall;
  readonly #renew: ScriptCall;
  readonly #release: ScriptCall;
  readonly #tenants = new Map<string, TenantLeases>();
  readonly #renewEveryMs: number;
  #renewTimer: NodeJS.Timeout | undefined;
  #renewing: Promise<void> | undefined;
  #seq = 0;
  #closed = false;
  #closing: Promise<void> | undefined;
  readonly #onMessage = (channel: string, message: string) => this.#notice(channel, message);

  constructor(opts: FleetLeasesOptions) {
    this.#opts = opts;
    this.#acquire = defineScript(opts.redis, 'lensfleetLeaseAcquire', ACQUIRE_LUA, 2);
    this.#renew = defineScript(opts.redis, 'lensfleetLeaseRenew', RENEW_LUA);
    this.#release = defineScript(opts.redis, 'lensfleetLeaseRelease', RELEASE_LUA, 2);
    this.#renewEveryMs = Math.max(100, Math.floor(opts.ttlMs / 3));
  }

  /** Subscribe to the fleet's notices and start renewing. Without the notices it still works, only slower. */
  async start(): Promise<void> {
    this.#opts.subscriber.on('message', this.#onMessage);
    // Not awaited: with Redis down it completes when Redis is back (ioredis queues it, and
    // subscribes again after every reconnect); until then waiting opens poll.
    this.#opts.subscriber.subscribe(this.#opts.keys.channel).catch((err: unknown) => {
      this.#opts.logger.warn({ msg: (err as Error).message }, 'fleet: subscribing to lease notices failed (waiting opens poll instead)');
    });
    this.#scheduleRenew();
  }

  /**
   * The lease hook of a tenant's pools (`RegistryOptions.leases`). `cap`: the tenant's
   * fleetMaxConnections, the same on every worker (each asks with its own).
   */
  provider(tenant: string, cap: number): LeaseProvider {
    return (member) => {
      const t = this.#tenant(tenant);
      t.cap = cap;
      t.members.add(member);
      const leases: PoolLeases = {
        acquire: (needed, timeoutMs, onWait) => this.#request(t, needed, timeoutMs, onWait),
        giveBack: (lease) => {
          const l = lease as Lease;
          if (l.givenBack || t.surplus(performance.now()) <= 0) return false;
          l.givenBack = true;
          t.givenBack++;
          return true;
        },
        detach: () => {
          t.members.delete(member);
        },
      };
      return leases;
    };
  }

  /** Leases this process holds, by tenant (for membership and tests). */
  held(): Map<string, number> {
    const out = new Map<string, number>();
    for (const t of this.#tenants.values()) if (t.held.size > 0) out.set(t.tenant, t.held.size);
    return out;
  }

  /** Stop renewing, fail waiting opens, give every lease still held back. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      clearTimeout(this.#renewTimer);
      this.#opts.subscriber.off('message', this.#onMessage);
      for (const t of this.#tenants.values()) {
        for (const r of t.queue.splice(0)) r.reject(closedError(t.tenant));
        t.wake?.();
      }
      await this.#renewing;
      const releases: Promise<void>[] = [];
      for (const t of this.#tenants.values()) {
        const ids = [...t.held.keys()];
        t.held.clear();
        for (let i = 0; i < ids.length; i += RELEASE_BATCH) releases.push(this.#releaseNow(t, ids.slice(i, i + RELEASE_BATCH)));
      }
      await Promise.all(releases);
    })();
    return this.#closing;
  }

  #tenant(tenant: string): TenantLeases {
    let t = this.#tenants.get(tenant);
    if (t === undefined) {
      t = new TenantLeases(tenant, 1, this);
      this.#tenants.set(tenant, t);
    }
    return t;
  }

  #request(t: TenantLeases, needed: () => boolean, timeoutMs: number, onWait: (() => void) | undefined): Promise<ConnectionLease | undefined> {
    if (this.#closed) return Promise.reject(closedError(t.tenant));
    return new Promise((resolve, reject) => {
      t.queue.push({ needed, deadline: performance.now() + timeoutMs, timeoutMs, onWait, resolve, reject, tried: false });
      // A running pump asks for it in its next round: asking now, while this worker's earlier
      // opens wait for room, would only be refused too (a freed lease wakes the pump).
      if (!t.pumping) void this.#pump(t);
    });
  }

  /**
   * Ask Redis for as many leases as opens wait, hand them out in order, and wait (backoff, or a
   * notice) while some are left. One pump per tenant, so a worker with many waiting opens makes
   * one call per round, not one per open.
   */
  async #pump(t: TenantLeases): Promise<void> {
    t.pumping = true;
    let retryMs = RETRY_FIRST_MS;
    let lastError: unknown;
    try {
      while (!this.#closed && t.queue.length > 0) {
        const asked = t.queue.length;
        const ids = Array.from({ length: asked }, () => this.#nextId());
        const sentAt = performance.now();
        let granted = 0;
        try {
          const [g, share, othersWant] = (await this.#acquire(
            this.#opts.keys.leases(t.tenant),
            this.#opts.keys.wanters(t.tenant),
            t.cap,
            this.#opts.ttlMs,
            WANT_TTL_MS,
            this.#opts.ttlMs,
            this.#opts.keys.channel,
            t.tenant,
            this.#opts.workerId,
            ...ids,
          )) as [number, number, number];
          granted = g;
          t.share = share;
          if (othersWant === 1) t.othersWantUntil = performance.now() + this.#renewEveryMs * 1.5;
          lastError = undefined;
        } catch (err) {
          lastError = err;
          this.#redisError('acquire', err);
        }
        if (this.#closed) {
          if (granted > 0) void this.#releaseNow(t, ids.slice(0, granted));
          break;
        }
        // The queue only grew meanwhile (at its end): its first `asked` requests are the ones asked for.
        for (let i = 0; i < granted; i++) {
          const lease = new Lease(ids[i]!, t, sentAt + this.#opts.ttlMs);
          t.held.set(lease.id, lease);
          t.queue.shift()!.resolve(lease);
        }
        for (let i = 0; i < asked - granted; i++) {
          const r = t.queue[i]!;
          if (!r.tried) {
            r.tried = true;
            r.onWait?.();
          }
        }
        if (granted > 0) retryMs = RETRY_FIRST_MS;
        this.#sweep(t, lastError);
        if (t.queue.length === 0) break;
        // Every open asked for got a lease, and more arrived meanwhile: there may be room for them too.
        if (granted === asked) continue;
        const nextDeadline = Math.min(...t.queue.map((r) => r.deadline));
        await this.#sleep(t, Math.min(retryMs * (0.75 + Math.random() * 0.5), Math.max(0, nextDeadline - performance.now())));
        retryMs = Math.min(RETRY_MAX_MS, retryMs * 2);
        this.#sweep(t, lastError);
      }
    } finally {
      t.pumping = false;
      t.wake = undefined;
    }
  }

  /**
   * Drop what no longer waits: opens past their deadline fail (FLEET_CAP_TIMEOUT, or
   * FLEET_UNAVAILABLE when Redis could not be asked), opens nobody needs any more resolve empty.
   * Newest first: when fewer opens are needed, the oldest keep their place.
   */
  #sweep(t: TenantLeases, lastError: unknown): void {
    const now = performance.now();
    for (let i = t.queue.length - 1; i >= 0; i--) {
      const r = t.queue[i]!;
      if (now >= r.deadline) {
        t.queue.splice(i, 1);
        r.reject(lastError === undefined ? capTimeout(t, r.timeoutMs) : unavailable(t.tenant, r.timeoutMs, lastError));
      } else if (r.tried && !r.needed()) {
        t.queue.splice(i, 1);
        r.resolve(undefined);
      }
    }
  }

  #sleep(t: TenantLeases, ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        t.wake = undefined;
        resolve();
      }, ms);
      t.wake = () => {
        clearTimeout(timer);
        t.wake = undefined;
        resolve();
      };
    });
  }

  #nextId(): string {
    this.#seq++;
    return `${this.#opts.workerId}|${this.#seq}`;
  }

  /** A lease's connection closed: give it back (Redis expires it anyway if this fails). */
  releaseRemote(t: TenantLeases, ids: string[]): void {
    if (this.#closed && this.#closing !== undefined) return; // close() gives back what is left
    void this.#releaseNow(t, ids);
  }

  #releaseNow(t: TenantLeases, ids: string[]): Promise<void> {
    return this.#release(this.#opts.keys.leases(t.tenant), this.#opts.keys.wanters(t.tenant), this.#opts.keys.channel, t.tenant, ...ids).then(
      () => {},
      (err: unknown) => this.#redisError('release', err),
    );
  }

  #scheduleRenew(): void {
    if (this.#closed) return;
    this.#renewTimer = setTimeout(() => {
      this.#renewTimer = undefined;
      // Rescheduled first: a failing renewal never ends the schedule.
      this.#scheduleRenew();
      if (this.#renewing === undefined) {
        this.#renewing = this.#renewAll().finally(() => {
          this.#renewing = undefined;
        });
      }
    }, this.#renewEveryMs);
    this.#renewTimer.unref();
  }

  /** Renew every lease held, over all tenants, in one call; learn shares, wanters and lost leases. */
  async #renewAll(tenants: readonly TenantLeases[] = [...this.#tenants.values()]): Promise<void> {
    const now = performance.now();
    const keys: string[] = [];
    const args: (string | number)[] = [this.#opts.ttlMs, this.#opts.ttlMs, this.#opts.workerId];
    const asked: { t: TenantLeases; leases: Lease[] }[] = [];
    for (const t of tenants) {
      // Leases no renewal reached for two periods expire in Redis within one more (and may go to
      // another worker then): their connections go now, a period ahead, so they are gone first.
      const expired = [...t.held.values()].filter((l) => l.expiresBy - this.#renewEveryMs <= now);
      if (expired.length > 0) this.#lost(t, expired);
      if (t.held.size === 0) continue;
      const leases = [...t.held.values()];
      keys.push(this.#opts.keys.leases(t.tenant), this.#opts.keys.wanters(t.tenant));
      args.push(t.cap, leases.length, ...leases.map((l) => l.id));
      asked.push({ t, leases });
    }
    if (asked.length === 0) return;
    const sentAt = performance.now();
    let result: [number, number, string[]][];
    try {
      result = (await this.#renew(keys.length, ...keys, ...args)) as [number, number, string[]][];
    } catch (err) {
      this.#redisError('renew', err);
      return;
    }
    for (const [i, { t, leases }] of asked.entries()) {
      const [share, othersWant, lostIds] = result[i] ?? [Infinity, 0, []];
      const lost = new Set(lostIds);
      for (const l of leases) if (!lost.has(l.id)) l.expiresBy = sentAt + this.#opts.ttlMs;
      if (lost.size > 0)
        this.#lost(
          t,
          leases.filter((l) => lost.has(l.id)),
        );
      t.share = share;
      if (othersWant === 1) {
        t.othersWantUntil = performance.now() + this.#renewEveryMs * 1.5;
        this.#shed(t);
      }
    }
  }

  /** Leases Redis no longer counts: their connections close (idle ones now, others when released). */
  #lost(t: TenantLeases, leases: readonly Lease[]): void {
    for (const l of leases) {
      l.lost = true;
      t.held.delete(l.id);
    }
    this.#opts.logger.warn(
      { tenant: t.tenant, lost: leases.length },
      'fleet: connection leases expired before they could be renewed; closing their connections',
    );
    for (const m of t.members) {
      m.closeLost().catch((err: unknown) => this.#opts.logger.warn({ tenant: t.tenant, msg: (err as Error).message }, 'fleet: closing connections failed'));
    }
  }

  /** Other workers wait for this tenant: close idle connections above minSize. */
  #shed(t: TenantLeases): void {
    for (const m of t.members) {
      m.shedIdle().then(
        (closed) => {
          if (closed > 0) this.#opts.logger.debug({ tenant: t.tenant, closed }, 'fleet: idle connections given back to waiting workers');
        },
        (err: unknown) => this.#opts.logger.warn({ tenant: t.tenant, msg: (err as Error).message }, 'fleet: giving back idle connections failed'),
      );
    }
  }

  /** `wanted <tenant> <worker>`: another worker waits; `freed <tenant>`: a lease was given back. */
  #notice(channel: string, message: string): void {
    if (channel !== this.#opts.keys.channel || this.#closed) return;
    const [kind, tenant, worker] = message.split(' ');
    const t = tenant === undefined ? undefined : this.#tenants.get(tenant);
    if (t === undefined) return;
    if (kind === 'freed') {
      t.wake?.();
    } else if (kind === 'wanted' && worker !== this.#opts.workerId && t.held.size > 0) {
      t.othersWantUntil = performance.now() + this.#renewEveryMs * 1.5;
      this.#shed(t);
      // Learn this process's share now, so released connections above it go back too.
      void this.#renewAll([t]);
    }
  }

  #redisError(operation: FleetOperation, err: unknown): void {
    this.#opts.onRedisError?.(operation);
    this.#opts.logger.debug({ operation, msg: (err as Error | undefined)?.message }, 'fleet: redis call failed');
  }
}

function capTimeout(t: TenantLeases, timeoutMs: number): LensfleetError {
  return new LensfleetError(
    'FLEET_CAP_TIMEOUT',
    `tenant ${t.tenant}: no fleet connection lease within ${timeoutMs} ms (fleetMaxConnections=${t.cap}, held by this worker=${t.held.size}, its share=${Number.isFinite(t.share) ? t.share : t.cap})`,
    { details: { tenant: t.tenant, cap: t.cap, held: t.held.size } },
  );
}

function unavailable(tenant: string, timeoutMs: number, cause: unknown): LensfleetError {
  return new LensfleetError(
    'FLEET_UNAVAILABLE',
    `tenant ${tenant}: the fleet's Redis could not be asked for a connection lease within ${timeoutMs} ms (the fleet connection cap fails closed)`,
    { cause, details: { tenant } },
  );
}

function closedError(tenant: string): LensfleetError {
  return new LensfleetError('POOL_CLOSED', `tenant ${tenant}: the fleet leases are closed (worker shutting down)`, { details: { tenant } });
}

/**
 * When a deferred job comes back (issue 13 §4). A job whose tenant's pool could not serve it now
 * is put back in the queue instead of holding a worker slot while it waits; it should come back
 * about when its tenant can take it, not with every other deferred job of that tenant at once.
 *
 * A tenant's pool serves `slots` jobs at once, each taking about the tenant's recent job time, so
 * it takes one job every `recent time ÷ slots`: this process's deferred jobs of the tenant are
 * given return times one such interval apart after each other (a per-tenant schedule), ±20 %
 * jitter, and at most `maxDelayMs` away (the schedule is held there too, so a flood does not push
 * it out without bound; jobs beyond it come back at the cap, spread by the jitter, and are spaced
 * again then).
 *
 * Local to the process and O(1) per call. Only jobs that cannot start now reach it.
 */

/** Why a job was put back in the queue (a metrics label: keep the set small and stable). */
export type DeferReason = 'busy' | 'parked' | 'breaker_open';
export const DEFER_REASONS: readonly DeferReason[] = ['busy', 'parked', 'breaker_open'];

export interface DeferralSettings {
  /** Defer a job whose tenant's pool cannot serve it now (else it waits for its connection in its worker slot). @defaultValue true */
  readonly enabled: boolean;
  /** Deferrals of one job (per attempt) before it waits for its connection as without deferral. @defaultValue 20 */
  readonly maxPerJob: number;
  /** Longest delay of one deferral. @defaultValue 5000 */
  readonly maxDelayMs: number;
}

/** A tenant's recent job time before any was measured. */
const INITIAL_JOB_MS = 50;
/** Weight of the newest job time in the moving average. */
const ALPHA = 0.2;
/** Parked jobs' fallback pace, as a multiple of the tenant's spacing (see `pace`). */
const PARK_SLACK = 2;
/** Shortest delay (BullMQ promotes delayed jobs in batches; less is noise). */
const MIN_DELAY_MS = 2;

interface TenantSchedule {
  /** Exponential moving average of the tenant's job time (admitted → done, less the wait for a connection), ms. */
  jobMs: number;
  /** Return time given to the last deferred job (ms since epoch). */
  nextAt: number;
  /** Return time given to the last parked job (its own schedule: not capped, see `pace`). */
  parkedUntil: number;
}

export class DeferralPlanner {
  readonly settings: DeferralSettings;
  readonly #tenants = new Map<string, TenantSchedule>();
  readonly #now: () => number;
  readonly #random: () => number;

  constructor(settings: DeferralSettings, opts: { now?: () => number; random?: () => number } = {}) {
    this.settings = settings;
    this.#now = opts.now ?? Date.now;
    this.#random = opts.random ?? Math.random;
  }

  /** A job of `tenant` held its connection for about `ms` (from being admitted to its result, less its wait for the connection). */
  observe(tenant: string, ms: number): void {
    const t = this.#tenants.get(tenant);
    if (t === undefined) this.#tenants.set(tenant, { jobMs: ms, nextAt: 0, parkedUntil: 0 });
    else t.jobMs += ALPHA * (ms - t.jobMs);
  }

  /** The tenant's recent job time, ms. */
  jobMs(tenant: string): number {
    return this.#tenants.get(tenant)?.jobMs ?? INITIAL_JOB_MS;
  }

  /** The delay of one more deferred job of `tenant`, whose pool serves `slots` jobs at once. */
  delayFor(tenant: string, slots: number): number {
    const t = this.#schedule(tenant);
    const now = this.#now();
    const cap = this.settings.maxDelayMs;
    const spacing = t.jobMs / Math.max(1, slots);
    t.nextAt = Math.min(Math.max(now, t.nextAt) + spacing, now + cap);
    const jittered = (t.nextAt - now) * (0.8 + 0.4 * this.#random());
    return Math.round(Math.min(cap, Math.max(MIN_DELAY_MS, jittered)));
  }

  /**
   * The tenant's pace for many jobs at once (parking, workers/parking.ts): the first one's delay
   * and the spacing of the next ones, in order, not capped and without jitter. `booked` then
   * moves the schedule past them. Half the pool's rate: parked jobs are brought back by the
   * tenant's own finished jobs, at its real rate; their times are the fallback, and a recent job
   * time that is too short (a quicker lens just before) must not bring them all back too soon.
   */
  pace(tenant: string, slots: number): { firstDelayMs: number; spacingMs: number } {
    const t = this.#tenants.get(tenant);
    const now = this.#now();
    const spacingMs = (PARK_SLACK * (t?.jobMs ?? INITIAL_JOB_MS)) / Math.max(1, slots);
    const from = Math.max(now, t?.parkedUntil ?? 0);
    return { firstDelayMs: Math.max(MIN_DELAY_MS, from - now + spacingMs), spacingMs };
  }

  /** Jobs of `tenant` were given return times at its pace (see `pace`), the last one `lastAt` (ms since epoch). */
  booked(tenant: string, lastAt: number): void {
    const t = this.#schedule(tenant);
    t.parkedUntil = Math.max(t.parkedUntil, lastAt);
  }

  #schedule(tenant: string): TenantSchedule {
    let t = this.#tenants.get(tenant);
    if (t === undefined) {
      t = { jobMs: INITIAL_JOB_MS, nextAt: 0, parkedUntil: 0 };
      this.#tenants.set(tenant, t);
    }
    return t;
  }

  /** A tenant removed (reload): its schedule goes. */
  forget(tenant: string): void {
    this.#tenants.delete(tenant);
  }
}

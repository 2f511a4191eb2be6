/**
 * Per-tenant circuit breakers of one worker process (issue 13 §5). A tenant whose database keeps
 * refusing connections (or not answering them) would otherwise have every one of its jobs take a
 * worker slot for a connect timeout, fail, and burn an attempt; behind an open breaker its jobs are
 * put back in the queue, delayed until the next probe, without running at all.
 *
 * - closed: jobs run; `failureThreshold` consecutive `unreachable` outcomes (errors.ts,
 *   `reachabilityOf`) open it. A `reached` outcome (a completed job, a query error) starts the
 *   count again; an `unknown` one leaves it as it is.
 * - open: jobs are deferred until the cool-down ends, then the first job asking is the probe and
 *   the breaker is half-open.
 * - half-open: the probe runs alone (other jobs are deferred); `reached` closes the breaker,
 *   `unreachable` opens it again with the cool-down doubled (up to `maxCoolDownMs`), `unknown`
 *   lets the next job probe.
 *
 * State is local to the process (no Redis round trip on the hot path: a tenant with no failures
 * has no entry, and asking costs one Map lookup). Each worker finds out for itself within
 * `failureThreshold` failures.
 */
import type { Reachability } from './errors.js';

export type BreakerState = 'closed' | 'open' | 'half_open';

export interface BreakerSettings {
  /** Consecutive connect failures of a tenant that open its breaker; 0 = no breaker. @defaultValue 5 */
  readonly failureThreshold: number;
  /** First cool-down of an open breaker; doubled at each failed probe. @defaultValue 5000 */
  readonly coolDownMs: number;
  /** Longest cool-down. @defaultValue 60000 */
  readonly maxCoolDownMs: number;
}

/** Whether a job of the tenant runs now (`probe`: it is the half-open breaker's probe), or is put back for `delayMs`. */
export type BreakerAdmission = { readonly run: true; readonly probe: boolean } | { readonly run: false; readonly delayMs: number };

/** One tenant's breaker, for `/pools` and metrics. */
export interface BreakerSnapshot {
  readonly tenant: string;
  readonly state: BreakerState;
  /** When it entered this state (ISO time). */
  readonly since: string;
  /** Consecutive connect failures counted (since the breaker last closed). */
  readonly failures: number;
  /** The cool-down it opened (or would open again) with. */
  readonly coolDownMs: number;
  /** Open: milliseconds until the next probe may run. */
  readonly probeInMs?: number;
}

export interface BreakerOptions {
  /** @defaultValue Date.now */
  readonly now?: () => number;
  /** In [0, 1): the jitter of delays. @defaultValue Math.random */
  readonly random?: () => number;
  /** A breaker changed state (logs, metrics); must not throw. */
  readonly onTransition?: (tenant: string, from: BreakerState, to: BreakerState, b: BreakerSnapshot) => void;
}

interface Breaker {
  state: BreakerState;
  since: number;
  failures: number;
  coolDownMs: number;
  /** Open: when the probe may run. */
  until: number;
  /** Half-open: a probe runs now. */
  probing: boolean;
}

const RUN: BreakerAdmission = Object.freeze({ run: true, probe: false });
const PROBE: BreakerAdmission = Object.freeze({ run: true, probe: true });

export class TenantBreakers {
  readonly settings: BreakerSettings;
  /** Tenants with failures counted or a breaker not closed; the others have no entry. */
  readonly #breakers = new Map<string, Breaker>();
  readonly #now: () => number;
  readonly #random: () => number;
  readonly #onTransition: NonNullable<BreakerOptions['onTransition']>;

  constructor(settings: BreakerSettings, opts: BreakerOptions = {}) {
    this.settings = settings;
    this.#now = opts.now ?? Date.now;
    this.#random = opts.random ?? Math.random;
    this.#onTransition = opts.onTransition ?? (() => {});
  }

  get enabled(): boolean {
    return this.settings.failureThreshold > 0;
  }

  /** Whether a job of `tenant` may run now. Report its outcome with `record` (with the same `probe`). */
  admit(tenant: string): BreakerAdmission {
    const b = this.#breakers.get(tenant);
    if (b === undefined || b.state === 'closed') return RUN;
    const now = this.#now();
    if (b.state === 'open') {
      // Jobs come back spread over the cool-down's last half past its end, not all at once.
      if (now < b.until) return { run: false, delayMs: b.until - now + this.#jitter(b.coolDownMs / 2) };
      this.#move(tenant, b, 'half_open', now);
    }
    if (!b.probing) {
      b.probing = true;
      return PROBE;
    }
    // A probe is running: come back about when it has had its chance (a connect timeout, typically).
    return { run: false, delayMs: this.settings.coolDownMs + this.#jitter(this.settings.coolDownMs) };
  }

  /** The outcome of a job that `admit` let run. */
  record(tenant: string, probe: boolean, outcome: Reachability): void {
    if (!this.enabled) return;
    const b = this.#breakers.get(tenant);
    if (b === undefined) {
      if (outcome !== 'unreachable') return; // the hot path: nothing to count
      const fresh: Breaker = { state: 'closed', since: this.#now(), failures: 0, coolDownMs: this.settings.coolDownMs, until: 0, probing: false };
      this.#breakers.set(tenant, fresh);
      return this.#failed(tenant, fresh);
    }
    if (b.state === 'closed') {
      if (outcome === 'reached') this.#breakers.delete(tenant);
      else if (outcome === 'unreachable') this.#failed(tenant, b);
      return;
    }
    if (outcome === 'unreachable') b.failures++;
    // Open or half-open: only the probe decides (a job admitted before it opened may end later).
    if (!probe || b.state !== 'half_open') return;
    b.probing = false;
    if (outcome === 'reached') {
      this.#breakers.delete(tenant);
      this.#emit(tenant, 'half_open', 'closed', { ...b, state: 'closed', since: this.#now(), failures: 0, coolDownMs: this.settings.coolDownMs });
    } else if (outcome === 'unreachable') {
      b.coolDownMs = Math.min(b.coolDownMs * 2, this.settings.maxCoolDownMs);
      this.#open(tenant, b);
    }
  }

  /** The breakers that are not closed or have failures counted. */
  snapshot(): BreakerSnapshot[] {
    const now = this.#now();
    return [...this.#breakers].map(([tenant, b]) => this.#view(tenant, b, now));
  }

  /** One tenant's breaker (closed, with no failures, when it has none). */
  stateOf(tenant: string): BreakerState {
    return this.#breakers.get(tenant)?.state ?? 'closed';
  }

  /** A tenant removed (reload): its breaker goes. */
  forget(tenant: string): void {
    this.#breakers.delete(tenant);
  }

  #failed(tenant: string, b: Breaker): void {
    b.failures++;
    if (b.failures >= this.settings.failureThreshold) this.#open(tenant, b);
  }

  #open(tenant: string, b: Breaker): void {
    const now = this.#now();
    b.until = now + b.coolDownMs;
    this.#move(tenant, b, 'open', now);
  }

  #move(tenant: string, b: Breaker, to: BreakerState, now: number): void {
    const from = b.state;
    b.state = to;
    b.since = now;
    this.#emit(tenant, from, to, b);
  }

  #emit(tenant: string, from: BreakerState, to: BreakerState, b: Breaker): void {
    try {
      this.#onTransition(tenant, from, to, this.#view(tenant, b, this.#now()));
    } catch {
      // an observer (logs, metrics) must never break a job
    }
  }

  #view(tenant: string, b: Breaker, now: number): BreakerSnapshot {
    return {
      tenant,
      state: b.state,
      since: new Date(b.since).toISOString(),
      failures: b.failures,
      coolDownMs: b.coolDownMs,
      ...(b.state === 'open' ? { probeInMs: Math.max(0, b.until - now) } : {}),
    };
  }

  #jitter(upToMs: number): number {
    return Math.floor(this.#random() * upToMs);
  }
}

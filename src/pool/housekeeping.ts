/**
 * A tenant pool's background work, kept apart from the acquire path: the leak sweep, the overflow
 * trim and the refill to minSize. Each is a small task object that owns one timer (unref'd, so
 * it never keeps the process alive), reschedules itself before it works (so a failure cannot end
 * its schedule), and swallows and reports its own errors (so it never crashes the process):
 * psycopg_pool's maintenance tasks. Only the pool and its connection sources use these.
 */
import type { ClientMeta } from './pooled-client.js';

/** Where a task reports an unexpected failure of its own (a bug; connection errors are counted elsewhere). */
export type TaskFailed = (task: string, err: unknown) => void;

abstract class PoolTask {
  readonly name: string;
  readonly #failed: TaskFailed;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(name: string, failed: TaskFailed) {
    this.name = name;
    this.#failed = failed;
  }

  /** A run is due (its timer is armed). */
  get scheduled(): boolean {
    return this.#timer !== undefined;
  }

  /** Run after `delayMs`, unless a run is already due or the task was stopped. */
  schedule(delayMs: number): void {
    if (this.#timer !== undefined || this.#stopped) return;
    this.#timer = setTimeout(this.#tick, delayMs);
    this.#timer.unref();
  }

  /** Drop the due run (if any); the task may be scheduled again. */
  cancel(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** For good (the pool closed). */
  stop(): void {
    this.#stopped = true;
    this.cancel();
  }

  get stopped(): boolean {
    return this.#stopped;
  }

  /** The work of one run. It reschedules itself first when it must run again; it may return a promise. */
  protected abstract run(): void | Promise<void>;

  protected failed(err: unknown): void {
    try {
      this.#failed(this.name, err);
    } catch {
      // reporting must not be what breaks the task
    }
  }

  readonly #tick = (): void => {
    this.#timer = undefined;
    if (this.#stopped) return;
    try {
      const running = this.run();
      if (running !== undefined) running.catch((err: unknown) => this.failed(err));
    } catch (err) {
      this.failed(err);
    }
  };
}

/**
 * Reports connections checked out longer than the leak detection threshold, once each. One timer
 * per pool, not one per checkout: it looks a few times per threshold.
 */
export class LeakSweep extends PoolTask {
  readonly #connections: ReadonlySet<ClientMeta>;
  readonly #thresholdMs: number;
  readonly #intervalMs: number;
  readonly #onLeak: (m: ClientMeta, heldMs: number) => void;

  constructor(connections: ReadonlySet<ClientMeta>, thresholdMs: number, onLeak: (m: ClientMeta, heldMs: number) => void, failed: TaskFailed) {
    super('leak_sweep', failed);
    this.#connections = connections;
    this.#thresholdMs = thresholdMs;
    this.#intervalMs = Math.max(10, Math.min(1000, Math.floor(thresholdMs / 4)));
    this.#onLeak = onLeak;
  }

  /** Start sweeping (idempotent): called when a connection is handed out with leak detection on. */
  start(): void {
    this.schedule(this.#intervalMs);
  }

  protected run(): void {
    this.schedule(this.#intervalMs);
    const now = Date.now();
    for (const m of this.#connections) {
      if (!m.checkedOut || m.leakReported || now - m.handedOutAt < this.#thresholdMs) continue;
      m.leakReported = true;
      this.#onLeak(m, now - m.handedOutAt);
    }
  }
}

/** What the overflow trim sees of its pool. */
export interface TrimTarget {
  /** Connections the trim never goes below: maxSize, or minSize when that is larger (kept warm). */
  readonly keep: number;
  /** Connection slots taken above `keep`. */
  excess(): number;
  /** Highest demand (in use + waiting) since the last call; counting restarts from the current demand. */
  takePeakDemand(): number;
  /** Close up to `count` idle connections as overflow. */
  closeOverflow(count: number): void;
}

/**
 * Overflow connections stay while they are needed: they close once demand has not exceeded
 * maxSize for a whole overflowLingerMs. Under steady demand around maxSize (a worker whose
 * concurrency is above maxSize) they are reused instead of reopened for every burst.
 */
export class OverflowTrim extends PoolTask {
  readonly #target: TrimTarget;
  readonly #lingerMs: number;

  constructor(target: TrimTarget, lingerMs: number, failed: TaskFailed) {
    super('overflow_trim', failed);
    this.#target = target;
    this.#lingerMs = lingerMs;
  }

  /** The pool holds overflow connections: watch demand for one linger window (idempotent). */
  arm(): void {
    if (this.scheduled || this.stopped) return;
    this.#target.takePeakDemand();
    this.schedule(this.#lingerMs);
  }

  protected run(): void {
    const t = this.#target;
    const excess = t.excess();
    if (excess <= 0) return;
    const peak = t.takePeakDemand();
    // Overflow still open (in use, or needed in this window, or closing now): look again after
    // another window. Rescheduled before the close, so a failing close cannot end the watch.
    this.schedule(this.#lingerMs);
    if (peak <= t.keep) t.closeOverflow(excess);
  }
}

/** What the refill sees of its pool. */
export interface RefillTarget {
  /** The pool needs connections to reach minSize and nothing else is opening them. */
  needsRefill(): boolean;
  /** Open connections up to minSize (as far as the process budget allows); resolves false when one failed to open. */
  fill(): Promise<boolean>;
}

/** First retry of a refill that could not open every connection, doubled per failure up to REFILL_MAX_MS. */
const REFILL_RETRY_MS = 500;
const REFILL_MAX_MS = 30_000;
/** After a connection closed, refill soon (not at once: several closing together need one refill). */
const REFILL_SOON_MS = 10;

/**
 * Tops the pool back up to minSize after connections died, were recycled or could not all be
 * opened at creation (a tenant whose role allows fewer connections than minSize, a database that
 * refuses some with 53300). A refill in which a connection failed to open retries with
 * exponential backoff (with jitter, so a fleet of workers does not retry in step); the failed
 * connects are counted as connection errors where they happen. One held back by a full process
 * budget does not retry: the pool's next closed connection asks again (as it always did), so
 * idle pools do not keep taking back the room busy tenants evicted them from.
 */
export class Refill extends PoolTask {
  readonly #target: RefillTarget;
  #retryMs = REFILL_RETRY_MS;
  #running = false;

  constructor(target: RefillTarget, failed: TaskFailed) {
    super('refill', failed);
    this.#target = target;
  }

  /** A connection closed: refill soon if the pool fell below minSize. */
  request(): void {
    if (!this.#running && this.#target.needsRefill()) this.schedule(REFILL_SOON_MS);
  }

  /** Opening fell short: try again after the backoff. */
  retryLater(): void {
    this.cancel();
    this.schedule(this.#nextDelay());
  }

  protected async run(): Promise<void> {
    // A fill slower than the backoff is still in flight: look again later.
    if (this.#running) return this.schedule(this.#retryMs);
    if (!this.#target.needsRefill()) {
      this.#retryMs = REFILL_RETRY_MS;
      return;
    }
    // The retry is scheduled before the work: whatever the fill does, the refill goes on.
    this.schedule(this.#nextDelay());
    this.#running = true;
    try {
      if (await this.#target.fill()) {
        this.#retryMs = REFILL_RETRY_MS;
        this.cancel();
      }
    } finally {
      this.#running = false;
    }
  }

  #nextDelay(): number {
    const delay = this.#retryMs * (0.75 + Math.random() * 0.5);
    this.#retryMs = Math.min(REFILL_MAX_MS, this.#retryMs * 2);
    return delay;
  }
}

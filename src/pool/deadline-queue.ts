/**
 * Deadlines of many waiters on one timer. Items are added in the order their deadlines fall
 * (one timeout per pool, so start order is deadline order); settled items are skipped and
 * dropped. The timer is armed for the oldest pending item only, and only while one exists.
 *
 * Memory stays bounded by the pending items: the consumed prefix is dropped once it is half the
 * array, and settled items queued behind a long-pending one are dropped whenever they outnumber
 * the pending ones by COMPACT_MIN.
 */
import { performance } from 'node:perf_hooks';

export interface Deadlined {
  /** On the clock of `now` (performance.now() by default). */
  readonly deadline: number;
  /** Set by the owner once the item is done (granted, failed, expired): it is then skipped. */
  readonly settled: boolean;
}

/** Settled items tolerated behind a pending one before they are dropped. */
const COMPACT_MIN = 1024;

export class DeadlineQueue<T extends Deadlined> {
  readonly #onExpired: (item: T) => void;
  readonly #now: () => number;
  #items: T[] = [];
  #head = 0;
  #compactAt = COMPACT_MIN;
  #timer: NodeJS.Timeout | undefined;

  /** `onExpired` must settle the item it is given. */
  constructor(onExpired: (item: T) => void, now: () => number = () => performance.now()) {
    this.#onExpired = onExpired;
    this.#now = now;
  }

  add(item: T): void {
    this.#skipSettled();
    const q = this.#items;
    if (this.#head === q.length) {
      q.length = 0;
      this.#head = 0;
    } else if (this.#head >= COMPACT_MIN && 2 * this.#head >= q.length) {
      // Steady waiting keeps a pending item at the head forever: drop the consumed prefix.
      q.copyWithin(0, this.#head);
      q.length -= this.#head;
      this.#head = 0;
    } else if (q.length - this.#head > this.#compactAt) {
      // A long wait at the head keeps settled items behind it: drop them now and then.
      let kept = 0;
      for (let i = this.#head; i < q.length; i++) if (!q[i]!.settled) q[kept++] = q[i]!;
      q.length = kept;
      this.#head = 0;
      this.#compactAt = Math.max(COMPACT_MIN, 2 * kept);
    }
    q.push(item);
    if (this.#timer === undefined) this.#arm();
  }

  /** Array slots in use: pending items, and settled ones not dropped yet (bounded, see above). */
  get retained(): number {
    return this.#items.length;
  }

  /** The pending item whose deadline comes first, if any. */
  first(): T | undefined {
    this.#skipSettled();
    return this.#items[this.#head];
  }

  /** Hand every pending item to `fn` (which settles it) and forget them all; the timer stops. */
  drain(fn: (item: T) => void): void {
    const q = this.#items;
    this.#items = [];
    const from = this.#head;
    this.#head = 0;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    for (let i = from; i < q.length; i++) if (!q[i]!.settled) fn(q[i]!);
  }

  #skipSettled(): void {
    const q = this.#items;
    while (this.#head < q.length && q[this.#head]!.settled) this.#head++;
  }

  #arm(): void {
    this.#skipSettled();
    const first = this.#items[this.#head];
    if (first === undefined) {
      this.#items.length = 0;
      this.#head = 0;
      this.#timer = undefined;
      return;
    }
    this.#timer = setTimeout(this.#expire, Math.max(1, Math.ceil(first.deadline - this.#now())));
    this.#timer.unref();
  }

  readonly #expire = (): void => {
    this.#timer = undefined;
    const now = this.#now();
    const q = this.#items;
    for (; this.#head < q.length; this.#head++) {
      const item = q[this.#head]!;
      if (item.settled) continue;
      if (item.deadline > now) break;
      this.#onExpired(item);
    }
    this.#arm();
  };
}

/**
 * Deadline queues by timeout: acquires with the same timeout are added in start order, so each
 * queue stays in deadline order. A pool has one timeout for most acquires (acquireTimeoutMs) and
 * a few shorter ones (lenses with their own timeout), so this holds a handful of queues.
 */
export class DeadlineQueues<T extends Deadlined> {
  readonly #onExpired: (item: T) => void;
  readonly #byTimeout = new Map<number, DeadlineQueue<T>>();

  /** `onExpired` must settle the item it is given. */
  constructor(onExpired: (item: T) => void) {
    this.#onExpired = onExpired;
  }

  /** Add an item whose deadline is `timeoutMs` after its start. */
  add(item: T, timeoutMs: number): void {
    let q = this.#byTimeout.get(timeoutMs);
    if (q === undefined) {
      q = new DeadlineQueue<T>(this.#onExpired);
      this.#byTimeout.set(timeoutMs, q);
    }
    q.add(item);
  }

  /** Every pending item, removed and handed to `fn` (on close). */
  drain(fn: (item: T) => void): void {
    for (const q of this.#byTimeout.values()) q.drain(fn);
  }

  /** The pending item whose deadline comes first, over every timeout, if any. */
  first(): T | undefined {
    let first: T | undefined;
    for (const q of this.#byTimeout.values()) {
      const item = q.first();
      if (item !== undefined && (first === undefined || item.deadline < first.deadline)) first = item;
    }
    return first;
  }
}

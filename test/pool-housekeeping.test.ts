/**
 * The pool's housekeeping tasks (src/pool/housekeeping.ts) on a clock the test advances (the fake
 * clock is the point: backoff and linger windows of seconds, checked exactly), with fake targets:
 * - the refill retries a fill in which a connection failed with exponential backoff (capped),
 *   resets it on success, and stops when nothing is missing;
 * - a task whose work throws reports the failure and keeps its schedule;
 * - the overflow trim closes overflow only after a whole linger window of low demand.
 * Their effect on real pools is in pool-semantics, pool-lifecycle and warm-up tests.
 */
import pg from 'pg';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { LeakSweep, OverflowTrim, Refill } from '../src/pool/housekeeping.js';
import type { ClientMeta } from '../src/pool/pooled-client.js';

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
  vi.spyOn(Math, 'random').mockReturnValue(0.5); // jitter factor exactly 1
});
afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

const failures: { task: string; err: unknown }[] = [];
const failed = (task: string, err: unknown) => failures.push({ task, err });
beforeEach(() => {
  failures.length = 0;
});

describe('Refill', () => {
  it('retries a fill in which a connection failed after 500 ms, 1 s, 2 s, 4 s … capped at 30 s; resets after a success', async () => {
    const fills: number[] = [];
    let succeed = false;
    let missing = true;
    const refill = new Refill(
      {
        needsRefill: () => missing,
        fill: async () => {
          fills.push(Date.now());
          if (succeed) missing = false;
          return succeed;
        },
      },
      failed,
    );
    const t0 = Date.now();
    refill.retryLater(); // a warm-up opened only part of minSize
    await vi.advanceTimersByTimeAsync(500 + 1000 + 2000 + 4000 + 8000 + 16000 + 30000 + 30000);
    expect(fills.map((t) => t - t0)).toEqual([500, 1500, 3500, 7500, 15500, 31500, 61500, 91500]);

    succeed = true;
    await vi.advanceTimersByTimeAsync(30000);
    expect(fills).toHaveLength(9);
    await vi.advanceTimersByTimeAsync(120000);
    expect(fills).toHaveLength(9); // reached minSize: no more runs

    // Short again later (a connection died): soon, then from the first backoff step again.
    missing = true;
    succeed = false;
    const t1 = Date.now();
    refill.request();
    await vi.advanceTimersByTimeAsync(10 + 500 + 1000);
    expect(fills.slice(9).map((t) => t - t1)).toEqual([10, 510, 1510]);
    refill.stop();
    await vi.advanceTimersByTimeAsync(60000);
    expect(fills).toHaveLength(12);
    expect(failures).toEqual([]);
  });

  it('a fill that throws is reported and retried (the retry was scheduled before the work)', async () => {
    let calls = 0;
    const refill = new Refill(
      {
        needsRefill: () => true,
        fill: async () => {
          calls++;
          throw new Error('bug in fill');
        },
      },
      failed,
    );
    refill.request();
    await vi.advanceTimersByTimeAsync(10 + 500 + 1000);
    expect(calls).toBe(3);
    expect(failures.map((f) => [f.task, (f.err as Error).message])).toEqual([
      ['refill', 'bug in fill'],
      ['refill', 'bug in fill'],
      ['refill', 'bug in fill'],
    ]);
    refill.stop();
  });

  it('a fill held back only by a full process budget (no connection failed) is not retried until the pool asks again', async () => {
    let calls = 0;
    const fill = async () => {
      calls++;
      return true; // still below minSize, but nothing failed
    };
    const refill = new Refill({ needsRefill: () => true, fill }, failed);
    refill.request();
    await vi.advanceTimersByTimeAsync(120000);
    expect(calls).toBe(1);
    refill.request(); // the pool's next closed connection
    await vi.advanceTimersByTimeAsync(10);
    expect(calls).toBe(2);
    refill.stop();
  });

  it('does nothing while nothing is missing', async () => {
    let calls = 0;
    const fill = async () => {
      calls++;
      return true;
    };
    const refill = new Refill({ needsRefill: () => false, fill }, failed);
    refill.request();
    refill.retryLater();
    await vi.advanceTimersByTimeAsync(60000);
    expect(calls).toBe(0);
  });
});

describe('LeakSweep', () => {
  const held = (handedOutAt: number): ClientMeta => ({
    client: new pg.Client(), // never connected: the sweep looks only at the metadata
    expiresAt: Infinity,
    releasedAt: 0,
    handedOutAt,
    holder: { jobId: String(handedOutAt) },
    leakReported: false,
    checkedOut: true,
    lost: false,
    lease: undefined,
  });

  it('reports each connection held past the threshold once; a report that throws neither stops the sweep nor escapes', async () => {
    const connections = new Set<ClientMeta>();
    const reported: number[] = [];
    const sweep = new LeakSweep(
      connections,
      1000,
      (_m, heldMs) => {
        reported.push(heldMs);
        if (reported.length === 1) throw new Error('logger broke');
      },
      failed,
    );
    connections.add(held(Date.now()));
    sweep.start();
    await vi.advanceTimersByTimeAsync(1000); // sweeps every 250 ms
    expect(reported).toEqual([1000]);
    expect(failures.map((f) => f.task)).toEqual(['leak_sweep']);
    connections.add(held(Date.now()));
    await vi.advanceTimersByTimeAsync(1000);
    expect(reported).toEqual([1000, 1000]); // the sweep went on; the first is not reported twice
    sweep.stop();
  });
});

describe('OverflowTrim', () => {
  it('closes overflow only after a whole linger window without demand above keep, and watches again while overflow remains', async () => {
    let size = 4;
    let demand = 0;
    let peak = 0;
    const closed: number[] = [];
    const trim = new OverflowTrim(
      {
        keep: 2,
        excess: () => size - 2,
        takePeakDemand: () => {
          const p = peak;
          peak = demand;
          return p;
        },
        closeOverflow: (n) => closed.push(n),
      },
      300,
      failed,
    );
    demand = 4;
    trim.arm();
    await vi.advanceTimersByTimeAsync(300); // demand 4 all window: kept
    expect(closed).toEqual([]);
    demand = 1; // the burst ended just after the window began: that window still saw 4
    await vi.advanceTimersByTimeAsync(300);
    expect(closed).toEqual([]);
    await vi.advanceTimersByTimeAsync(300); // a whole window at 1 (≤ keep): the 2 overflow close
    expect(closed).toEqual([2]);
    size = 2; // closed
    await vi.advanceTimersByTimeAsync(3000);
    expect(closed).toEqual([2]);
    trim.stop();
  });
});

/**
 * DeadlineQueue (src/deadline-queue.ts): every acquire's deadline on one timer per pool. Pure
 * unit tests (no servers): expiry order, settled items skipped, bounded memory under steady
 * waiting, drain on close.
 */
import { performance } from 'node:perf_hooks';
import { describe, expect, it } from 'vitest';
import { DeadlineQueue } from '../src/pool/deadline-queue.js';

interface Item {
  readonly id: number;
  readonly deadline: number;
  settled: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Poll until `done` (a wide 10 s limit: timers run late on a loaded machine). */
async function waitUntil(done: () => boolean): Promise<void> {
  const limit = performance.now() + 10_000;
  while (!done()) {
    if (performance.now() > limit) throw new Error('timed out');
    await sleep(5);
  }
}

describe('DeadlineQueue', () => {
  it('expires pending items at their own deadlines, in order, and skips settled ones', async () => {
    const expired: { id: number; late: number }[] = [];
    const q = new DeadlineQueue<Item>((item) => {
      item.settled = true;
      expired.push({ id: item.id, late: performance.now() - item.deadline });
    });
    const t0 = performance.now();
    const items = [40, 80, 120].map((ms, id) => ({ id, deadline: t0 + ms, settled: false }));
    for (const item of items) q.add(item);
    items[1]!.settled = true; // granted in time: never expires
    // (in deadline order, so item 1 would have expired before item 2)
    await waitUntil(() => expired.some((e) => e.id === 2));
    expect(expired.map((e) => e.id)).toEqual([0, 2]);
    for (const e of expired) expect(e.late).toBeGreaterThanOrEqual(0);
    expect(q.retained).toBe(0); // nothing pending: the timer stopped and the array emptied
  });

  it('stays bounded while some item is always pending (steady waiting: a FIFO of 39 behind 25 connections)', () => {
    const q = new DeadlineQueue<Item>(() => {});
    const far = performance.now() + 60_000;
    const pending: Item[] = [];
    let maxRetained = 0;
    for (let id = 0; id < 20_000; id++) {
      const item = { id, deadline: far, settled: false };
      q.add(item);
      pending.push(item);
      if (pending.length > 39) pending.shift()!.settled = true; // granted in order
      maxRetained = Math.max(maxRetained, q.retained);
    }
    // (before the prefix was dropped, all 20,000 stayed in the array)
    expect(maxRetained).toBeLessThan(3 * 1024);
    q.drain((item) => (item.settled = true));
  });

  it('stays bounded when one item waits long while thousands behind it are settled', () => {
    const q = new DeadlineQueue<Item>(() => {});
    const far = performance.now() + 60_000;
    const stuck = { id: -1, deadline: far, settled: false };
    q.add(stuck);
    let maxRetained = 0;
    for (let id = 0; id < 20_000; id++) {
      const item = { id, deadline: far, settled: false };
      q.add(item);
      item.settled = true;
      maxRetained = Math.max(maxRetained, q.retained);
    }
    expect(maxRetained).toBeLessThan(3 * 1024);
    const drained: number[] = [];
    q.drain((item) => drained.push(item.id));
    expect(drained).toEqual([-1]); // the long wait is still there
  });

  it('drain hands over only the pending items and stops the timer', async () => {
    const expired: number[] = [];
    const q = new DeadlineQueue<Item>((item) => expired.push(item.id));
    const t0 = performance.now();
    const a = { id: 1, deadline: t0 + 30, settled: false };
    const b = { id: 2, deadline: t0 + 30, settled: true };
    q.add(a);
    q.add(b);
    const drained: number[] = [];
    q.drain((item) => drained.push(item.id));
    expect(drained).toEqual([1]);
    await sleep(80);
    expect(expired).toEqual([]);
    expect(q.retained).toBe(0);
  });
});

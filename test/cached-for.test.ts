/**
 * `cachedFor` (workers/service.ts): what /metrics and /ready read from Redis is asked at most once
 * per TTL, asked again once the TTL has passed, and a failure is not kept.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { cachedFor } from '../workers/service.js';

afterEach(() => {
  vi.useRealTimers();
});

describe('cachedFor', () => {
  it('answers from the cache within the TTL and asks again once it has passed', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    let calls = 0;
    const get = cachedFor(1000, async () => ++calls);
    expect(await get()).toBe(1);
    vi.setSystemTime(1_000_999);
    expect(await get()).toBe(1);
    vi.setSystemTime(1_001_000);
    expect(await get()).toBe(2);
    expect(await get()).toBe(2);
  });

  it('does not keep a failure: the next call asks again', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    let calls = 0;
    const get = cachedFor(60_000, async () => {
      calls++;
      if (calls === 1) throw new Error('redis down');
      return calls;
    });
    await expect(get()).rejects.toThrow('redis down');
    expect(await get()).toBe(2);
  });

  it('with a TTL of 0 asks every time', async () => {
    let calls = 0;
    const get = cachedFor(0, async () => ++calls);
    await get();
    await get();
    expect(calls).toBe(2);
  });
});

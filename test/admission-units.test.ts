/**
 * The two local decisions of admission (issue 13 §4, §5), on a clock the test advances:
 * `TenantBreakers` (closed → open → half-open → closed / open again with a longer cool-down) and
 * `DeferralPlanner` (deferred jobs spaced by the tenant's job time ÷ its pool size, jittered,
 * capped). What a job's error says about its database is decided by code (`reachabilityOf`).
 */
import { describe, expect, it } from 'vitest';
import { type BreakerState, TenantBreakers } from '../src/breaker.js';
import { DeferralPlanner } from '../src/deferral.js';
import { ERROR_CODES, type ErrorCode, reachabilityOf } from '../src/errors.js';

function clock(start = 1_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

function breakers(threshold = 3, coolDownMs = 1000, maxCoolDownMs = 3000, random = () => 0) {
  const c = clock();
  const transitions: string[] = [];
  const b = new TenantBreakers(
    { failureThreshold: threshold, coolDownMs, maxCoolDownMs },
    { now: c.now, random, onTransition: (tenant, from: BreakerState, to: BreakerState) => transitions.push(`${tenant}:${from}>${to}`) },
  );
  return { b, c, transitions };
}

describe('reachabilityOf (by code, never by message)', () => {
  it('connect failures are unreachable, query outcomes reached, the process’s and fleet’s own limits say nothing', () => {
    expect(reachabilityOf('CONNECTION_FAILED')).toBe('unreachable');
    expect(reachabilityOf('CONNECT_TIMEOUT')).toBe('unreachable');
    for (const code of ['QUERY_TIMEOUT', 'QUERY_FAILED', 'QUERY_FAILED_TRANSIENT', 'RESULT_TOO_LARGE'] as const) expect(reachabilityOf(code)).toBe('reached');
    for (const code of ['POOL_TIMEOUT', 'POOL_BUSY', 'POOL_CLOSED', 'PROCESS_BUDGET_TIMEOUT', 'FLEET_CAP_TIMEOUT', 'FLEET_UNAVAILABLE', 'INTERNAL'] as const)
      expect(reachabilityOf(code)).toBe('unknown');
    // Only the two connect codes open a breaker.
    const unreachable = (Object.keys(ERROR_CODES) as ErrorCode[]).filter((c) => reachabilityOf(c) === 'unreachable');
    expect(unreachable.sort()).toEqual(['CONNECTION_FAILED', 'CONNECT_TIMEOUT']);
  });
});

describe('TenantBreakers', () => {
  it('opens after `threshold` consecutive connect failures of one tenant; other tenants keep running', () => {
    const { b, transitions } = breakers(3);
    for (let i = 0; i < 2; i++) {
      expect(b.admit('A')).toEqual({ run: true, probe: false });
      b.record('A', false, 'unreachable');
    }
    expect(b.stateOf('A')).toBe('closed');
    b.record('A', false, 'unreachable');
    expect(b.stateOf('A')).toBe('open');
    expect(transitions).toEqual(['A:closed>open']);
    expect(b.admit('A')).toMatchObject({ run: false });
    expect(b.admit('B')).toEqual({ run: true, probe: false });
    expect(b.snapshot()).toEqual([expect.objectContaining({ tenant: 'A', state: 'open', failures: 3, coolDownMs: 1000, probeInMs: 1000 })]);
  });

  it('a reached outcome starts the count again; an unknown one (pool timeout, budget, fleet cap) leaves it', () => {
    const { b } = breakers(3);
    b.record('A', false, 'unreachable');
    b.record('A', false, 'unreachable');
    b.record('A', false, 'reached');
    b.record('A', false, 'unreachable');
    b.record('A', false, 'unreachable');
    expect(b.stateOf('A')).toBe('closed');
    b.record('A', false, 'unknown');
    b.record('A', false, 'unreachable');
    expect(b.stateOf('A')).toBe('open');
  });

  it('while open, jobs are delayed until the cool-down ends (spread over half a cool-down after it); then one probe runs, the rest wait', () => {
    const { b, c } = breakers(1, 1000, 8000, () => 0.5);
    b.record('A', false, 'unreachable');
    c.advance(400);
    expect(b.admit('A')).toEqual({ run: false, delayMs: 600 + 250 });
    c.advance(600);
    expect(b.admit('A')).toEqual({ run: true, probe: true });
    expect(b.stateOf('A')).toBe('half_open');
    const other = b.admit('A');
    expect(other.run).toBe(false);
    // A job admitted before it opened may end now: it does not decide.
    b.record('A', false, 'reached');
    expect(b.stateOf('A')).toBe('half_open');
  });

  it('a probe that connects closes it; one that fails opens it again with the cool-down doubled, capped', () => {
    const { b, c, transitions } = breakers(1, 1000, 3000);
    b.record('A', false, 'unreachable');
    const cycle = (expectedCoolDown: number) => {
      expect(b.snapshot()[0]).toMatchObject({ state: 'open', coolDownMs: expectedCoolDown });
      c.advance(expectedCoolDown);
      expect(b.admit('A')).toEqual({ run: true, probe: true });
      b.record('A', true, 'unreachable');
    };
    cycle(1000);
    cycle(2000);
    cycle(3000);
    expect(b.snapshot()[0]).toMatchObject({ state: 'open', coolDownMs: 3000 });
    c.advance(3000);
    expect(b.admit('A')).toEqual({ run: true, probe: true });
    b.record('A', true, 'reached');
    expect(b.stateOf('A')).toBe('closed');
    expect(b.snapshot()).toEqual([]);
    expect(b.admit('A')).toEqual({ run: true, probe: false });
    expect(transitions.filter((t) => t === 'A:half_open>open')).toHaveLength(3);
    expect(transitions.at(-1)).toBe('A:half_open>closed');
  });

  it('a probe with an unknown outcome lets the next job probe', () => {
    const { b, c } = breakers(1);
    b.record('A', false, 'unreachable');
    c.advance(1000);
    expect(b.admit('A')).toEqual({ run: true, probe: true });
    b.record('A', true, 'unknown');
    expect(b.admit('A')).toEqual({ run: true, probe: true });
  });

  it('threshold 0: no breaker (nothing counted, every job runs)', () => {
    const { b } = breakers(0);
    for (let i = 0; i < 10; i++) b.record('A', false, 'unreachable');
    expect(b.admit('A')).toEqual({ run: true, probe: false });
    expect(b.snapshot()).toEqual([]);
  });
});

describe('DeferralPlanner', () => {
  const planner = (maxDelayMs = 5000, random = () => 0.5) => {
    const c = clock();
    return { p: new DeferralPlanner({ enabled: true, maxPerJob: 20, maxDelayMs }, { now: c.now, random }), c };
  };

  it('spaces a tenant’s deferred jobs by its recent job time ÷ its pool size', () => {
    const { p } = planner();
    p.observe('A', 40);
    // 40 ms jobs on 4 connections: one job every 10 ms.
    expect([1, 2, 3, 4].map(() => p.delayFor('A', 4))).toEqual([10, 20, 30, 40]);
    // Another tenant has its own schedule.
    p.observe('B', 100);
    expect(p.delayFor('B', 1)).toBe(100);
  });

  it('the schedule moves with time: a job deferred after the others came back starts again from now', () => {
    const { p, c } = planner();
    p.observe('A', 40);
    p.delayFor('A', 4);
    p.delayFor('A', 4);
    c.advance(1000);
    expect(p.delayFor('A', 4)).toBe(10);
  });

  it('jitter ±20 %; the recent job time is a moving average', () => {
    const low = planner(5000, () => 0);
    low.p.observe('A', 100);
    expect(low.p.delayFor('A', 1)).toBe(80);
    const high = planner(5000, () => 0.999999);
    high.p.observe('A', 100);
    expect(high.p.delayFor('A', 1)).toBe(120);
    const avg = planner();
    avg.p.observe('A', 100);
    avg.p.observe('A', 200);
    expect(avg.p.jobMs('A')).toBeCloseTo(120);
  });

  it('capped at maxDelayMs, and the schedule is held there (a flood does not push it out without bound)', () => {
    const { p, c } = planner(1000);
    p.observe('A', 400);
    const delays = Array.from({ length: 10 }, () => p.delayFor('A', 1));
    expect(Math.max(...delays)).toBe(1000);
    expect(delays.slice(0, 2)).toEqual([400, 800]);
    c.advance(1000);
    // Spaced again from the held schedule, not from ten jobs' worth of it.
    expect(p.delayFor('A', 1)).toBe(400);
  });
});

/**
 * The per-job metrics (src/metrics-hot.ts) are kept outside prom-client's classes for speed; what
 * a scrape shows must not change: the same text as prom-client's Histogram and Counter for the
 * same observations, and a removed label value's series gone.
 */
import { Counter, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { KeyedCounter3, KeyedHistogram } from '../src/metrics-hot.js';

const BUCKETS = [0.001, 0.01, 0.1, 1];
const VALUES = [0.0005, 0.001, 0.002, 0.05, 0.5, 3, 0.01];

describe('metrics-hot', () => {
  it('KeyedHistogram scrapes as prom-client Histogram does (buckets at and between bounds, +Inf, sum, count), and remove() drops one label value', async () => {
    const ours = new Registry();
    const theirs = new Registry();
    const h = new KeyedHistogram({ name: 'x_seconds', help: 'h', labelName: 'lens', buckets: BUCKETS, registers: [ours] });
    const p = new Histogram({ name: 'x_seconds', help: 'h', labelNames: ['lens'], buckets: BUCKETS, registers: [theirs] });
    for (const [i, v] of VALUES.entries()) {
      const lens = i % 2 === 0 ? 'a.one' : 'b.two';
      h.observe(lens, v);
      p.observe({ lens }, v);
    }
    expect(await ours.metrics()).toBe(await theirs.metrics());
    h.remove('a.one');
    p.remove({ lens: 'a.one' });
    expect(await ours.metrics()).toBe(await theirs.metrics());
    expect(await ours.metrics()).not.toContain('a.one');
  });

  it('KeyedCounter3 scrapes as prom-client Counter does, and removeSecond() drops every series of one tenant', async () => {
    const ours = new Registry();
    const theirs = new Registry();
    const c = new KeyedCounter3({ name: 'jobs_total', help: 'c', labelNames: ['lens', 'tenant', 'outcome'], registers: [ours] });
    const p = new Counter({ name: 'jobs_total', help: 'c', labelNames: ['lens', 'tenant', 'outcome'], registers: [theirs] });
    const events = [
      ['l1', 'yA', 'completed'],
      ['l1', 'yB', 'completed'],
      ['l2', 'yA', 'failed'],
      ['l1', 'yA', 'completed'],
    ] as const;
    for (const [lens, tenant, outcome] of events) {
      c.inc(lens, tenant, outcome);
      p.inc({ lens, tenant, outcome });
    }
    expect(await ours.metrics()).toBe(await theirs.metrics());
    c.removeSecond('yA');
    p.remove({ lens: 'l1', tenant: 'yA', outcome: 'completed' });
    p.remove({ lens: 'l2', tenant: 'yA', outcome: 'failed' });
    expect(await ours.metrics()).toBe(await theirs.metrics());
    expect(await ours.metrics()).toContain('jobs_total{lens="l1",tenant="yB",outcome="completed"} 1');
  });
});

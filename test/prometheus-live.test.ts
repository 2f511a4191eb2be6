/**
 * The dashboard and the alert rules against a real Prometheus (Debian package `prometheus`)
 * scraping a real worker under load. Every dashboard panel target and every alert's signal is
 * run through the Prometheus HTTP API and must return data: a panel that shows nothing fails.
 *
 * The load:
 * - HELD (max 2, no overflow): two `test.sleep` jobs hold both connections, started before
 *   Prometheus so every scrape sees the pool at 100 %; a stream of small jobs waits behind them
 *   and times out (waiting requests, acquire timeouts).
 * - HEALTHY (max 6): bursts of 3 small jobs; idle connections close between bursts (idle
 *   closes, fresh connects), so saturation stays at most 50 % and no alert may fire for it.
 * - LEAKY (HEALTHY's database, leak threshold 300 ms): one 1 s sleep while Prometheus watches
 *   (its pool is created earlier by a quick job, so the leak counter has a 0 sample first).
 * - BAD (HEALTHY's database, wrong password): every acquire is a connection error.
 *
 * The rule file is a copy of deploy/prometheus/alerts.yml with every `for:` shortened to
 * FOR_SHORT. The real durations are minutes, longer than any test should take; this test proves
 * that the expressions are valid and wired to metrics that exist and that the alerts fire on a
 * real worker. The durations themselves (and both sides of every threshold) are proven by the
 * promtool unit tests in deploy/prometheus/alerts.test.yml (test/deploy.test.ts).
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enqueue, enqueueMany } from '../queues/producer.js';
import { createTenants, pgAdminUrl, ROOT, sleep, startTestWorker, uniqueId, waitFor, type TestWorker } from './support/harness.js';
import { hasNumber, shortenForDurations, signalExprs, startPrometheus, vectorOf, type ActiveAlert, type LocalPrometheus } from './support/prometheus.js';

const JOB = 'lensfleet-worker';
const FOR_SHORT = '2s';
/**
 * How long HELD's two connections are held (the lens' maximum): longer than this whole file may
 * take on a loaded machine, so HELD is saturated whenever an alert is looked for; cut short by
 * pg_terminate_backend at the end.
 */
const SLEEP_S = 60;
/**
 * Successful scrapes under load, after the first, before the panels are read: a few samples in
 * every rate window. (The first scrape comes ~5 s after start: Prometheus' discovery manager
 * batches target updates every 5 s.)
 */
const SCRAPES = 4;
/** Grafana's built-in interval variables, as a 1 s scrape would give them. */
const GRAFANA_INTERVALS: Record<string, string> = {
  __rate_interval: '30s',
  __interval: '5s',
  __range: '1m',
  __range_s: '60',
  __range_ms: '60000',
  __interval_ms: '5000',
};

const HELD = uniqueId('yHeld');
const HEALTHY = uniqueId('yHealthy');
const BAD = uniqueId('yBad');
const LEAKY = uniqueId('yLeaky');

interface Target {
  readonly expr?: string;
  readonly refId?: string;
}
interface Panel {
  readonly id?: number;
  readonly title?: string;
  readonly targets?: readonly Target[];
  readonly panels?: readonly Panel[];
}
interface Dashboard {
  readonly panels?: readonly Panel[];
  readonly templating?: { readonly list?: readonly { name: string; includeAll?: boolean; allValue?: string; definition?: string }[] };
}

const allPanels = (panels: readonly Panel[]): Panel[] => panels.flatMap((p) => [p, ...allPanels(p.panels ?? [])]);

/** Replace Grafana variables the way the dashboard's defaults (All tenants) would. */
function grafanaExpr(expr: string, variables: Readonly<Record<string, string>>): string {
  return expr.replace(/\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)/g, (m, a?: string, b?: string, c?: string) => {
    const name = a ?? b ?? c ?? '';
    const value = variables[name];
    if (value === undefined) throw new Error(`unknown Grafana variable ${m} in ${expr}`);
    return value;
  });
}

const show = (s: unknown) => JSON.stringify(s).slice(0, 400);

describe('live Prometheus: dashboard panels and alert rules against a worker under load', () => {
  let tenants: Awaited<ReturnType<typeof createTenants>> | undefined;
  let tmp: string | undefined;
  let w: TestWorker | undefined;
  let prom: LocalPrometheus | undefined;
  let load: { stop(): Promise<void> } | undefined;
  let sleepers: Promise<unknown>[] = [];
  let alertRuleCount = 0;

  /** End HELD's sleepers now rather than waiting out SLEEP_S, so the worker closes at once. */
  const endSleepers = async (): Promise<void> => {
    const heldDb = tenants?.dbs.find((d) => d.tenant === HELD)?.database;
    if (!heldDb) return;
    const admin = new pg.Client({ connectionString: pgAdminUrl() });
    await admin.connect();
    try {
      await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()", [
        heldDb,
      ]);
    } finally {
      await admin.end();
    }
  };

  beforeAll(async () => {
    tenants = await createTenants([HELD, HEALTHY]);
    const healthyDb = tenants.dbs.find((d) => d.tenant === HEALTHY)!;
    const wrong = new URL(healthyDb.databaseUrl);
    wrong.password = 'not-the-password';
    tmp = await mkdtemp(path.join(os.tmpdir(), 'lensfleet-live-'));
    const tenantsFile = path.join(tmp, 'tenants.json');
    await writeFile(
      tenantsFile,
      JSON.stringify({
        tenants: {
          [HELD]: { pool: { minSize: 0, maxSize: 2, maxOverflow: 0, acquireTimeoutMs: 2000 } },
          [HEALTHY]: { pool: { minSize: 0, maxSize: 6, maxOverflow: 0, idleTimeoutMs: 200 } },
          [LEAKY]: { databaseUrl: healthyDb.databaseUrl, pool: { minSize: 0, maxSize: 4, maxOverflow: 0, leakDetectionMs: 300 } },
          [BAD]: { databaseUrl: wrong.toString(), pool: { minSize: 0, maxSize: 2, maxOverflow: 0, connectTimeoutMs: 2000 } },
        },
      }),
    );
    w = await startTestWorker({
      env: { ...tenants.env, LENSFLEET_TENANTS: [HELD, HEALTHY, LEAKY, BAD].join(','), LENSFLEET_TENANTS_FILE: tenantsFile },
      concurrency: 16,
      // BAD's breaker probes every second or two: its connection errors keep a rate in every
      // 30 s window (the panels and alerts on them need one), and its breaker still shows open.
      settings: { LENSFLEET_BREAKER_COOLDOWN_MS: '1000', LENSFLEET_BREAKER_MAX_COOLDOWN_MS: '2000' },
    });
    const worker = w;
    const base = `http://127.0.0.1:${worker.service.port}`;

    // LEAKY's pool (and so its leak counter, at 0) must exist before its leak: increase() does
    // not count a counter's first sample, so a series born at 1 would never alert.
    await (await enqueue(worker.queue, { tenant: LEAKY, lens: 'test.whoami' }, { attempts: 1 })).waitUntilFinished(worker.events, 15_000);

    // Fill HELD before Prometheus starts, so every scrape of its pool sees 100 %.
    const held = await enqueueMany(
      worker.queue,
      [0, 1].map(() => ({ tenant: HELD, lens: 'test.sleep', params: { seconds: SLEEP_S } })),
      { attempts: 1 },
    );
    sleepers = held.map((j) => j.waitUntilFinished(worker.events, (SLEEP_S + 20) * 1000).catch((e: unknown) => e));
    await waitFor('both HELD connections in use', async () => {
      const { pools } = (await (await fetch(`${base}/pools`)).json()) as { pools: { tenant: string; inUse: number }[] };
      return pools.find((p) => p.tenant === HELD)?.inUse === 2;
    });

    const alertsYml = await readFile(path.join(ROOT, 'deploy/prometheus/alerts.yml'), 'utf8');
    alertRuleCount = [...alertsYml.matchAll(/^\s*- alert:\s*\S+/gm)].length;
    const forCount = [...alertsYml.matchAll(/^\s+for:/gm)].length;
    const short = shortenForDurations(alertsYml, FOR_SHORT);
    expect(short.replaced, 'every for: of alerts.yml is shortened').toBe(forCount);
    prom = await startPrometheus({ jobName: JOB, targets: [`127.0.0.1:${worker.service.port}`], ruleFiles: { 'alerts.yml': short.yaml } });
    load = startLoad(worker);

    const p = prom;
    await waitFor('Prometheus to scrape the worker', async () => vectorOf(await p.query(`up{job="${JOB}"} == 1`)).length === 1, 15_000, 200).catch(
      (err: Error) => {
        throw new Error(`${err.message}\n--- prometheus log ---\n${p.output()}`);
      },
    );
    // A leak while Prometheus watches: LEAKY holds one connection past its 300 ms threshold.
    await enqueue(worker.queue, { tenant: LEAKY, lens: 'test.sleep', params: { seconds: 1 } }, { attempts: 1 });
    // rate() needs two samples in its window: wait until Prometheus holds several scrapes taken
    // under load, the last of them after the leak was counted (not a fixed time: scrapes slow
    // down on a loaded machine).
    await waitFor(
      `${SCRAPES} scrapes under load, one after the leak`,
      async () =>
        vectorOf(await p.query(`count_over_time(up{job="${JOB}"}[5m]) >= ${SCRAPES + 1}`)).length === 1 &&
        vectorOf(await p.query(`lensfleet_pool_leaks_total{tenant="${LEAKY}"} >= 1`)).length === 1,
      30_000,
      200,
    );
  }, 90_000);

  afterAll(async () => {
    const steps: [string, () => Promise<unknown> | undefined][] = [
      ['load', () => load?.stop()],
      ['sleepers', () => endSleepers()],
      ['worker', () => w?.close()],
      ['prometheus', () => prom?.stop()],
      ['tenants', () => tenants?.drop()],
      ['tmp', () => (tmp ? rm(tmp, { recursive: true, force: true }) : undefined)],
    ];
    const errors: string[] = [];
    for (const [name, step] of steps) {
      try {
        await step();
      } catch (err) {
        errors.push(`${name}: ${(err as Error).message}`);
      }
    }
    if (errors.length > 0) throw new Error(`cleanup failed: ${errors.join('; ')}`);
  }, 60_000);

  it('the dashboard tenant variable lists the tenants', async () => {
    const dashboard = JSON.parse(await readFile(path.join(ROOT, 'deploy/grafana/dashboards/lensfleet.json'), 'utf8')) as Dashboard;
    const tenant = dashboard.templating?.list?.find((v) => v.name === 'tenant');
    const metric = /^label_values\((\w+),\s*tenant\)$/.exec(tenant?.definition ?? '')?.[1];
    expect(metric, `variable query ${tenant?.definition}`).toBeDefined();
    const values = await prom!.api<string[]>(`/api/v1/label/tenant/values?match[]=${encodeURIComponent(metric!)}`);
    expect(values).toEqual(expect.arrayContaining([HELD, HEALTHY, LEAKY, BAD]));
  });

  it('every dashboard panel target returns data', async () => {
    const dashboard = JSON.parse(await readFile(path.join(ROOT, 'deploy/grafana/dashboards/lensfleet.json'), 'utf8')) as Dashboard;
    // Template variables take their "All" value, which is what the provisioned dashboard opens with.
    const variables: Record<string, string> = { ...GRAFANA_INTERVALS };
    for (const v of dashboard.templating?.list ?? []) {
      if (!v.includeAll) throw new Error(`variable ${v.name} has no All value: add its test value here`);
      variables[v.name] = v.allValue ?? '.*';
    }
    const targets = allPanels(dashboard.panels ?? []).flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p, target: t })));
    expect(targets.length).toBeGreaterThan(0);
    const empty: string[] = [];
    for (const { panel, target } of targets) {
      const expr = grafanaExpr(target.expr ?? '', variables);
      const r = await prom!.query(expr); // throws if the expr is invalid
      if (!hasNumber(r)) empty.push(`panel ${panel.id} "${panel.title}" ${target.refId}: ${expr} → ${show(r.result)}`);
    }
    expect(empty, 'panels that show nothing').toEqual([]);
    console.info(`[prometheus-live] ${targets.length} panel targets of ${allPanels(dashboard.panels ?? []).length} panels returned data`);
  });

  it('every alert rule is loaded, evaluates without error, and the series it reads have data', async () => {
    const rules = (await prom!.rules()).filter((r) => r.type === 'alerting');
    expect(rules).toHaveLength(alertRuleCount);
    const problems: string[] = [];
    let signals = 0;
    for (const rule of rules) {
      if (rule.health !== 'ok') problems.push(`${rule.name}: health ${rule.health} ${rule.lastError ?? ''}`);
      if (rule.duration > 2) problems.push(`${rule.name}: for is ${rule.duration}s, not shortened`);
      await prom!.query(rule.query); // valid as a query on its own
      for (const signal of signalExprs(rule.query)) {
        signals++;
        const r = await prom!.query(signal);
        if (!hasNumber(r)) problems.push(`${rule.name}: signal ${signal} → ${show(r.result)}`);
      }
    }
    expect(problems).toEqual([]);
    console.info(`[prometheus-live] ${rules.length} alert rules, ${signals} signal expressions returned data`);
  });

  it('saturation critical and pool exhausted fire for the held tenant (and timeouts, errors, leak for theirs), nothing for the healthy one', async () => {
    const expected: [string, string][] = [
      ['LensfleetPoolSaturationCritical', HELD],
      ['LensfleetPoolExhausted', HELD],
      ['LensfleetPoolAcquireTimeoutsCritical', HELD],
      ['LensfleetPoolConnectionLeak', LEAKY],
      ['LensfleetPoolConnectionErrorsCritical', BAD],
      // BAD's connections all fail: its breaker opens and its jobs are delayed.
      ['LensfleetTenantBreakerOpen', BAD],
    ];
    // Each expected alert must be seen firing while the load runs (they need not all fire at
    // the same instant); no alert may ever be active for the healthy tenant.
    const seen = new Set<string>();
    const healthy = new Set<string>();
    const key = (name: string, tenant: string) => `${name}{tenant=${tenant}}`;
    const alerts = await pollAlerts(
      prom!,
      (list) => {
        for (const a of list) {
          if (a.state === 'firing') seen.add(key(a.labels.alertname ?? '', a.labels.tenant ?? ''));
          if (a.labels.tenant === HEALTHY) healthy.add(`${key(a.labels.alertname ?? '', HEALTHY)} ${a.state}`);
        }
        return expected.every(([name, tenant]) => seen.has(key(name, tenant)));
      },
      30_000,
    );
    const missing = expected.filter(([name, tenant]) => !seen.has(key(name, tenant)));
    expect(missing, `never seen firing; active alerts now: ${describeAlerts(alerts)}`).toEqual([]);
    expect([...healthy], 'alerts for the healthy tenant (saturation at most 50 %, no timeouts, errors or leaks)').toEqual([]);
  });

  it('when the worker is gone, up == 0 and LensfleetWorkerDown / LensfleetNoWorkers fire', async () => {
    await load!.stop();
    await endSleepers();
    await Promise.all(sleepers);
    await w!.close();
    const p = prom!;
    await waitFor('up == 0', async () => vectorOf(await p.query(`up{job="${JOB}"} == 0`)).length === 1, 30_000, 200);
    const names = ['LensfleetWorkerDown', 'LensfleetNoWorkers'];
    const missing = (alerts: ActiveAlert[]) => names.filter((name) => !alerts.some((a) => a.labels.alertname === name && a.state === 'firing'));
    const alerts = await pollAlerts(p, (a) => missing(a).length === 0, 30_000);
    expect(missing(alerts), `not firing; active alerts: ${describeAlerts(alerts)}`).toEqual([]);
  });
});

/** Poll /api/v1/alerts until `done` or the timeout; returns the last list either way. */
async function pollAlerts(prom: LocalPrometheus, done: (alerts: ActiveAlert[]) => boolean, timeoutMs: number): Promise<ActiveAlert[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const alerts = await prom.alerts();
    if (done(alerts) || Date.now() > deadline) return alerts;
    await sleep(250);
  }
}

const describeAlerts = (alerts: ActiveAlert[]) =>
  alerts.map((a) => `${a.labels.alertname}{tenant=${a.labels.tenant ?? ''}} ${a.state} ${a.value}`).join(', ') || 'none';

/** Continuous small jobs until stopped. Jobs are not awaited: the worker's metrics are the point. */
function startLoad(w: TestWorker): { stop(): Promise<void> } {
  let running = true;
  const once = { attempts: 1 };
  const every = async (ms: number, fn: () => Promise<unknown>) => {
    while (running) {
      await fn().catch(() => {});
      await sleep(ms);
    }
  };
  const loops = [
    // HELD: waits behind the sleepers and times out after 2 s: ~5 waiting at any time.
    every(400, () => enqueue(w.queue, { tenant: HELD, lens: 'work_orders.open' }, once)),
    // HEALTHY: a burst of 3, then idle long enough for idle connections to close.
    every(700, () =>
      enqueueMany(
        w.queue,
        ['receiving.recent', 'work_orders.open', 'test.whoami'].map((lens) => ({ tenant: HEALTHY, lens })),
        once,
      ),
    ),
    // BAD: every acquire fails to connect (wrong password).
    every(1000, () => enqueue(w.queue, { tenant: BAD, lens: 'receiving.recent' }, once)),
  ];
  return {
    async stop() {
      running = false;
      await Promise.all(loops);
    },
  };
}

describe('signalExprs (the series an alert reads, thresholds off)', () => {
  it.each([
    ['avg_over_time(x[5m]) >= 0.8 < 0.95', ['avg_over_time(x[5m])']],
    ['a > 0 and on (job, instance, tenant) b >= 1', ['a', 'b']],
    [
      '(sum by (tenant) (rate(t[5m])) / (sum by (tenant) (rate(r[5m])) > 0)) > 0.01 <= 0.05',
      ['sum by (tenant) (rate(t[5m])) / (sum by (tenant) (rate(r[5m])) > 0)'],
    ],
    ['absent(up{job="w"} == 1)', ['up{job="w"}']],
    ['up{job="w",x!="a>b"} == 0', ['up{job="w",x!="a>b"}']],
    ['a > bool 1 unless ignoring (x) group_left (y) b', ['a', 'b']],
    ['a_and_b or c_or_d', ['a_and_b', 'c_or_d']],
    ['increase(x[15m]) > 0', ['increase(x[15m])']],
  ])('%s', (expr, signals) => {
    expect(signalExprs(expr)).toEqual(signals);
  });
});

/**
 * The deployment files are checked by the tools that consume them (promtool, docker-compose)
 * and against the metric contract (test/support/metric-contract.ts), so a renamed metric or
 * a moved threshold fails here rather than on a dashboard nobody looks at.
 *
 * Needs the Debian packages `prometheus` (promtool) and `docker-compose` (v1; `config` works
 * without a Docker engine).
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { PROCESS_SETTINGS } from '../src/config.js';
import { METRIC_NAMES, contractMetricOf } from './support/metric-contract.js';

const execFileAsync = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PROMETHEUS_DIR = 'deploy/prometheus';
const DASHBOARD = 'deploy/grafana/dashboards/lensfleet.json';
const PANEL_TYPES = new Set(['timeseries', 'stat', 'gauge']);

const PACKAGE_OF: Record<string, string> = { promtool: 'prometheus', 'docker-compose': 'docker-compose' };

/** Run a tool from the repository root; on failure, the error carries its whole output. */
async function tool(cmd: string, args: readonly string[], env?: NodeJS.ProcessEnv): Promise<string> {
  try {
    const { stdout, stderr } = await execFileAsync(cmd, args, { cwd: ROOT, timeout: 30_000, ...(env ? { env } : {}) });
    return `${stdout}${stderr}`;
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stdout?: string; stderr?: string };
    if (e.code === 'ENOENT') {
      throw new Error(`${cmd} not found: install the Debian package "${PACKAGE_OF[cmd] ?? cmd}"`);
    }
    throw new Error(`${cmd} ${args.join(' ')} failed:\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
}

const text = (path: string) => readFile(new URL(path, `file://${ROOT}/`), 'utf8');

/**
 * Every read of lensfleet_queue_jobs is directly inside `max by (queue…)` (over workers, who all
 * export the same value), maybe around a `deriv`; what is summed is that max (e.g. waiting +
 * prioritized per queue), never the raw series.
 */
function readsDepthWithMax(expr: string): boolean {
  const reads = expr.match(/lensfleet_queue_jobs/g)?.length ?? 0;
  const maxed = expr.match(/max by \(queue[^)]*\) \((?:deriv\()?lensfleet_queue_jobs/g)?.length ?? 0;
  return reads > 0 && reads === maxed;
}

/** Names of contract metrics (and histogram series) referenced in PromQL. */
const lensfleetNames = (expr: string) => [...expr.matchAll(/lensfleet_[a-z_]+/g)].map((m) => m[0]);

/** A PromQL comparison in source order: `>= 0.8` → ['>=', 0.8]. Skips `{le="…"}`-style matchers. */
function comparisons(expr: string): string[] {
  return [...expr.matchAll(/(>=|<=|==|!=|>|<)\s*(-?[0-9]*\.?[0-9]+)/g)].map((m) => `${m[1]} ${Number(m[2])}`);
}

// ---------------------------------------------------------------------------------------------
// A minimal reader for alerts.yml: enough for the layout we write (`- alert:` items with an
// inline or block-scalar `expr`, a `for`, labels and annotations), not a YAML parser.

interface AlertRule {
  readonly name: string;
  readonly expr: string;
  readonly forDuration: string | undefined;
  readonly severity: string | undefined;
  readonly annotations: readonly string[];
}

function readAlertRules(yaml: string): AlertRule[] {
  const rules: AlertRule[] = [];
  const lines = yaml.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const head = /^(\s*)- alert:\s*(\S+)\s*$/.exec(lines[i] ?? '');
    if (!head) continue;
    const itemIndent = (head[1] ?? '').length;
    const body: string[] = [];
    for (let j = i + 1; j < lines.length; j++) {
      const line = lines[j] ?? '';
      const indent = line.length - line.trimStart().length;
      if (line.trim() !== '' && !line.trim().startsWith('#') && indent <= itemIndent) break;
      body.push(line);
    }
    const keyIndent = Math.min(...body.filter((l) => /^\s*[a-z_]+:/.test(l)).map((l) => l.length - l.trimStart().length));
    let expr = '';
    let forDuration: string | undefined;
    let severity: string | undefined;
    const annotations: string[] = [];
    let section = '';
    for (let k = 0; k < body.length; k++) {
      const line = body[k] ?? '';
      const indent = line.length - line.trimStart().length;
      const kv = /^\s*([a-z_]+):\s*(.*)$/.exec(line);
      if (!kv) continue;
      const [, key = '', value = ''] = kv;
      if (indent === keyIndent) {
        section = key;
        if (key === 'expr') {
          if (/^[|>][-+]?$/.test(value)) {
            const block: string[] = [];
            while (
              k + 1 < body.length &&
              ((body[k + 1] ?? '').trim() === '' || (body[k + 1] ?? '').length - (body[k + 1] ?? '').trimStart().length > keyIndent)
            ) {
              block.push((body[++k] ?? '').trim());
            }
            expr = block.join(' ').trim();
          } else {
            expr = value.replace(/^['"]|['"]$/g, '');
          }
        }
        if (key === 'for') forDuration = value;
      } else if (section === 'labels' && key === 'severity') {
        severity = value;
      } else if (section === 'annotations' && indent > keyIndent) {
        annotations.push(key);
      }
    }
    rules.push({ name: head[2] ?? '', expr, forDuration, severity, annotations });
  }
  return rules;
}

// ---------------------------------------------------------------------------------------------

describe('Prometheus rules and config (promtool)', () => {
  it('alerts.yml passes promtool check rules', async () => {
    const out = await tool('promtool', ['check', 'rules', `${PROMETHEUS_DIR}/alerts.yml`]);
    expect(out).toMatch(/SUCCESS: \d+ rules found/);
  });

  it('alerts.test.yml unit tests pass (both sides of every threshold)', async () => {
    const out = await tool('promtool', ['test', 'rules', `${PROMETHEUS_DIR}/alerts.test.yml`]);
    expect(out).toContain('SUCCESS');
  });

  // DNS service discovery is not resolved by `check config` (only validated), so this passes
  // without the compose network; it also loads and checks rule_files (alerts.yml).
  it('prometheus.yml passes promtool check config', async () => {
    const out = await tool('promtool', ['check', 'config', `${PROMETHEUS_DIR}/prometheus.yml`]);
    expect(out).toContain('is valid prometheus config file syntax');
  });

  it('scrapes the compose service `worker` by DNS on the worker port, as job lensfleet-worker', async () => {
    const config = await text(`${PROMETHEUS_DIR}/prometheus.yml`);
    expect(config).toMatch(/job_name:\s*lensfleet-worker/);
    expect(config).toMatch(/dns_sd_configs:\s*\n\s*- names:\s*\[worker\]\s*\n\s*type:\s*A\s*\n\s*port:\s*9464/);
    expect(config).toMatch(/scrape_interval:\s*15s/);
    expect(config).toMatch(/rule_files:\s*\n\s*- alerts\.yml/);
  });
});

describe('alert rules', () => {
  const rulesPromise = text(`${PROMETHEUS_DIR}/alerts.yml`).then(readAlertRules);
  const rule = async (name: string) => {
    const found = (await rulesPromise).find((r) => r.name === name);
    if (!found) throw new Error(`alert ${name} is missing from alerts.yml`);
    return found;
  };

  it('has the expected rules, each with severity, a summary and a description', async () => {
    const rules = await rulesPromise;
    expect(rules.map((r) => r.name).sort()).toEqual(
      [
        'LensfleetNoWorkers',
        'LensfleetPoolAcquireTimeoutsCritical',
        'LensfleetPoolAcquireTimeoutsWarning',
        'LensfleetPoolConnectionErrorsCritical',
        'LensfleetPoolConnectionErrorsWarning',
        'LensfleetPoolConnectionLeak',
        'LensfleetPoolExhausted',
        'LensfleetPoolSaturationCritical',
        'LensfleetPoolSaturationWarning',
        'LensfleetQueueBacklogGrowing',
        'LensfleetTenantBreakerOpen',
        'LensfleetWorkerDown',
        'LensfleetWorkerNotReady',
      ].sort(),
    );
    for (const r of rules) {
      expect(r.expr, r.name).not.toBe('');
      expect(['warning', 'critical'], r.name).toContain(r.severity);
      expect(r.annotations, r.name).toEqual(expect.arrayContaining(['summary', 'description']));
    }
  });

  it('uses the guide thresholds: saturation 0.8 / 0.95, timeouts 1 % / 5 %, errors 0.1 % / 1 %', async () => {
    // Bands do not overlap, so one condition fires one alert. `> 0` is the division guard.
    expect(comparisons((await rule('LensfleetPoolSaturationWarning')).expr)).toEqual(['>= 0.8', '< 0.95']);
    expect(comparisons((await rule('LensfleetPoolSaturationCritical')).expr)).toEqual(['>= 0.95']);
    expect(comparisons((await rule('LensfleetPoolExhausted')).expr)).toEqual(['> 0', '>= 1']);
    expect(comparisons((await rule('LensfleetPoolAcquireTimeoutsWarning')).expr)).toEqual(['> 0', '> 0.01', '<= 0.05']);
    expect(comparisons((await rule('LensfleetPoolAcquireTimeoutsCritical')).expr)).toEqual(['> 0', '> 0.05']);
    expect(comparisons((await rule('LensfleetPoolConnectionErrorsWarning')).expr)).toEqual(['> 0', '> 0.001', '<= 0.01']);
    expect(comparisons((await rule('LensfleetPoolConnectionErrorsCritical')).expr)).toEqual(['> 0', '> 0.01']);
    for (const name of ['LensfleetPoolSaturationWarning', 'LensfleetPoolAcquireTimeoutsWarning', 'LensfleetPoolConnectionErrorsWarning']) {
      expect((await rule(name)).severity, name).toBe('warning');
    }
    for (const name of [
      'LensfleetPoolSaturationCritical',
      'LensfleetPoolExhausted',
      'LensfleetPoolAcquireTimeoutsCritical',
      'LensfleetPoolConnectionErrorsCritical',
    ]) {
      expect((await rule(name)).severity, name).toBe('critical');
    }
  });

  it('computes ratios over a rate window with a guarded denominator and a `for` duration', async () => {
    for (const name of [
      'LensfleetPoolAcquireTimeoutsWarning',
      'LensfleetPoolAcquireTimeoutsCritical',
      'LensfleetPoolConnectionErrorsWarning',
      'LensfleetPoolConnectionErrorsCritical',
    ]) {
      const r = await rule(name);
      expect(r.expr, name).toMatch(/sum by \(tenant\) \(rate\(lensfleet_pool_(acquire_timeouts|connection_errors)_total\[5m\]\)\)/);
      expect(r.expr, name).toMatch(/\(sum by \(tenant\) \(rate\(lensfleet_pool_acquire_requests_total\[5m\]\)\) > 0\)/);
      expect(r.forDuration, name).toMatch(/^\d+m$/);
    }
    expect((await rule('LensfleetNoWorkers')).expr).toMatch(/^absent\(up\{job="lensfleet-worker"\}/);
    expect((await rule('LensfleetWorkerDown')).expr).toBe('up{job="lensfleet-worker"} == 0');
    expect((await rule('LensfleetWorkerNotReady')).expr).toBe('lensfleet_worker_ready == 0');
  });

  it('reads queue depth with max over workers, never sum (every worker exports the same value)', async () => {
    for (const r of await rulesPromise) {
      if (!r.expr.includes('lensfleet_queue_jobs')) continue;
      expect(readsDepthWithMax(r.expr), r.expr).toBe(true);
    }
  });

  it('references only contract metrics', async () => {
    for (const r of await rulesPromise) {
      for (const name of lensfleetNames(r.expr)) expect(contractMetricOf(name), `${r.name}: ${name}`).toBeDefined();
    }
  });

  it('has a promtool unit test for every alert', async () => {
    const tests = await text(`${PROMETHEUS_DIR}/alerts.test.yml`);
    const tested = new Set([...tests.matchAll(/alertname:\s*(\S+)/g)].map((m) => m[1]));
    for (const r of await rulesPromise) expect(tested.has(r.name), r.name).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------

interface Target {
  readonly expr?: string;
  readonly refId?: string;
  readonly datasource?: { readonly uid?: string; readonly type?: string };
}
interface Threshold {
  readonly value: number | null;
}
interface Panel {
  readonly id?: number;
  readonly type?: string;
  readonly title?: string;
  readonly datasource?: { readonly uid?: string };
  readonly targets?: readonly Target[];
  readonly fieldConfig?: {
    readonly defaults?: {
      readonly thresholds?: { readonly steps?: readonly Threshold[] };
      readonly custom?: { readonly thresholdsStyle?: { readonly mode?: string } };
    };
  };
}
interface Dashboard {
  readonly uid?: string;
  readonly schemaVersion?: number;
  readonly panels?: readonly Panel[];
  readonly templating?: {
    readonly list?: readonly {
      readonly name?: string;
      readonly multi?: boolean;
      readonly includeAll?: boolean;
      readonly definition?: string;
      readonly datasource?: { readonly uid?: string };
    }[];
  };
}

describe('Grafana dashboard', () => {
  const dashboardPromise = text(DASHBOARD).then((s) => JSON.parse(s) as Dashboard);
  const panelsOf = async () => (await dashboardPromise).panels ?? [];
  const exprsOf = (p: Panel) => (p.targets ?? []).map((t) => t.expr ?? '');

  it('is a provisioned dashboard with a multi-select tenant variable including All', async () => {
    const d = await dashboardPromise;
    expect(d.uid).toBe('lensfleet');
    expect(d.schemaVersion).toBeGreaterThanOrEqual(36);
    const tenant = d.templating?.list?.find((v) => v.name === 'tenant');
    expect(tenant).toMatchObject({ multi: true, includeAll: true, datasource: { uid: 'prometheus' } });
    expect(tenant?.definition).toBe('label_values(lensfleet_pool_max_connections, tenant)');
  });

  it('gives every panel a unique id, a title, a standard type and targets with expr and refId', async () => {
    const panels = await panelsOf();
    expect(panels.length).toBeGreaterThan(0);
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of panels) {
      expect(Number.isInteger(p.id), `panel ${p.title}`).toBe(true);
      expect(p.title?.trim(), `panel ${p.id}`).toBeTruthy();
      expect(PANEL_TYPES.has(p.type ?? ''), `panel ${p.id} type ${p.type}`).toBe(true);
      expect(p.datasource?.uid, `panel ${p.id}`).toBe('prometheus');
      const targets = p.targets ?? [];
      expect(targets.length, `panel ${p.id}`).toBeGreaterThan(0);
      const refIds = targets.map((t) => t.refId);
      expect(new Set(refIds).size, `panel ${p.id} refIds`).toBe(refIds.length);
      for (const t of targets) {
        expect(t.expr?.trim(), `panel ${p.id}`).toBeTruthy();
        expect(t.refId?.trim(), `panel ${p.id}`).toBeTruthy();
      }
    }
  });

  it('queries only contract metrics, and shows every one of them', async () => {
    const used = new Set<string>();
    for (const p of await panelsOf()) {
      for (const name of exprsOf(p).flatMap(lensfleetNames)) {
        const spec = contractMetricOf(name);
        expect(spec, `panel ${p.id} "${p.title}": ${name} is not in the metric contract`).toBeDefined();
        if (spec) used.add(spec.name);
      }
    }
    expect([...METRIC_NAMES].filter((n) => !used.has(n))).toEqual([]);
  });

  it('computes quantiles from rated buckets and reads queue depth with max', async () => {
    for (const p of await panelsOf()) {
      for (const expr of exprsOf(p)) {
        if (expr.includes('histogram_quantile')) {
          expect(expr, `panel ${p.id}`).toMatch(/histogram_quantile\(0?\.\d+, sum by \([^)]*\ble\b[^)]*\) \(rate\(lensfleet_[a-z_]+_bucket/);
        }
        if (expr.includes('lensfleet_queue_jobs')) expect(readsDepthWithMax(expr), `panel ${p.id}: ${expr}`).toBe(true);
      }
    }
  });

  it('draws the 0.8 and 0.95 thresholds on the saturation panel', async () => {
    const saturation = (await panelsOf()).find((p) => p.type === 'timeseries' && /saturation per tenant/i.test(p.title ?? ''));
    expect(saturation).toBeDefined();
    expect(exprsOf(saturation!).join(' ')).toContain('lensfleet_pool_saturation_ratio');
    const steps = saturation!.fieldConfig?.defaults?.thresholds?.steps?.map((s) => s.value);
    expect(steps).toEqual(expect.arrayContaining([0.8, 0.95]));
    expect(saturation!.fieldConfig?.defaults?.custom?.thresholdsStyle?.mode).toMatch(/line|area/);
  });

  it('has the panels operators look for', async () => {
    const titles = (await panelsOf()).map((p) => p.title ?? '');
    for (const wanted of [
      /saturation per tenant/i,
      /in use vs max/i,
      /waiting/i,
      /acquire latency p50 \/ p95 \/ p99/i,
      /acquire timeouts % of requests/i,
      /connection errors % of requests/i,
      /jobs\/s by outcome/i,
      /job duration .* by lens/i,
      /queue wait .* by lens/i,
      /queue depth by state/i,
      /worker count/i,
      /active jobs vs concurrency/i,
      /process connections vs budget/i,
      /pools/i,
      /pooling enabled/i,
      /deferred jobs/i,
      /circuit breaker state per tenant/i,
    ]) {
      expect(
        titles.some((t) => wanted.test(t)),
        String(wanted),
      ).toBe(true);
    }
    const workerCount = (await panelsOf()).find((p) => /worker count/i.test(p.title ?? ''));
    expect(exprsOf(workerCount!).join(' ')).toContain('count(up{job="lensfleet-worker"} == 1)');
  });
});

// ---------------------------------------------------------------------------------------------

/** The secrets docker-compose.yml requires (it has no default passwords). */
const COMPOSE_SECRETS = {
  REDIS_PASSWORD: 'r3dis-test-pw',
  DEMO_ADMIN_PASSWORD: 'adm1n-test-pw',
  DEMO_READER_PASSWORD: 'r3ader-test-pw',
  GRAFANA_ADMIN_PASSWORD: 'gr4fana-test-pw',
  LENSFLEET_UI_TOKEN: 'u1-test-token',
};

/** `docker-compose -f docker-compose.yml …` with exactly the given variables of the compose file set. */
function compose(args: readonly string[], vars: Record<string, string> = COMPOSE_SECRETS): Promise<string> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of [...Object.keys(COMPOSE_SECRETS), 'HOST_BIND', 'LENSFLEET_HTTP_TOKEN', 'LOG_LEVEL']) delete env[k];
  return tool('docker-compose', ['-f', 'docker-compose.yml', ...args], { ...env, ...vars });
}

/** The block of one service in `docker-compose config` output. */
const serviceBlock = (resolved: string, name: string) => new RegExp(`\\n {2}${name}:\\n((?: {4}.*\\n| *\\n)*)`).exec(resolved)?.[1] ?? '';

describe('docker compose', () => {
  it('docker-compose.yml is valid (docker-compose config -q) with its secrets set', async () => {
    await compose(['config', '-q']);
  });

  it.each(Object.keys(COMPOSE_SECRETS))('refuses to run without %s, naming it (no default password)', async (name) => {
    const others = Object.fromEntries(Object.entries(COMPOSE_SECRETS).filter(([k]) => k !== name));
    await expect(compose(['config', '-q'], others)).rejects.toThrow(new RegExp(`set ${name}\\b`));
  });

  it('holds no password itself: the old demo defaults are gone', async () => {
    const file = await text('docker-compose.yml');
    for (const old of ['lensfleet-reader', 'lensfleet-admin', ':-admin}']) expect(file).not.toContain(old);
  });

  it('publishes ports on 127.0.0.1 only (HOST_BIND overrides), and never a worker port', async () => {
    const resolved = await compose(['config']);
    const published = [...resolved.matchAll(/^ {4}ports:\n((?: {4}- .*\n)+)/gm)].flatMap((m) =>
      m[1]!
        .trim()
        .split('\n')
        .map((l) => l.replace(/^- /, '').trim()),
    );
    expect(published.sort()).toEqual(['127.0.0.1:3000:3000/tcp', '127.0.0.1:6379:6379/tcp', '127.0.0.1:9090:9090/tcp', '127.0.0.1:9465:9465/tcp']);
    const everywhere = await compose(['config'], { ...COMPOSE_SECRETS, HOST_BIND: '0.0.0.0' });
    expect(everywhere).toContain('0.0.0.0:9090:9090/tcp');
  });

  it('the worker’s stop_grace_period outlasts a drain: 2 × LENSFLEET_SHUTDOWN_TIMEOUT_MS + 10 s', async () => {
    const worker = serviceBlock(await compose(['config']), 'worker');
    const shutdownMs = Number(/LENSFLEET_SHUTDOWN_TIMEOUT_MS: '?(\d+)/.exec(worker)?.[1] ?? PROCESS_SETTINGS.shutdownTimeoutMs.default);
    const grace = /stop_grace_period: (\d+)s/.exec(worker)?.[1];
    expect(Number(grace)).toBeGreaterThanOrEqual((2 * shutdownMs) / 1000 + 10);
  });

  it('Prometheus runs without --web.enable-lifecycle (anyone reaching the port could shut it down)', async () => {
    const resolved = await compose(['config']);
    expect(serviceBlock(resolved, 'prometheus')).toContain('--config.file=/etc/prometheus/prometheus.yml');
    expect(resolved).not.toContain('enable-lifecycle');
  });

  it('Redis requires the password from the environment; the worker and the healthcheck pass it', async () => {
    const resolved = await compose(['config']);
    const redis = serviceBlock(resolved, 'redis');
    expect(redis).toMatch(/--requirepass "\$\$REDIS_PASSWORD"/);
    expect(redis).toMatch(/REDISCLI_AUTH="\$\$REDIS_PASSWORD" redis-cli ping/);
    expect(redis).toContain(`REDIS_PASSWORD: ${COMPOSE_SECRETS.REDIS_PASSWORD}`);
    const worker = serviceBlock(resolved, 'worker');
    expect(worker).toContain(`REDIS_URL: redis://:${COMPOSE_SECRETS.REDIS_PASSWORD}@redis:6379`);
    expect(worker).toContain(`lensfleet_reader:${COMPOSE_SECRETS.DEMO_READER_PASSWORD}@tenant_a_db`);
    expect(serviceBlock(resolved, 'grafana')).toContain(`GF_SECURITY_ADMIN_PASSWORD: ${COMPOSE_SECRETS.GRAFANA_ADMIN_PASSWORD}`);
  });

  it('defines the demo services, and workers can be scaled (no host port, no container name)', async () => {
    const services = (await compose(['config', '--services'])).split('\n').filter(Boolean);
    expect(services.sort()).toEqual(['grafana', 'prometheus', 'redis', 'tenant_a_db', 'tenant_b_db', 'ui', 'worker']);
    const resolved = await compose(['config']);
    const worker = serviceBlock(resolved, 'worker');
    expect(worker).toContain('LENSFLEET_TENANTS: tenant_a,tenant_b');
    expect(worker).toMatch(/tenant_a_DATABASE_URL: postgres:\/\/[^@\s]+@tenant_a_db:5432\//);
    expect(worker).toMatch(/tenant_b_DATABASE_URL: postgres:\/\/[^@\s]+@tenant_b_db:5432\//);
    expect(worker).toMatch(/PORT: '?"?9464/);
    expect(worker).not.toMatch(/^\s{4}(ports|container_name):/m);
  });

  it('runs the queue UI from the worker image (the Procfile’s ui), with its token from the environment, on the port the image’s healthcheck asks', async () => {
    const resolved = await compose(['config']);
    const ui = serviceBlock(resolved, 'ui');
    const procfileUi = /^ui: (.+)$/m.exec(await text('Procfile'))![1]!.split(' ');
    expect(ui).toContain(`command:\n${procfileUi.map((w) => `    - ${w}`).join('\n')}`);
    expect(ui).toContain('image: lensfleet-worker:local');
    expect(ui).toContain(`LENSFLEET_UI_TOKEN: ${COMPOSE_SECRETS.LENSFLEET_UI_TOKEN}`);
    expect(ui).toContain(`REDIS_URL: redis://:${COMPOSE_SECRETS.REDIS_PASSWORD}@redis:6379`);
    const uiPort = /LENSFLEET_UI_PORT: "?'?(\d+)/.exec(ui)?.[1];
    expect(uiPort).toBeDefined();
    expect(/\bPORT: "?'?(\d+)/.exec(ui.replace(/LENSFLEET_UI_PORT[^\n]*/, ''))?.[1]).toBe(uiPort);
    expect(await text('Dockerfile')).toContain("process.env.PORT || 9464) + '/health'");
  });

  it('wires Grafana to Prometheus and the dashboard directory consistently', async () => {
    const compose = await text('docker-compose.yml');
    const datasource = await text('deploy/grafana/provisioning/datasources/prometheus.yml');
    const provider = await text('deploy/grafana/provisioning/dashboards/lensfleet.yml');
    expect(datasource).toMatch(/uid:\s*prometheus\b/);
    expect(datasource).toMatch(/url:\s*http:\/\/prometheus:9090/);
    expect(provider).toMatch(/path:\s*\/var\/lib\/grafana\/dashboards\b/);
    expect(compose).toContain('./deploy/grafana/dashboards/:/var/lib/grafana/dashboards/');
    expect(compose).toContain('./deploy/prometheus/:/etc/prometheus/');
    expect(compose).toContain('./deploy/postgres/init/:/docker-entrypoint-initdb.d/');
    expect(compose).toMatch(/GF_AUTH_ANONYMOUS_ENABLED:\s*"true"/);
  });

  it('builds the worker image on an exact release of the LTS line CI tests, installing without root or install scripts', async () => {
    const dockerfile = await text('Dockerfile');
    const image = /^ARG NODE_IMAGE=node:(\d+)\.\d+\.\d+-bookworm-slim(@sha256:[0-9a-f]{64})?$/m.exec(dockerfile);
    expect(image, 'ARG NODE_IMAGE=node:<major>.<minor>.<patch>-bookworm-slim').not.toBeNull();
    expect(dockerfile.match(/^FROM .*/gm)).toEqual(['FROM ${NODE_IMAGE} AS build', 'FROM ${NODE_IMAGE}']);
    const ciLts = /^NODE_LTS=(\d+)$/m.exec(await text('.ci/run'))?.[1];
    expect(ciLts, ".ci/run tests the image's Node major").toBe(image![1]);
    // every npm ci runs as the unprivileged user, with install scripts off; the runtime stage runs no npm at all
    const [build, runtime] = dockerfile.split(/^FROM \$\{NODE_IMAGE\}$/m) as [string, string];
    expect(build.indexOf('USER node')).toBeGreaterThan(-1);
    expect(build.indexOf('USER node')).toBeLessThan(build.indexOf('npm ci'));
    for (const m of build.matchAll(/npm ci[^\n&]*/g)) expect(m[0]).toContain('--ignore-scripts');
    expect(runtime).not.toMatch(/\bnpm\b/);
    expect(runtime).toMatch(/^USER node$/m);
    const pkg = JSON.parse(await text('package.json')) as { engines?: { node?: string } };
    expect(pkg.engines?.node).toBe('^20.19.0 || >=22.12.0');
  });

  it('builds a worker image that runs the Procfile process type', async () => {
    const dockerfile = await text('Dockerfile');
    expect(dockerfile).toContain('CMD ["node", "dist/workers/lens-worker.js"]');
    const pkg = JSON.parse(await text('package.json')) as { scripts?: Record<string, string> };
    expect(pkg.scripts?.worker).toBe('node dist/workers/lens-worker.js');
  });
});

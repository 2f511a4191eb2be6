/**
 * Every state of every endpoint the README lists, on the HTTP server alone with fake sources (the
 * fakes are the point: each state is set directly): /metrics as its source gives it, /health
 * always 200, /ready 200 or 503 with the reasons, /pools, 404 for anything else, 500 (and still
 * serving) when a source fails, and a close that does not wait for idle keep-alive connections.
 * The token, methods and bounds are in http-surface.test.ts; readiness against a real Redis in
 * service.test.ts.
 */
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { describe, expect, it, onTestFinished } from 'vitest';
import { startHttpServer, type HttpSources } from '../src/http.js';
import type { PoolStats } from '../src/pool/tenant-pool.js';
import { Secret } from '../src/secret.js';
import { LogCapture } from './support/harness.js';

interface State {
  ready: { ready: boolean; reasons: string[] };
  fail?: 'metrics' | 'ready';
}

async function serve(state: State, opts: { host?: string; token?: string } = {}) {
  const logs = new LogCapture();
  const sources: HttpSources = {
    metrics: async () => {
      if (state.fail === 'metrics') throw new Error('registry broke');
      return { contentType: 'text/plain; version=0.0.4; charset=utf-8', body: '# HELP lensfleet_up x\nlensfleet_up 1\n' };
    },
    poolStats: () => [
      { tenant: 'yA', key: 'yA:service', size: 2 } as unknown as PoolStats,
      { tenant: 'yB', key: 'yB:service', size: 0 } as unknown as PoolStats,
    ],
    breakers: () => [
      { tenant: 'yB', state: 'open', since: '2026-01-01T00:00:00.000Z', failures: 5, coolDownMs: 5000, probeInMs: 1200 },
      { tenant: 'yGone', state: 'half_open', since: '2026-01-01T00:00:01.000Z', failures: 7, coolDownMs: 10000 },
    ],
    poolKeys: () => ['yA:service', 'yB:service'],
    ready: async () => {
      if (state.fail === 'ready') throw new Error('probe broke');
      return state.ready;
    },
    info: () => ({ pid: 4242, queue: 'q', draining: false }),
  };
  const server = await startHttpServer(sources, {
    port: 0,
    host: opts.host ?? '127.0.0.1',
    logger: logs.logger,
    ...(opts.token ? { token: new Secret(opts.token) } : {}),
  });
  onTestFinished(() => server.close());
  const get = async (path: string, init: { host?: string; headers?: Record<string, string>; method?: string } = {}) => {
    const r = await fetch(`http://${init.host ?? '127.0.0.1'}:${server.port}${path}`, { headers: init.headers ?? {}, method: init.method ?? 'GET' });
    const text = await r.text();
    return { status: r.status, type: r.headers.get('content-type'), cache: r.headers.get('cache-control'), text, json: () => JSON.parse(text) as unknown };
  };
  return { server, get, logs };
}

describe('endpoint states', () => {
  it('/metrics: 200 with the source’s content type and text', async () => {
    const { get } = await serve({ ready: { ready: true, reasons: [] } });
    const r = await get('/metrics');
    expect(r).toMatchObject({ status: 200, type: 'text/plain; version=0.0.4; charset=utf-8', text: '# HELP lensfleet_up x\nlensfleet_up 1\n' });
  });

  it('/health: 200 "healthy" with the process info and the pools, whatever readiness says', async () => {
    const { get } = await serve({ ready: { ready: false, reasons: ['draining'] } });
    const r = await get('/health');
    expect(r.status).toBe(200);
    expect(r.type).toBe('application/json; charset=utf-8');
    expect(r.cache).toBe('no-store');
    expect(r.json()).toEqual({
      status: 'healthy',
      pid: 4242,
      queue: 'q',
      draining: false,
      connection_pools: { active_pools: 2, pool_keys: ['yA:service', 'yB:service'] },
    });
  });

  it('/ready: 200 with no reasons when ready; 503 with the reasons when not', async () => {
    const state: State = { ready: { ready: true, reasons: [] } };
    const { get } = await serve(state);
    expect(await get('/ready')).toMatchObject({ status: 200, cache: 'no-store' });
    expect((await get('/ready')).json()).toEqual({ ready: true, reasons: [] });
    state.ready = { ready: false, reasons: ['draining', 'redis reconnecting'] };
    const r = await get('/ready');
    expect(r.status).toBe(503);
    expect(r.json()).toEqual({ ready: false, reasons: ['draining', 'redis reconnecting'] });
    // the query string is not part of the path
    expect((await get('/ready?probe=k8s')).status).toBe(503);
  });

  it('/pools: 200 with the stats of every pool and its tenant’s circuit breaker, and every breaker not closed (pool or not)', async () => {
    const { get } = await serve({ ready: { ready: true, reasons: [] } });
    const r = await get('/pools');
    expect(r.status).toBe(200);
    expect(r.json()).toEqual({
      pools: [
        { tenant: 'yA', key: 'yA:service', size: 2, breaker: { state: 'closed', failures: 0 } },
        { tenant: 'yB', key: 'yB:service', size: 0, breaker: { state: 'open', since: '2026-01-01T00:00:00.000Z', failures: 5 } },
      ],
      breakers: [
        { tenant: 'yB', state: 'open', since: '2026-01-01T00:00:00.000Z', failures: 5, coolDownMs: 5000, probeInMs: 1200 },
        { tenant: 'yGone', state: 'half_open', since: '2026-01-01T00:00:01.000Z', failures: 7, coolDownMs: 10000 },
      ],
    });
  });

  it('anything else: 404 listing the endpoints', async () => {
    const { get } = await serve({ ready: { ready: true, reasons: [] } });
    for (const path of ['/', '/metric', '/ready/', '/health/x', '/POOLS']) {
      const r = await get(path);
      expect(r.status, path).toBe(404);
      expect(r.json()).toEqual({ error: 'not found', endpoints: ['/metrics', '/health', '/ready', '/pools'] });
    }
  });

  it('a source that fails: 500 without its message, logged, and the server keeps serving', async () => {
    const state: State = { ready: { ready: true, reasons: [] }, fail: 'metrics' };
    const { get, logs } = await serve(state);
    const r = await get('/metrics');
    expect(r.status).toBe(500);
    expect(r.json()).toEqual({ error: 'internal error' });
    expect(r.text).not.toContain('registry broke');
    state.fail = 'ready';
    expect((await get('/ready')).status).toBe(500);
    expect(logs.find((e) => e.msg === 'http handler failed').map((e) => e.path)).toEqual(['/metrics', '/ready']);
    state.fail = undefined;
    expect((await get('/metrics')).status).toBe(200);
  });
});

describe('who may see tenant detail', () => {
  const TOKEN = 'a-token-of-sixteen-or-more';

  it('a bearer token: the scheme in any case, spaces around the token ignored; anything else refused with 401', async () => {
    const { get } = await serve({ ready: { ready: true, reasons: [] } }, { token: TOKEN });
    const pools = (authorization?: string) => get('/pools', { headers: authorization === undefined ? {} : { authorization } }).then((r) => r.status);
    expect(await pools(`Bearer ${TOKEN}`)).toBe(200);
    expect(await pools(`bearer ${TOKEN}`)).toBe(200);
    expect(await pools(`Bearer   ${TOKEN}  `)).toBe(200);
    for (const refused of [undefined, '', 'Bearer', `Basic ${TOKEN}`, `xBearer ${TOKEN}`, `Bearer ${TOKEN}x`, `Bearer x${TOKEN}`, TOKEN]) {
      expect(await pools(refused), String(refused)).toBe(401);
    }
    const r = await get('/pools');
    expect(r.json()).toEqual({ error: 'tenant detail needs Authorization: Bearer <LENSFLEET_HTTP_TOKEN>' });
    // /health still answers, without the pool keys
    expect((await get('/health')).json()).toMatchObject({ connection_pools: { active_pools: 2 } });
    expect((await get('/health')).text).not.toContain('yA:service');
  });

  it('without a token: loopback clients over IPv4, IPv6 and IPv4-mapped IPv6 see tenant detail', async () => {
    const { get } = await serve({ ready: { ready: true, reasons: [] } }, { host: '::' });
    expect((await get('/pools', { host: '127.0.0.1' })).status).toBe(200); // seen as ::ffff:127.0.0.1
    expect((await get('/pools', { host: '[::1]' })).status).toBe(200);
    expect((await get('/health', { host: '[::1]' })).json()).toMatchObject({ connection_pools: { pool_keys: ['yA:service', 'yB:service'] } });
  });

  it('methods other than GET and HEAD: 405 with a JSON reason', async () => {
    const { get } = await serve({ ready: { ready: true, reasons: [] } });
    const r = await get('/ready', { method: 'DELETE' });
    expect(r.status).toBe(405);
    expect(r.json()).toEqual({ error: 'method not allowed' });
  });
});

describe('closing', () => {
  it('close() returns the same promise when called twice and does not wait for an idle keep-alive connection', async () => {
    const { server } = await serve({ ready: { ready: true, reasons: [] } });
    const agent = new http.Agent({ keepAlive: true });
    onTestFinished(() => agent.destroy());
    await new Promise<void>((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port: server.port, path: '/health', agent }, (res) => {
          res.resume();
          res.on('end', resolve);
        })
        .on('error', reject);
    });
    const started = performance.now();
    const first = server.close();
    expect(server.close()).toBe(first);
    await first;
    // the keep-alive timeout is 65 s: a close that waited for it would take that long
    expect(performance.now() - started).toBeLessThan(5000);
  });
});

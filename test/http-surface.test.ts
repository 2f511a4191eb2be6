/**
 * The HTTP surface: /metrics, /health and /ready stay open to scrapers and probes; tenant detail
 * (pool keys in /health, all of /pools) needs the bearer token, or comes from loopback when no
 * token is configured; only GET/HEAD are answered; connections, header time and request time are
 * bounded; the queue depth in /metrics is read from Redis at most once per cache interval.
 */
import net from 'node:net';
import os from 'node:os';
import { Queue } from 'bullmq';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { startHttpServer, type HttpServerOptions, type HttpSources } from '../src/http.js';
import type { PoolStats } from '../src/pool/tenant-pool.js';
import { Secret } from '../src/secret.js';
import { createTenants, redisUrl, startTestWorker, uniqueId, waitFor } from './support/harness.js';

const TOKEN = 'test-token-0123456789abcdef';
const KEY = 'yTENANT_SECRET_ID:service';

const sources: HttpSources = {
  metrics: async () => ({ contentType: 'text/plain; version=0.0.4', body: 'lensfleet_up 1\n' }),
  poolStats: () => [{ tenant: 'yTENANT_SECRET_ID', key: KEY } as unknown as PoolStats],
  poolKeys: () => [KEY],
  ready: async () => ({ ready: true, reasons: [] }),
  info: () => ({ pid: process.pid, tenants: 1 }),
};

async function serve(opts: Partial<HttpServerOptions> = {}) {
  const server = await startHttpServer(sources, { port: 0, host: '127.0.0.1', logger: pino({ level: 'silent' }), ...opts });
  onTestFinished(() => server.close());
  return { server, url: (path: string, host = '127.0.0.1') => `http://${host}:${server.port}${path}` };
}

/** A raw connection: what the server sends back, and when it closed. */
function rawConnection(port: number, host = '127.0.0.1') {
  const socket = net.connect(port, host);
  let received = '';
  let closedAt: number | undefined;
  socket.on('data', (d: Buffer) => (received += d.toString()));
  socket.on('error', () => {});
  socket.on('close', () => (closedAt = Date.now()));
  onTestFinished(() => {
    socket.destroy();
  });
  return {
    socket,
    received: () => received,
    closed: () => closedAt,
    connected: new Promise<void>((resolve) => socket.once('connect', () => resolve())),
  };
}

/** The JSON bodies of /health and /pools, as far as these tests read them. */
const body = (r: Response) => r.json() as Promise<{ connection_pools?: { active_pools: number; pool_keys?: string[] }; pools?: { key: string }[] }>;

const externalAddress = Object.values(os.networkInterfaces())
  .flat()
  .find((i) => i && !i.internal && i.family === 'IPv4')?.address;

describe('open endpoints and tenant detail', () => {
  it('with a token: /metrics, /health, /ready answer without it; /pools and pool keys need it', async () => {
    const { url } = await serve({ token: new Secret(TOKEN) });
    for (const path of ['/metrics', '/health', '/ready']) expect((await fetch(url(path))).status, path).toBe(200);

    const health = await body(await fetch(url('/health')));
    expect(health.connection_pools).toEqual({ active_pools: 1 });
    expect(JSON.stringify(health)).not.toContain('yTENANT_SECRET_ID');

    const refused = await fetch(url('/pools'));
    expect(refused.status).toBe(401);
    expect(refused.headers.get('www-authenticate')).toBe('Bearer');
    expect(await refused.text()).not.toContain('yTENANT_SECRET_ID');
    for (const wrong of [`Bearer ${TOKEN.slice(0, -1)}`, `Bearer ${TOKEN}x`, `Basic ${TOKEN}`, TOKEN, 'Bearer ']) {
      expect((await fetch(url('/pools'), { headers: { authorization: wrong } })).status, wrong).toBe(401);
    }

    const auth = { authorization: `Bearer ${TOKEN}` };
    const pools = await fetch(url('/pools'), { headers: auth });
    expect(pools.status).toBe(200);
    expect((await body(pools)).pools?.[0]?.key).toBe(KEY);
    expect((await body(await fetch(url('/health'), { headers: { authorization: `bearer  ${TOKEN}` } }))).connection_pools).toEqual({
      active_pools: 1,
      pool_keys: [KEY],
    });
  });

  it('without a token: tenant detail is served to loopback clients', async () => {
    const { url } = await serve();
    expect((await fetch(url('/pools'))).status).toBe(200);
    expect((await body(await fetch(url('/health')))).connection_pools?.pool_keys).toEqual([KEY]);
  });

  it.runIf(externalAddress !== undefined)('without a token: a client on another interface gets /metrics and /health, not tenant detail (403)', async () => {
    const { url } = await serve({ host: '0.0.0.0' });
    const host = externalAddress!;
    expect((await fetch(url('/metrics', host))).status).toBe(200);
    const health = await body(await fetch(url('/health', host)));
    expect(health.connection_pools).toEqual({ active_pools: 1 });
    const pools = await fetch(url('/pools', host));
    expect(pools.status).toBe(403);
    expect(await pools.text()).toContain('LENSFLEET_HTTP_TOKEN');
  });

  it('a token is honoured from any interface', async () => {
    const { url } = await serve({ host: '0.0.0.0', token: new Secret(TOKEN) });
    const host = externalAddress ?? '127.0.0.1';
    expect((await fetch(url('/pools', host), { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(200);
  });
});

describe('methods', () => {
  it('refuses anything but GET and HEAD with 405 and Allow', async () => {
    const { url } = await serve();
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']) {
      const r = await fetch(url('/metrics'), { method });
      expect(r.status, method).toBe(405);
      expect(r.headers.get('allow')).toBe('GET, HEAD');
    }
    const head = await fetch(url('/health'), { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
  });
});

describe('bounds', () => {
  const request = 'GET /health HTTP/1.1\r\nhost: x\r\n\r\n';

  it('connections beyond LENSFLEET_HTTP_MAX_CONNECTIONS are closed on arrival; served again once one closes', async () => {
    const { server } = await serve({ maxConnections: 2 });
    const kept = [rawConnection(server.port), rawConnection(server.port)];
    for (const c of kept) {
      await c.connected;
      c.socket.write(request);
    }
    // both served (so the server has counted them), and kept open (keep-alive)
    await waitFor('both kept connections served', () => kept.every((c) => c.received().includes('HTTP/1.1 200')), 10_000, 10);
    const third = rawConnection(server.port);
    await third.connected;
    third.socket.write(request);
    await waitFor('the third connection to be closed', () => third.closed() !== undefined, 10_000, 10);
    expect(third.received()).toBe('');
    expect(kept.every((c) => c.closed() === undefined)).toBe(true);

    kept[0]!.socket.destroy();
    await waitFor('a new connection to be served', async () => (await fetch(`http://127.0.0.1:${server.port}/health`)).status === 200, 10_000, 50);
  });

  it('headers not complete within LENSFLEET_HTTP_HEADERS_TIMEOUT_MS: 408 and the connection closes', async () => {
    const { server } = await serve({ headersTimeoutMs: 300, requestTimeoutMs: 600 });
    const slow = rawConnection(server.port);
    await slow.connected;
    const t0 = Date.now();
    slow.socket.write('GET /health HTTP/1.1\r\nhost: x\r\n'); // and never the blank line
    await waitFor('the slow connection to be closed', () => slow.closed() !== undefined, 10_000, 10);
    expect(slow.received()).toMatch(/^HTTP\/1\.1 408/);
    // Node's default would have waited 60 s
    expect(slow.closed()! - t0).toBeLessThan(5000);
  });

  it('a body not complete within LENSFLEET_HTTP_REQUEST_TIMEOUT_MS: 408 and the connection closes', async () => {
    const { server } = await serve({ headersTimeoutMs: 300, requestTimeoutMs: 600 });
    const slow = rawConnection(server.port);
    await slow.connected;
    const t0 = Date.now();
    slow.socket.write('GET /health HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nabc'); // 97 bytes short
    await waitFor('the slow connection to be closed', () => slow.closed() !== undefined, 10_000, 10);
    expect(slow.received()).toMatch(/HTTP\/1\.1 408/);
    expect(slow.closed()! - t0).toBeLessThan(5000);
  });

  it('a malformed request gets 400, and the server keeps serving', async () => {
    const { server, url } = await serve();
    const bad = rawConnection(server.port);
    await bad.connected;
    bad.socket.write('NOT HTTP AT ALL\r\n\r\n');
    await waitFor('the bad connection to be answered', () => bad.closed() !== undefined, 10_000, 10);
    expect(bad.received()).toMatch(/^HTTP\/1\.1 400/);
    expect((await fetch(url('/health'))).status).toBe(200);
  });
});

describe('queue depth in /metrics', () => {
  let tenants: Awaited<ReturnType<typeof createTenants>>;
  beforeAll(async () => {
    tenants = await createTenants([uniqueId('yHttp')], 5);
  });
  afterAll(async () => {
    await tenants?.drop();
  });

  /** lensfleet_queue_jobs{state="failed"} after one failed job, as the worker's /metrics shows it before and after. */
  async function failedBeforeAndAfter(cacheMs: string): Promise<[number, number]> {
    const w = await startTestWorker({ env: tenants.env, concurrency: 1, settings: { LENSFLEET_METRICS_QUEUE_CACHE_MS: cacheMs } });
    const plain = new Queue(w.queueName, { connection: { url: redisUrl() } });
    onTestFinished(async () => {
      await plain.close();
      await w.close();
    });
    const failed = async () => {
      const text = await (await fetch(`http://127.0.0.1:${w.service.port}/metrics`)).text();
      const m = /^lensfleet_queue_jobs\{queue="[^"]+",state="failed"\} (\d+)$/m.exec(text);
      expect(m, 'lensfleet_queue_jobs{state="failed"} in /metrics').not.toBeNull();
      return Number(m![1]);
    };
    const before = await failed();
    const job = await plain.add('x', { v: 1, tenant: 'yNO_SUCH_TENANT', lens: 'receiving.recent' });
    await expect(job.waitUntilFinished(w.events, 10_000)).rejects.toThrow(/TENANT_NOT_FOUND/);
    return [before, await failed()];
  }

  it('cached for LENSFLEET_METRICS_QUEUE_CACHE_MS: a scrape within it reuses the last counts (no Redis round trip)', async () => {
    expect(await failedBeforeAndAfter('60000')).toEqual([0, 0]);
  });

  it('with 0, every scrape reads Redis', async () => {
    expect(await failedBeforeAndAfter('0')).toEqual([0, 1]);
  });
});

/**
 * Every pool error is classified by what it is, never by its message text (issue 11, item 3):
 * - CONNECT_TIMEOUT comes from the pool's own connect timer (both modes); a server error whose
 *   text says "timeout" is still CONNECTION_FAILED;
 * - an exhausted process budget is PROCESS_BUDGET_TIMEOUT, counted under its own error kind and
 *   logged with that code;
 * - a lost connection (pg's errors for it carry no code) is recognised by where the error came
 *   from — the connection's own 'error' event, or a release of a connection that had emitted
 *   one — and is QUERY_FAILED_TRANSIENT; the same text from anywhere else is not.
 * Real Postgres; fakes only where the fake is the point (a server that answers with a chosen
 * error, a proxy that can be cut).
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { DEFAULT_POOL_SETTINGS, type PoolSettings } from '../src/config.js';
import { classifyQueryError, LensfleetError } from '../src/errors.js';
import { executeLens } from '../src/execute.js';
import { defineLens } from '../src/lens.js';
import { ProcessBudget } from '../src/pool/budget.js';
import { PoolRegistry } from '../src/pool/registry.js';
import { TenantPool, type BudgetMember, type PoolEvent } from '../src/pool/tenant-pool.js';
import { Secret } from '../src/secret.js';
import type { PgTenant } from '../src/tenants.js';
import { createTenants, LogCapture, makeTestPool, sleep, uniqueId, waitFor } from './support/harness.js';

const TENANT = uniqueId('yPerr');
const OTHER = uniqueId('yPerrB');

let tenants: Awaited<ReturnType<typeof createTenants>>;
const url = (id: string) => tenants.env[`${id}_DATABASE_URL`]!;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  tenants = await createTenants([TENANT, OTHER], 5);
});
afterEach(async () => {
  await Promise.race([Promise.allSettled(cleanups.splice(0).map((c) => c())), sleep(5000)]);
});
afterAll(async () => {
  await tenants?.drop();
});

const errorOf = (p: Promise<unknown>): Promise<unknown> =>
  p.then(
    () => undefined,
    (e: unknown) => e,
  );

/** A TCP server that runs `onConnection` for each client (a fake Postgres). */
async function fakeServer(onConnection: (s: net.Socket) => void): Promise<{ url: string; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    onConnection(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const close = async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  };
  cleanups.push(close);
  return { url: `postgres://nobody:pw@127.0.0.1:${port}/none`, close };
}

/** A Postgres ErrorResponse message (protocol v3) with severity, SQLSTATE and text. */
function errorResponse(sqlstate: string, text: string): Buffer {
  const fields = Buffer.concat([
    Buffer.from(`SFATAL\0VFATAL\0C${sqlstate}\0M${text}\0`, 'utf8'),
    Buffer.from([0]), // end of fields
  ]);
  const head = Buffer.alloc(5);
  head.write('E', 0, 'ascii');
  head.writeInt32BE(4 + fields.length, 1);
  return Buffer.concat([head, fields]);
}

function pool(overrides: Partial<PoolSettings>, opts: { url?: string; pooling?: boolean } = {}) {
  const made = makeTestPool(TENANT, opts.url ?? url(TENANT), { minSize: 0, maxSize: 1, maxOverflow: 0, ...overrides }, 1, undefined, opts.pooling ?? true);
  cleanups.push(() => made.pool.close());
  return made;
}

const connectionErrors = (events: PoolEvent[]) => events.filter((e): e is Extract<PoolEvent, { type: 'connection_error' }> => e.type === 'connection_error');

describe('connect errors', () => {
  for (const pooling of [true, false]) {
    it(`pooling ${pooling}: a server that never answers fails with CONNECT_TIMEOUT after connectTimeoutMs (250), counted as connect_timeout, reported with that code`, async () => {
      const silent = await fakeServer((s) => s.resume());
      const { pool: p, events } = pool({ connectTimeoutMs: 250, acquireTimeoutMs: 5000 }, { url: silent.url, pooling });
      const started = performance.now();
      const err = await errorOf(p.acquire());
      const took = performance.now() - started;
      expect(err).toBeInstanceOf(LensfleetError);
      expect((err as LensfleetError).code).toBe('CONNECT_TIMEOUT');
      expect((err as LensfleetError).message).toContain('250 ms');
      expect(took).toBeGreaterThanOrEqual(230);
      expect(took).toBeLessThan(2000);
      expect(p.stats().connection_errors_total).toEqual({ connect_timeout: 1 });
      expect(connectionErrors(events)).toMatchObject([{ kind: 'connect_timeout', code: 'CONNECT_TIMEOUT' }]);
      expect(p.stats()).toMatchObject({ size: 0, opening: 0, waiting: 0 });
    });
  }

  it('a server error whose text says "timeout" is CONNECTION_FAILED (kind connect, its SQLSTATE as the cause), not CONNECT_TIMEOUT', async () => {
    const refusing = await fakeServer((s) => s.once('data', () => s.end(errorResponse('08006', 'timeout while waiting for a backend slot'))));
    const { pool: p, events } = pool({ connectTimeoutMs: 5000 }, { url: refusing.url });
    const err = await errorOf(p.acquire());
    expect((err as LensfleetError).code).toBe('CONNECTION_FAILED');
    expect((err as LensfleetError).message).toContain('08006');
    expect(p.stats().connection_errors_total).toEqual({ connect: 1 });
    expect(connectionErrors(events)).toMatchObject([{ kind: 'connect', code: 'CONNECTION_FAILED', cause: '08006' }]);
  });
});

describe('process budget exhaustion', () => {
  it('an acquire that finds the budget full fails with PROCESS_BUDGET_TIMEOUT, counted as process_budget_timeout (not connect)', async () => {
    const members = new Set<BudgetMember>();
    // Another tenant's pool holds the only slot and has nothing idle to give up.
    members.add({ tenant: OTHER, size: 1, idleCount: 0, busy: true, lastUsedAt: 0, evictIdle: async () => false });
    const budget = new ProcessBudget(1, members, new LogCapture().logger);
    const events: PoolEvent[] = [];
    const p = new TenantPool({
      tenant: TENANT,
      key: `${TENANT}:service`,
      databaseUrl: new Secret(url(TENANT)),
      settings: { ...DEFAULT_POOL_SETTINGS, minSize: 0, maxSize: 1, maxOverflow: 0, connectTimeoutMs: 300, acquireTimeoutMs: 5000 },
      max: 1,
      pooling: true,
      budget,
      onEvent: (e) => events.push(e),
    });
    members.add(p);
    cleanups.push(() => p.close());
    const err = await errorOf(p.acquire());
    expect(err).toBeInstanceOf(LensfleetError);
    expect((err as LensfleetError).code).toBe('PROCESS_BUDGET_TIMEOUT');
    expect((err as LensfleetError).retryable).toBe(true);
    expect(p.stats().connection_errors_total).toEqual({ process_budget_timeout: 1 });
    expect(connectionErrors(events)).toMatchObject([{ kind: 'process_budget_timeout', code: 'PROCESS_BUDGET_TIMEOUT' }]);
    expect(p.stats()).toMatchObject({ size: 0, opening: 0, connections_opened_total: 0 });
  });

  it('through the registry: the log line of the failure names the same code and kind', async () => {
    const logs = new LogCapture();
    const registry = new PoolRegistry({ concurrency: 2, processMaxConnections: 1, logger: logs.logger });
    cleanups.push(() => registry.close());
    const tenant = (id: string): PgTenant => ({
      id,
      backend: 'pg',
      databaseUrl: new Secret(url(id)),
      pool: { ...DEFAULT_POOL_SETTINGS, minSize: 0, connectTimeoutMs: 300 },
      pooling: true,
    });
    const a = await registry.get(tenant(OTHER));
    const held = await a.acquire();
    try {
      const b = await registry.get(tenant(TENANT));
      const err = await errorOf(b.acquire());
      expect((err as LensfleetError).code).toBe('PROCESS_BUDGET_TIMEOUT');
      const lines = logs.find((l) => l.msg !== undefined && String(l.msg).startsWith('connection error') && l.tenant === TENANT);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatchObject({ kind: 'process_budget_timeout', code: 'PROCESS_BUDGET_TIMEOUT' });
    } finally {
      a.release(held);
    }
  });
});

/** A TCP proxy to Postgres whose connections can be cut (the server side closes, as a failing network would). */
async function cuttableProxy(target: string): Promise<{ url: string; cut(): void }> {
  const t = new URL(target);
  const links = new Set<{ client: net.Socket; upstream: net.Socket }>();
  const proxy = await fakeServer((client) => {
    const upstream = net.connect(Number(t.port || 5432), t.hostname);
    const link = { client, upstream };
    links.add(link);
    upstream.on('error', () => {});
    client.pipe(upstream);
    upstream.pipe(client);
    const drop = () => {
      links.delete(link);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', drop);
    upstream.on('close', drop);
  });
  const u = new URL(target);
  u.port = new URL(proxy.url).port;
  u.hostname = '127.0.0.1';
  return {
    url: u.toString(),
    cut() {
      for (const l of links) {
        l.upstream.destroy();
        l.client.end(); // a FIN, no error code: what pg reports as "Connection terminated unexpectedly"
      }
    },
  };
}

const slow = defineLens({
  name: 'perr.slow',
  params: z.object({}),
  sql: () => ({ text: 'SELECT pg_sleep(5) AS slept', values: [] }),
});

describe('a lost connection', () => {
  it('a query in flight when the connection is cut: QUERY_FAILED_TRANSIENT (retried), although pg gives the error no code', async () => {
    const proxy = await cuttableProxy(url(TENANT));
    const { pool: p } = pool({ prePing: false }, { url: proxy.url });
    const running = errorOf(executeLens(p, slow, {}));
    await waitFor('the query to be running', () => p.stats().inUse === 1, 5000, 10);
    await sleep(50);
    proxy.cut();
    const err = (await running) as LensfleetError;
    expect(err).toBeInstanceOf(LensfleetError);
    expect(err.code).toBe('QUERY_FAILED_TRANSIENT');
    expect(err.retryable).toBe(true);
    expect((err.cause as { code?: unknown }).code).toBeUndefined();
    expect(p.stats().connection_errors_total).toEqual({ active: 1 });
    await waitFor('the dead connection to be closed', () => p.stats().size === 0, 3000, 10);
  });

  it('the error pg fails the query in flight with is the one the connection emitted: recognised before the connection is released too', async () => {
    const proxy = await cuttableProxy(url(TENANT));
    const { pool: p } = pool({ prePing: false }, { url: proxy.url });
    const client = await p.acquire();
    const running = errorOf(client.query('SELECT pg_sleep(5)'));
    await sleep(50);
    proxy.cut();
    const err = await running;
    try {
      expect(classifyQueryError(err, { tenant: TENANT }).code).toBe('QUERY_FAILED_TRANSIENT');
    } finally {
      p.release(client, err);
    }
  });

  it('a query sent after the connection was lost (pg fails it with a fresh error): released with it, QUERY_FAILED_TRANSIENT', async () => {
    const proxy = await cuttableProxy(url(TENANT));
    const { pool: p } = pool({ prePing: false }, { url: proxy.url });
    const client = await p.acquire();
    proxy.cut();
    await waitFor('the pool to see the loss', () => p.stats().connection_errors_total.active === 1, 3000, 10);
    const err = await errorOf(client.query('SELECT 1'));
    expect(err).toBeInstanceOf(Error);
    p.release(client, err);
    const typed = classifyQueryError(err, { tenant: TENANT });
    expect(typed.code).toBe('QUERY_FAILED_TRANSIENT');
  });

  it('the same words from anywhere else decide nothing: QUERY_FAILED (not retried)', async () => {
    for (const text of ['Connection terminated unexpectedly', 'Client has encountered a connection error and is not queryable', 'connection ended']) {
      expect(classifyQueryError(new Error(text), {}).code).toBe('QUERY_FAILED');
    }
    // and an error released with a healthy connection stays what it is
    const { pool: p } = pool({});
    const client = await p.acquire();
    const err = new Error('Connection terminated unexpectedly');
    p.release(client, err);
    expect(classifyQueryError(err, {}).code).toBe('QUERY_FAILED');
  });
});

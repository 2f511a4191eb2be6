/**
 * The operator's HTTP endpoints: GET /metrics (Prometheus text), /health (liveness: the process
 * answers), /ready (readiness: 503 while Redis is unreachable or the worker is draining), /pools
 * (stats per pool). Nothing here ever includes a secret: pool keys and stats hold none.
 *
 * `/metrics`, `/health` and `/ready` stay open, so scrapers and probes need no credentials.
 * Tenant detail — every pool key in `/health`, all of `/pools` — is served with a bearer token
 * (`LENSFLEET_HTTP_TOKEN`, compared in constant time) or, when none is configured, to loopback
 * clients only. The server is bounded: connections at once, time to send headers and the whole
 * request; only GET (and HEAD) are answered.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { BreakerSnapshot } from './breaker.js';
import type { PoolStats } from './pool/tenant-pool.js';
import type { Secret } from './secret.js';

export interface HttpSources {
  metrics(): Promise<{ contentType: string; body: string }>;
  poolStats(): PoolStats[];
  /** Tenants' circuit breakers that are not closed or have failures counted (a tenant missing here: closed). */
  breakers?(): readonly BreakerSnapshot[];
  poolKeys(): string[];
  ready(): Promise<{ ready: boolean; reasons: string[] }>;
  info(): Record<string, unknown>;
}

export interface HttpServerOptions {
  readonly port: number;
  readonly host: string;
  readonly logger: Logger;
  /** Bearer token for tenant detail; without one, tenant detail is served to loopback clients only. */
  readonly token?: Secret | undefined;
  /** Connections open at once; more are closed on arrival. @defaultValue 64 */
  readonly maxConnections?: number;
  /** Time for a request's headers to arrive (then 408). @defaultValue 5000 */
  readonly headersTimeoutMs?: number;
  /** Time for a whole request to arrive (then 408). @defaultValue 10000 */
  readonly requestTimeoutMs?: number;
}

export interface HttpServer {
  readonly port: number;
  close(): Promise<void>;
}

const ENDPOINTS = ['/metrics', '/health', '/ready', '/pools'];

export async function startHttpServer(sources: HttpSources, opts: HttpServerOptions): Promise<HttpServer> {
  const headersTimeout = opts.headersTimeoutMs ?? 5000;
  const requestTimeout = opts.requestTimeoutMs ?? 10_000;
  const mayDetail = detailGate(opts.token);

  const json = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', ...headers });
    res.end(JSON.stringify(body));
  };
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    // HEAD is GET without a body (curl -I, some probes); nothing here changes state.
    if (req.method !== 'GET' && req.method !== 'HEAD') return json(res, 405, { error: 'method not allowed' }, { allow: 'GET, HEAD' });
    const path = (req.url ?? '/').split('?')[0];
    switch (path) {
      case '/metrics': {
        const m = await sources.metrics();
        res.writeHead(200, { 'content-type': m.contentType });
        res.end(m.body);
        return;
      }
      case '/health': {
        const keys = sources.poolKeys();
        const pools = mayDetail(req) ? { active_pools: keys.length, pool_keys: keys } : { active_pools: keys.length };
        return json(res, 200, { status: 'healthy', ...sources.info(), connection_pools: pools });
      }
      case '/ready': {
        const r = await sources.ready();
        return json(res, r.ready ? 200 : 503, { ready: r.ready, reasons: r.reasons });
      }
      case '/pools':
        if (!mayDetail(req)) return refuseDetail(res, opts.token !== undefined, json);
        return json(res, 200, poolsBody(sources));
      default:
        return json(res, 404, { error: 'not found', endpoints: ENDPOINTS });
    }
  };
  const server: Server = createServer(
    {
      headersTimeout,
      requestTimeout,
      // Node checks those timeouts on this interval (30 s by default), so it bounds how late they fire.
      connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(headersTimeout / 2))),
    },
    (req, res) => {
      handle(req, res).catch((err: unknown) => {
        opts.logger.error({ err, path: (req.url ?? '').slice(0, 200) }, 'http handler failed');
        if (!res.headersSent) json(res, 500, { error: 'internal error' });
        else res.destroy();
      });
    },
  );
  server.maxConnections = opts.maxConnections ?? 64;
  // Longer than the load balancers' and Prometheus's idle timeouts, so they close first.
  server.keepAliveTimeout = 65_000;
  server.on('drop', (data?: { remoteAddress?: string }) => {
    opts.logger.warn({ maxConnections: server.maxConnections, remoteAddress: data?.remoteAddress }, 'http connection refused: too many open connections');
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    // Malformed requests and timeouts: answer if the socket still can, never crash.
    if (socket.writable && !socket.destroyed) {
      const status = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
      socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    } else socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  let closing: Promise<void> | undefined;
  return {
    port,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}

/** Whether a request may see tenant detail. */
function detailGate(token: Secret | undefined): (req: IncomingMessage) => boolean {
  if (token === undefined) return (req) => isLoopback(req.socket.remoteAddress);
  // Digests have one length whatever the input, so the comparison leaks neither content nor length.
  const expected = createHash('sha256').update(token.reveal()).digest();
  return (req) => {
    const header = req.headers.authorization;
    const m = header === undefined ? null : /^Bearer\s+(.+)$/i.exec(header);
    if (!m) return false;
    return timingSafeEqual(createHash('sha256').update(m[1]!.trim()).digest(), expected);
  };
}

function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return false;
  return address === '::1' || address.startsWith('127.') || address.startsWith('::ffff:127.');
}

function refuseDetail(
  res: ServerResponse,
  tokenConfigured: boolean,
  json: (res: ServerResponse, status: number, body: unknown, headers?: Record<string, string>) => void,
) {
  if (tokenConfigured) return json(res, 401, { error: 'tenant detail needs Authorization: Bearer <LENSFLEET_HTTP_TOKEN>' }, { 'www-authenticate': 'Bearer' });
  return json(res, 403, { error: 'tenant detail is served to loopback clients only; set LENSFLEET_HTTP_TOKEN to serve it to others with a token' });
}

/**
 * `/pools`: every pool with its tenant's circuit breaker, and every breaker that is not closed or
 * has failures counted, pool or not (a tenant whose database refuses connections may have none).
 */
function poolsBody(sources: HttpSources): { pools: unknown[]; breakers: readonly BreakerSnapshot[] } {
  const breakers = sources.breakers?.() ?? [];
  const byTenant = new Map(breakers.map((b) => [b.tenant, b]));
  const pools = sources.poolStats().map((p) => {
    const b = byTenant.get(p.tenant);
    return { ...p, breaker: b === undefined ? { state: 'closed', failures: 0 } : { state: b.state, since: b.since, failures: b.failures } };
  });
  return { pools, breakers };
}

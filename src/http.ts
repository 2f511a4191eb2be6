/**
 * The operator's HTTP endpoints: GET /metrics (Prometheus text), /health (liveness: the process
 * answers; lists active pools and their keys, as the guide's health check does), /ready
 * (readiness: 503 while Redis is unreachable or the worker is draining), /pools (stats per pool).
 * Nothing here ever includes a secret: pool keys and stats hold none.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { PoolStats } from './pool/tenant-pool.js';

export interface HttpSources {
  metrics(): Promise<{ contentType: string; body: string }>;
  poolStats(): PoolStats[];
  poolKeys(): string[];
  ready(): Promise<{ ready: boolean; reasons: string[] }>;
  info(): Record<string, unknown>;
}

export interface HttpServer {
  readonly port: number;
  close(): Promise<void>;
}

export async function startHttpServer(sources: HttpSources, opts: { port: number; host: string; logger: Logger }): Promise<HttpServer> {
  const json = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
    res.end(JSON.stringify(body));
  };
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return json(res, 405, { error: 'method not allowed' });
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
        return json(res, 200, { status: 'healthy', ...sources.info(), connection_pools: { active_pools: keys.length, pool_keys: keys } });
      }
      case '/ready': {
        const r = await sources.ready();
        return json(res, r.ready ? 200 : 503, { ready: r.ready, reasons: r.reasons });
      }
      case '/pools':
        return json(res, 200, { pools: sources.poolStats() });
      default:
        return json(res, 404, { error: 'not found', endpoints: ['/metrics', '/health', '/ready', '/pools'] });
    }
  };
  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      opts.logger.error({ err, url: req.url }, 'http handler failed');
      if (!res.headersSent) json(res, 500, { error: 'internal error' });
      else res.destroy();
    });
  });
  server.keepAliveTimeout = 65_000;
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

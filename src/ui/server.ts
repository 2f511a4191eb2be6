/**
 * The queue UI: bull-board for the lens queue, behind the gate (gate.ts), on a bounded HTTP
 * server. bull-board is served through its Hono adapter: Hono and @hono/node-server have no
 * dependencies of their own (express 5 has 28 direct ones), and the Node server stays ours, bounded
 * as the worker's endpoints are.
 *
 * `GET /health` answers without a token (a liveness probe needs none, and it says nothing about
 * the queue); everything else is bull-board's: the page at `/`, its API under `/api`.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { HonoAdapter } from '@bull-board/hono';
import { getRequestListener } from '@hono/node-server';
import { serveStatic } from '@hono/node-server/serve-static';
import { Queue } from 'bullmq';
import { Hono } from 'hono';
import type { Logger } from 'pino';
import { describeRedis, hangUp, prefixFor, redisConnection, safeRedisMessage } from '../redis.js';
import type { UiConfig } from './config.js';
import { createGate } from './gate.js';

/** Bounds of the server, as the worker's endpoints (src/http.ts): nobody holds it open. */
const MAX_CONNECTIONS = 64;
const HEADERS_TIMEOUT_MS = 5000;
const REQUEST_TIMEOUT_MS = 10_000;

export interface UiServer {
  readonly port: number;
  /** Stop serving, then close the queue and its Redis connection; the same promise when called twice. */
  close(): Promise<void>;
}

export async function startUiServer(config: UiConfig, logger: Logger): Promise<UiServer> {
  // Short commands that fail at once while Redis is away: the page shows the error and the next
  // poll tries again, instead of requests piling up behind an offline queue.
  const redis = redisConnection(config.redis, 'commands', { connectionName: 'lensfleet-ui' });
  let redisDown = false;
  redis.on('error', (err) => {
    if (!redisDown) logger.warn({ redis: describeRedis(config.redis), msg: safeRedisMessage(err, config.redis) }, 'queue UI: Redis connection error');
    redisDown = true;
  });
  redis.on('ready', () => {
    redisDown = false;
  });
  // The workers' prefix: `bull`, or the queue's hash tag on a Cluster (queues/contract.ts).
  const queue = new Queue(config.queueName, { connection: redis, prefix: prefixFor(config.redis, config.queueName) });
  queue.on('error', () => {}); // reported once by the connection's listener above

  const serverAdapter = new HonoAdapter(serveStatic);
  serverAdapter.setBasePath('/');
  createBullBoard({
    queues: [
      new BullMQAdapter(queue, {
        readOnlyMode: !config.readWrite,
        allowRetries: config.readWrite,
        // Said on the page, so nobody wonders why there is no retry button.
        description: config.readWrite
          ? 'lens queries · read-write: retry and remove'
          : 'lens queries · read-only (LENSFLEET_UI_READ_WRITE=on to retry and remove)',
      }),
    ],
    serverAdapter,
    options: { uiConfig: { boardTitle: 'lensfleet', hideDocsLink: true } },
  });
  const app = new Hono();
  app.get('/health', (c) => c.json({ status: 'healthy', queue: config.queueName, readOnly: !config.readWrite }));
  app.use('*', createGate({ token: config.token, readWrite: config.readWrite, logger }));
  app.route('/', serverAdapter.registerPlugin());
  app.onError((err, c) => {
    logger.error({ msg: safeRedisMessage(err, config.redis), path: c.req.path.slice(0, 200) }, 'queue UI: request failed');
    return c.json({ error: 'internal error' }, 500);
  });

  const server: Server = createServer(
    {
      headersTimeout: HEADERS_TIMEOUT_MS,
      requestTimeout: REQUEST_TIMEOUT_MS,
      connectionsCheckingInterval: 1000,
    },
    getRequestListener(app.fetch),
  );
  server.maxConnections = MAX_CONNECTIONS;
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    // Malformed requests and timeouts: answer if the socket still can, never crash.
    if (socket.writable && !socket.destroyed) {
      const status = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
      socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    } else socket.destroy();
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.port, config.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    await queue.close().catch(() => {});
    await hangUp(redis);
    throw err;
  }
  const port = (server.address() as AddressInfo).port;
  logger.info(
    { host: config.host, port, queue: config.queueName, redis: describeRedis(config.redis), readOnly: !config.readWrite, token: config.token !== undefined },
    `queue UI on http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}/`,
  );
  let closing: Promise<void> | undefined;
  return {
    port,
    close() {
      closing ??= (async () => {
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
        await queue.close().catch(() => {});
        // BullMQ does not close a connection it was handed.
        await hangUp(redis);
      })();
      return closing;
    },
  };
}

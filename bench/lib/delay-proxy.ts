/**
 * A TCP proxy that delays every chunk by a fixed time in each direction, preserving order: a
 * stand-in for a database across a network (10 ms each way ≈ a 20 ms round trip). It forwards
 * bytes, so TLS and the Postgres protocol pass through untouched.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';

export interface DelayProxyOptions {
  readonly targetHost: string;
  readonly targetPort: number;
  /** Delay added to each chunk, each way. */
  readonly delayMs: number;
  /** @defaultValue 0 (any free port) */
  readonly listenPort?: number;
}

export interface DelayProxy {
  readonly port: number;
  close(): Promise<void>;
}

/** Bytes queued in one direction above which the reading side is paused. */
const HIGH_WATER_BYTES = 4 * 1024 * 1024;

/** Forward src → dst, each chunk `delayMs` after it arrived, in order. */
function pipeDelayed(src: net.Socket, dst: net.Socket, delayMs: number): void {
  const queue: { at: number; chunk: Buffer }[] = [];
  let queuedBytes = 0;
  let timer: NodeJS.Timeout | undefined;
  let ended = false;

  const flush = (): void => {
    timer = undefined;
    const now = performance.now();
    while (queue.length > 0 && queue[0]!.at <= now) {
      const { chunk } = queue.shift()!;
      queuedBytes -= chunk.length;
      if (!dst.destroyed) dst.write(chunk);
    }
    if (queuedBytes < HIGH_WATER_BYTES && src.isPaused()) src.resume();
    if (queue.length > 0) schedule();
    else if (ended && !dst.destroyed) dst.end();
  };
  const schedule = (): void => {
    if (timer !== undefined) return;
    const next = queue[0];
    timer = setTimeout(flush, next ? Math.max(0, next.at - performance.now()) : 0);
  };

  src.on('data', (chunk: Buffer) => {
    queue.push({ at: performance.now() + delayMs, chunk });
    queuedBytes += chunk.length;
    if (queuedBytes >= HIGH_WATER_BYTES) src.pause();
    schedule();
  });
  src.on('end', () => {
    ended = true;
    schedule();
  });
}

export function startDelayProxy(opts: DelayProxyOptions): Promise<DelayProxy> {
  const sockets = new Set<net.Socket>();
  // Half-open sockets: a FIN is forwarded after the delay like any other byte, not at once.
  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    const upstream = net.connect({ host: opts.targetHost, port: opts.targetPort, allowHalfOpen: true });
    for (const s of [client, upstream]) {
      s.setNoDelay(true);
      sockets.add(s);
      s.on('error', () => {});
      // A side that closed abruptly (reset, error) takes the other one down with it.
      s.on('close', (hadError) => {
        sockets.delete(s);
        if (hadError) {
          client.destroy();
          upstream.destroy();
        }
      });
    }
    pipeDelayed(client, upstream, opts.delayMs);
    pipeDelayed(upstream, client, opts.delayMs);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.listenPort ?? 0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      let closing: Promise<void> | undefined;
      resolve({
        port,
        close: () =>
          (closing ??= new Promise<void>((done) => {
            for (const s of sockets) s.destroy();
            server.close(() => done());
          })),
      });
    });
  });
}

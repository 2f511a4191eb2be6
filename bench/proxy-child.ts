/**
 * The delay proxy as its own process (forked by the benchmark), so that the producer's work in
 * the benchmark process does not add jitter to the simulated network, and the proxy's CPU is
 * not charged to any worker. Usage: proxy-child.js <targetPort> <delayMs>; reports its port.
 */
import { startDelayProxy } from './lib/delay-proxy.js';

const [targetPort, delayMs] = process.argv.slice(2).map(Number);
const proxy = await startDelayProxy({ targetHost: '127.0.0.1', targetPort: targetPort!, delayMs: delayMs! });
process.send?.({ t: 'ready', port: proxy.port });
const stop = (): void => void proxy.close().finally(() => process.exit(0));
process.on('disconnect', stop);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

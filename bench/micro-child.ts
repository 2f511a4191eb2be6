/**
 * One side of the registry micro-benchmark, in its own process (forked by
 * bench/workloads/micro.ts): `registry` = lensfleet's registry.get → TenantPool.acquire → query →
 * release; `bare` = pg.Pool.connect → query → client.release. A process per side keeps the two
 * from sharing JIT feedback and garbage. Reports a MicroResult over IPC.
 * Usage: micro-child.js <registry|bare> <databaseUrl> <seconds> <concurrency>
 */
import pg from 'pg';
import pino from 'pino';
import { loadWorkerConfig } from '../src/config.js';
import { PoolRegistry } from '../src/registry.js';
import { loadTenantDirectory } from '../src/tenants.js';
import type { LoopResult, MicroResult } from './workloads/micro.js';

interface Acquirer {
  acquire(): Promise<pg.PoolClient>;
  release(client: pg.PoolClient): void;
  close(): Promise<void>;
}


// The lens's SQL as one named prepared statement: identical work on both sides.
const QUERY = {
  name: 'bench_micro_receiving',
  text: 'SELECT id, yacht_id, supplier, reference, status, received_at FROM receiving ORDER BY received_at DESC, id DESC LIMIT $1',
  values: [10],
};

async function closedLoop(pool: Acquirer, loops: number, seconds: number, withQuery: boolean): Promise<LoopResult> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  let ops = 0;
  await Promise.all(
    Array.from({ length: loops }, async () => {
      while (performance.now() < end) {
        const client = await pool.acquire();
        try {
          if (withQuery) await client.query(QUERY);
        } finally {
          pool.release(client);
        }
        ops++;
      }
    }),
  );
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  return { opsPerSecond: ops / elapsed, cpuUsPerOp: (cpu.user + cpu.system) / ops };
}

function viaRegistry(url: string, concurrency: number): Acquirer {
  const env = { LENSFLEET_TENANTS: 'micro', micro_DATABASE_URL: url, LENSFLEET_CONCURRENCY: String(concurrency) };
  const tenant = loadTenantDirectory(loadWorkerConfig(env), env).getPg('micro');
  const registry = new PoolRegistry({ concurrency, logger: pino({ level: 'silent' }) });
  // One tenant, so one pool: release goes to the pool the last get returned.
  let pool: Awaited<ReturnType<PoolRegistry['get']>> | undefined;
  return {
    // As the job processor does it: the synchronous lookup once the pool exists.
    acquire: () => {
      const current = registry.current(tenant);
      if (current !== undefined) return (pool = current).acquire();
      return registry.get(tenant).then((p) => (pool = p).acquire());
    },
    release: (client) => pool!.release(client),
    close: () => registry.close(),
  };
}

function viaBare(url: string, concurrency: number): Acquirer {
  const pool = new pg.Pool({ connectionString: url, max: concurrency });
  pool.on('error', () => {});
  return { acquire: () => pool.connect(), release: (client) => client.release(), close: () => pool.end() };
}

async function main(): Promise<void> {
  const [kind, url, secondsArg, concurrencyArg] = process.argv.slice(2);
  const seconds = Number(secondsArg);
  const concurrency = Number(concurrencyArg);
  const pool = kind === 'registry' ? viaRegistry(url!, concurrency) : viaBare(url!, concurrency);
  try {
    // Open every connection, prepare the statement and warm the JIT before measuring.
    await closedLoop(pool, concurrency, 0.5, true);
    await closedLoop(pool, 1, 0.2, false);
    const query = await closedLoop(pool, concurrency, seconds, true);
    const acquireOnly = await closedLoop(pool, 1, seconds, false);
    process.send?.({ query, acquireOnly } satisfies MicroResult);
  } finally {
    await pool.close();
  }
}

main().then(
  () => process.disconnect?.(),
  (err: unknown) => {
    process.stderr.write(`${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  },
);

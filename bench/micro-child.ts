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
import type { TenantPool } from '../src/pool.js';
import { PoolRegistry } from '../src/registry.js';
import { loadTenantDirectory } from '../src/tenants.js';
import { TENANTS, type LoopResult, type MicroResult } from './workloads/micro.js';

/** Acquires from tenant `k` (0 ≤ k < TENANTS); release goes back where the client came from. */
interface Acquirer {
  acquire(k: number): Promise<pg.PoolClient>;
  release(client: pg.PoolClient): void;
  close(): Promise<void>;
}



// The lens's SQL as one named prepared statement: identical work on both sides.
const QUERY = {
  name: 'bench_micro_receiving',
  text: 'SELECT id, yacht_id, supplier, reference, status, received_at FROM receiving ORDER BY received_at DESC, id DESC LIMIT $1',
  values: [10],
};

async function closedLoop(pool: Acquirer, loops: number, seconds: number, withQuery: boolean, tenants = 1): Promise<LoopResult> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  let ops = 0;
  await Promise.all(
    Array.from({ length: loops }, async (_, loop) => {
      let k = loop % tenants;
      while (performance.now() < end) {
        k = (k + 1) % tenants;
        const client = await pool.acquire(k);
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
  const ids = Array.from({ length: TENANTS }, (_, k) => `micro${k}`);
  const env: Record<string, string> = { LENSFLEET_TENANTS: ids.join(','), LENSFLEET_CONCURRENCY: String(concurrency) };
  for (const id of ids) env[`${id}_DATABASE_URL`] = url;
  const directory = loadTenantDirectory(loadWorkerConfig(env), env);
  const tenants = ids.map((id) => directory.getPg(id));
  // A budget that never evicts: this measures the registry's cost, not the budget's.
  const registry = new PoolRegistry({ concurrency, processMaxConnections: TENANTS * concurrency, logger: pino({ level: 'silent' }) });
  const owner = new WeakMap<pg.PoolClient, TenantPool>();
  const take = (pool: TenantPool) => pool.acquire().then((client) => (owner.set(client, pool), client));
  return {
    // As the job processor does it: the synchronous lookup once the pool exists.
    acquire: (k) => {
      const tenant = tenants[k]!;
      const current = registry.current(tenant);
      return current !== undefined ? take(current) : registry.get(tenant).then(take);
    },
    release: (client) => owner.get(client)!.release(client),
    close: () => registry.close(),
  };
}

function viaBare(url: string, concurrency: number): Acquirer {
  const pools = Array.from({ length: TENANTS }, () => new pg.Pool({ connectionString: url, max: concurrency }));
  for (const pool of pools) pool.on('error', () => {});
  return {
    acquire: (k) => pools[k]!.connect(),
    release: (client) => client.release(),
    close: async () => {
      await Promise.all(pools.map((p) => p.end()));
    },
  };
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
    await closedLoop(pool, concurrency, 0.5, true, TENANTS);
    const query = await closedLoop(pool, concurrency, seconds, true);
    const acquireOnly = await closedLoop(pool, 1, seconds, false);
    const manyTenants = await closedLoop(pool, concurrency, seconds, true, TENANTS);
    process.send?.({ query, acquireOnly, manyTenants } satisfies MicroResult);
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

/**
 * One side of the registry micro-benchmark, in its own process (forked by
 * bench/workloads/micro.ts): `registry` = lensfleet's registry.get → TenantPool.acquire → query →
 * release; `bare` = pg.Pool.connect → query → client.release. A process per side keeps the two
 * from sharing JIT feedback and garbage. Both sides stay up and run short slices in turn, as the
 * parent asks (`{ t: 'run', loop, ms }` → a MicroSlice; `{ t: 'stop' }`).
 * Usage: micro-child.js <registry|bare> <databaseUrl> <concurrency>
 */
import pg from 'pg';
import pino from 'pino';
import { loadWorkerConfig } from '../src/config.js';
import type { TenantPool } from '../src/pool/tenant-pool.js';
import { PoolRegistry } from '../src/pool/registry.js';
import { loadTenantDirectory } from '../src/tenants.js';
import { TENANTS, type MicroLoop, type MicroRequest, type MicroSlice } from './workloads/micro.js';

/** Acquires from tenant `k` (0 ≤ k < TENANTS) and releases to the same tenant's pool. */
interface Acquirer {
  acquire(k: number): Promise<pg.PoolClient>;
  release(k: number, client: pg.PoolClient): void;
  close(): Promise<void>;
}

// The lens's SQL as one named prepared statement: identical work on both sides.
const QUERY = {
  name: 'bench_micro_receiving',
  text: 'SELECT id, yacht_id, supplier, reference, status, received_at FROM receiving ORDER BY received_at DESC, id DESC LIMIT $1',
  values: [10],
};

async function closedLoop(pool: Acquirer, loops: number, ms: number, withQuery: boolean, tenants = 1): Promise<MicroSlice> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const end = t0 + ms;
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
          pool.release(k, client);
        }
        ops++;
      }
    }),
  );
  const elapsedMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return { t: 'slice', ops, elapsedMs, cpuUs: cpu.user + cpu.system };
}

/** The three loops: `query` and `manyTenants` with `concurrency` loops, `acquireOnly` with one. */
function runLoop(pool: Acquirer, loop: MicroLoop, ms: number, concurrency: number): Promise<MicroSlice> {
  if (loop === 'query') return closedLoop(pool, concurrency, ms, true);
  if (loop === 'acquireOnly') return closedLoop(pool, 1, ms, false);
  return closedLoop(pool, concurrency, ms, true, TENANTS);
}

function viaRegistry(url: string, concurrency: number): Acquirer {
  const ids = Array.from({ length: TENANTS }, (_, k) => `micro${k}`);
  const env: Record<string, string> = { LENSFLEET_TENANTS: ids.join(','), LENSFLEET_CONCURRENCY: String(concurrency) };
  for (const id of ids) env[`${id}_DATABASE_URL`] = url;
  const directory = loadTenantDirectory(loadWorkerConfig(env), env);
  const tenants = ids.map((id) => directory.getPg(id));
  // A budget that never evicts: this measures the registry's cost, not the budget's.
  const registry = new PoolRegistry({ concurrency, processMaxConnections: TENANTS * concurrency, logger: pino({ level: 'silent' }) });
  // The processor's lookup: registry.current, registry.get on first use. Releases go to the pool
  // the acquire came from (the micro never recycles a pool, so that is the current one).
  const pools: (TenantPool | undefined)[] = [];
  return {
    acquire: (k) => {
      const current = registry.current(tenants[k]!);
      if (current !== undefined) {
        pools[k] = current;
        return current.acquire();
      }
      return registry.get(tenants[k]!).then((pool) => {
        pools[k] = pool;
        return pool.acquire();
      });
    },
    release: (k, client) => pools[k]!.release(client),
    close: () => registry.close(),
  };
}

function viaBare(url: string, concurrency: number): Acquirer {
  const pools = Array.from({ length: TENANTS }, () => new pg.Pool({ connectionString: url, max: concurrency }));
  for (const pool of pools) pool.on('error', () => {});
  return {
    acquire: (k) => pools[k]!.connect(),
    release: (_k, client) => client.release(),
    close: async () => {
      await Promise.all(pools.map((p) => p.end()));
    },
  };
}

async function main(): Promise<void> {
  const [kind, url, concurrencyArg] = process.argv.slice(2);
  const concurrency = Number(concurrencyArg);
  const pool = kind === 'registry' ? viaRegistry(url!, concurrency) : viaBare(url!, concurrency);
  try {
    // Open every connection, prepare the statement and warm the JIT before measuring.
    await runLoop(pool, 'query', 500, concurrency);
    await runLoop(pool, 'acquireOnly', 200, concurrency);
    await runLoop(pool, 'manyTenants', 500, concurrency);
    process.send?.({ t: 'ready' });
    // One request at a time: the parent waits for each slice before it sends the next.
    for await (const request of requests()) {
      if (request.t === 'stop') break;
      process.send?.(await runLoop(pool, request.loop, request.ms, concurrency));
    }
  } finally {
    await pool.close();
  }
}

async function* requests(): AsyncGenerator<MicroRequest> {
  const queue: MicroRequest[] = [];
  let wake: (() => void) | undefined;
  const push = (m: MicroRequest): void => {
    queue.push(m);
    wake?.();
  };
  process.on('message', push);
  process.once('disconnect', () => push({ t: 'stop' }));
  try {
    for (;;) {
      const next = queue.shift();
      if (next !== undefined) {
        yield next;
        if (next.t === 'stop') return;
      } else await new Promise<void>((resolve) => (wake = resolve));
    }
  } finally {
    process.off('message', push);
  }
}

main().then(
  () => process.disconnect?.(),
  (err: unknown) => {
    process.stderr.write(`${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  },
);

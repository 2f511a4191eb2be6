/**
 * Throwaway Redis deployments beyond one server, for tests and trials: a Redis Cluster of three
 * masters, and a master with a replica watched by three sentinels. Like `startRedis`
 * (servers.ts) they run Debian's binaries (`redis-server`, `redis-cli` for
 * `redis-cli --cluster create`, `redis-sentinel`) on free 127.0.0.1 ports, keep their state in a
 * fresh temp dir, and `stop()` kills every process and removes the dir (an exit hook does it too
 * if the caller dies first).
 *
 * @module
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { freePort, killAndWait, onPath, pingRedis, registerEmergencyKill, removeDirSync, type StartOptions, watchChild, type WatchedChild } from './servers.js';

const run = promisify(execFile);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const noop = (): void => {};
const HOST = '127.0.0.1';

export interface NodeAddress {
  readonly host: string;
  readonly port: number;
}

/** A running local Redis Cluster. */
export interface LocalRedisCluster {
  /** The masters (any of them is a seed node). */
  readonly nodes: readonly NodeAddress[];
  /** The worker's settings for it: `LENSFLEET_REDIS_MODE=cluster`, `LENSFLEET_REDIS_NODES`. */
  readonly env: Readonly<Record<string, string>>;
  /** Kill every node and remove the temp dir. Idempotent. */
  stop(): Promise<void>;
}

/** A running local master + replica under three sentinels. */
export interface LocalRedisSentinel {
  /** The name the sentinels know the master by. */
  readonly masterName: string;
  readonly sentinels: readonly NodeAddress[];
  /** The two data servers (one master, one replica; which is which changes at a failover). */
  readonly servers: readonly NodeAddress[];
  /** The worker's settings: `LENSFLEET_REDIS_MODE=sentinel`, `LENSFLEET_REDIS_NODES`, `LENSFLEET_REDIS_SENTINEL_MASTER`. */
  readonly env: Readonly<Record<string, string>>;
  /** The master as the first sentinel names it now. */
  master(): Promise<NodeAddress>;
  /**
   * `SENTINEL FAILOVER`: the replica becomes master. Resolves once every sentinel names the new
   * master and it answers as master (`ms`: how long that took).
   */
  failover(): Promise<{ from: NodeAddress; to: NodeAddress; ms: number }>;
  /** Resolves once the old master replicates from the new one and every sentinel counts it as the replica (ready for another failover). */
  settled(): Promise<void>;
  /** Kill every process and remove the temp dir. Idempotent. */
  stop(): Promise<void>;
}

/** One `redis-cli` call; its output, trimmed. */
async function cli(port: number, ...args: string[]): Promise<string> {
  const { stdout } = await run('redis-cli', ['-h', HOST, '-p', String(port), ...args], { timeout: 10_000 });
  return stdout.trim();
}

/** Poll until `check` is true (errors count as false); throw naming `what` after timeoutMs. */
async function until(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (err) {
      last = err;
    }
    await sleep(100);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (${(last as Error).message})` : ''}`);
}

/** Processes of one deployment, killed together (emergency hook included). */
class ProcessGroup {
  readonly #procs: { child: ChildProcess; watched: WatchedChild; name: string }[] = [];
  readonly #unregister: () => void;
  #stopping: Promise<void> | undefined;

  constructor(readonly dir: string) {
    this.#unregister = registerEmergencyKill(() => {
      for (const p of this.#procs) p.child.kill('SIGKILL');
      removeDirSync(dir);
    });
  }

  /** Spawn a server and wait until it answers PING. */
  async start(name: string, bin: string, args: string[], port: number): Promise<void> {
    const child = spawn(bin, args, { cwd: this.dir, stdio: ['ignore', 'pipe', 'pipe'] });
    const watched = watchChild(child);
    this.#procs.push({ child, watched, name });
    await until(
      `${name} to answer PING on ${HOST}:${port}`,
      async () => {
        if (watched.hasExited()) throw new Error(`${name} exited:\n${watched.output().trim()}`);
        return pingRedis(port);
      },
      15_000,
    ).catch((err: Error) => {
      throw new Error(`${err.message}\n${watched.output().trim().slice(-2000)}`);
    });
  }

  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      await Promise.all(this.#procs.map((p) => killAndWait(p.child, p.watched.exited)));
      this.#unregister();
      await rm(this.dir, { recursive: true, force: true });
    })();
    return this.#stopping;
  }
}

function binary(name: string): string {
  const bin = onPath(name);
  if (!bin) throw new Error(`${name} not found: install Debian's ${name === 'redis-sentinel' ? 'redis-sentinel' : 'redis-server'} package`);
  return bin;
}

/** Arguments of a throwaway data server (no persistence, loopback only). */
const serverArgs = (port: number, dir: string): string[] => [
  '--port',
  String(port),
  '--bind',
  HOST,
  '--save',
  '',
  '--appendonly',
  'no',
  '--dir',
  dir,
  '--protected-mode',
  'yes',
  '--daemonize',
  'no',
];

// ---------------------------------------------------------------------------------------------
// Cluster

/**
 * Start a Redis Cluster of `masters` masters (no replicas) and wait until every node reports
 * `cluster_state:ok`. @param opts.masters - @defaultValue 3 (the fewest `--cluster create` accepts)
 */
export async function startRedisCluster(opts: StartOptions & { masters?: number } = {}): Promise<LocalRedisCluster> {
  const log = opts.log ?? noop;
  const server = binary('redis-server');
  binary('redis-cli');
  const group = new ProcessGroup(await mkdtemp(path.join(os.tmpdir(), 'lensfleet-cluster-')));
  try {
    const nodes: NodeAddress[] = [];
    for (let i = 0; i < (opts.masters ?? 3); i++) {
      const [port, busPort] = [await freePort(), await freePort()];
      const dir = path.join(group.dir, String(port));
      await mkdir(dir);
      // The bus port is set explicitly: the default (port + 10000) may be taken or past 65535.
      await group.start(
        `cluster node ${port}`,
        server,
        [
          ...serverArgs(port, dir),
          '--cluster-enabled',
          'yes',
          '--cluster-port',
          String(busPort),
          '--cluster-config-file',
          path.join(dir, 'nodes.conf'),
          '--cluster-node-timeout',
          '3000',
        ],
        port,
      );
      nodes.push({ host: HOST, port });
    }
    await run('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `${n.host}:${n.port}`), '--cluster-replicas', '0', '--cluster-yes'], {
      timeout: 60_000,
    });
    for (const n of nodes)
      await until(`cluster_state:ok on ${n.port}`, async () => (await cli(n.port, 'CLUSTER', 'INFO')).includes('cluster_state:ok'), 30_000);
    log(`redis cluster on ${nodes.map((n) => n.port).join(', ')}`);
    return {
      nodes,
      env: { LENSFLEET_REDIS_MODE: 'cluster', LENSFLEET_REDIS_NODES: nodes.map((n) => `${n.host}:${n.port}`).join(',') },
      stop: () => group.stop(),
    };
  } catch (err) {
    await group.stop();
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Sentinel

/** `SENTINEL MASTER <name>` and the like print field, value, field, value… one per line. */
function fields(text: string): Map<string, string> {
  const lines = text.split('\n');
  const out = new Map<string, string>();
  for (let i = 0; i + 1 < lines.length; i += 2) out.set(lines[i]!.trim(), lines[i + 1]!.trim());
  return out;
}

/**
 * Start a master, its replica and three sentinels watching them (quorum 2), and wait until the
 * replica is in sync and every sentinel knows the replica and the other two sentinels (before
 * that, a failover would find no replica to promote).
 *
 * @param opts.downAfterMs - how long a silent master takes to be declared down. @defaultValue 2000
 */
export async function startRedisSentinel(opts: StartOptions & { masterName?: string; downAfterMs?: number } = {}): Promise<LocalRedisSentinel> {
  const log = opts.log ?? noop;
  const server = binary('redis-server');
  const sentinelBin = binary('redis-sentinel');
  const masterName = opts.masterName ?? 'lf-master';
  const group = new ProcessGroup(await mkdtemp(path.join(os.tmpdir(), 'lensfleet-sentinel-')));
  try {
    const servers: NodeAddress[] = [];
    for (const role of ['master', 'replica'] as const) {
      const port = await freePort();
      const dir = path.join(group.dir, String(port));
      await mkdir(dir);
      const replicaOf = role === 'replica' ? ['--replicaof', HOST, String(servers[0]!.port)] : [];
      await group.start(`redis ${role} ${port}`, server, [...serverArgs(port, dir), ...replicaOf], port);
      servers.push({ host: HOST, port });
    }
    const [master, replica] = servers as [NodeAddress, NodeAddress];
    await until('the replica in sync', async () => (await cli(replica.port, 'INFO', 'replication')).includes('master_link_status:up'), 30_000);

    const sentinels: NodeAddress[] = [];
    for (let i = 0; i < 3; i++) {
      const port = await freePort();
      const conf = path.join(group.dir, `sentinel-${port}.conf`);
      // Sentinel rewrites its own config file (what it learns), so each has a writable one.
      await writeFile(
        conf,
        [
          `port ${port}`,
          `bind ${HOST}`,
          'daemonize no',
          `dir ${group.dir}`,
          `sentinel monitor ${masterName} ${HOST} ${master.port} 2`,
          `sentinel down-after-milliseconds ${masterName} ${opts.downAfterMs ?? 2000}`,
          `sentinel failover-timeout ${masterName} 10000`,
          `sentinel parallel-syncs ${masterName} 1`,
          '',
        ].join('\n'),
      );
      await group.start(`sentinel ${port}`, sentinelBin, [conf], port);
      sentinels.push({ host: HOST, port });
    }
    for (const s of sentinels) {
      await until(
        `sentinel ${s.port} to know the replica and the other sentinels`,
        async () => {
          const m = fields(await cli(s.port, 'SENTINEL', 'MASTER', masterName));
          return m.get('num-slaves') === '1' && m.get('num-other-sentinels') === '2';
        },
        60_000,
      );
    }
    const addressOfMaster = async (sentinel: NodeAddress): Promise<NodeAddress> => {
      const [host, port] = (await cli(sentinel.port, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', masterName)).split('\n');
      return { host: host ?? '', port: Number(port) };
    };
    log(`redis sentinel: master ${master.port}, replica ${replica.port}, sentinels ${sentinels.map((s) => s.port).join(', ')}`);
    return {
      masterName,
      sentinels,
      servers,
      env: {
        LENSFLEET_REDIS_MODE: 'sentinel',
        LENSFLEET_REDIS_NODES: sentinels.map((s) => `${s.host}:${s.port}`).join(','),
        LENSFLEET_REDIS_SENTINEL_MASTER: masterName,
      },
      master: () => addressOfMaster(sentinels[0]!),
      async failover() {
        const from = await addressOfMaster(sentinels[0]!);
        const to = servers.find((s) => s.port !== from.port)!;
        const started = performance.now();
        // A sentinel refuses while it still judges the replica unfit (e.g. just after the last
        // failover); it says so in its answer, so ask again until it takes it.
        await until('SENTINEL FAILOVER to be accepted', async () => (await cli(sentinels[0]!.port, 'SENTINEL', 'FAILOVER', masterName)) === 'OK', 30_000);
        for (const s of sentinels) await until(`sentinel ${s.port} to name ${to.port} master`, async () => (await addressOfMaster(s)).port === to.port, 30_000);
        await until(`${to.port} to answer as master`, async () => (await cli(to.port, 'ROLE')).startsWith('master'), 30_000);
        return { from, to, ms: Math.round(performance.now() - started) };
      },
      async settled() {
        const current = await addressOfMaster(sentinels[0]!);
        for (const replica of servers.filter((s) => s.port !== current.port)) {
          await until(
            `${replica.port} to replicate from ${current.port}`,
            async () => (await cli(replica.port, 'INFO', 'replication')).includes('master_link_status:up'),
            60_000,
          );
        }
        for (const s of sentinels) {
          await until(
            `sentinel ${s.port} to count the replica`,
            async () => fields(await cli(s.port, 'SENTINEL', 'MASTER', masterName)).get('num-slaves') === '1',
            60_000,
          );
        }
      },
      stop: () => group.stop(),
    };
  } catch (err) {
    await group.stop();
    throw err;
  }
}

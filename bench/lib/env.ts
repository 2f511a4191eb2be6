/**
 * The benchmark's world: its own Redis and Postgres (loopback, SCRAM, fsync on, ssl on with a
 * self-signed certificate), tenant databases, a delay proxy, and one cleanup list that runs on
 * success, failure and Ctrl-C alike.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import pg from 'pg';
import { createTenantDatabase, type TenantDatabase } from '../../dev/local/tenant-db.js';
import { ensureSystemPackages, startPostgres, startRedis, type LocalPostgres, type LocalRedis } from '../../dev/local/servers.js';
import { makeTempDir, onCleanup } from './cleanup.js';
import { benchScript } from './code.js';
import { hasOpenssl, makeSelfSignedCert } from '../../dev/local/tls.js';

export interface Versions {
  readonly node: string;
  readonly pg: string;
  readonly bullmq: string;
  /** The `bullmq6` alias (npm:bullmq@^6) the `-bmq6` variants run on. */
  readonly bullmq6: string;
  readonly redis: string;
  readonly postgres: string;
}

export interface BenchEnv {
  readonly redis: LocalRedis;
  readonly postgres: LocalPostgres;
  readonly redisPid: number;
  readonly postmasterPid: number;
  /** TLS is available (openssl found); URLs from `tlsUrl` then negotiate TLS. */
  readonly tls: boolean;
  readonly versions: Versions;
  /** Run a query as the superuser. */
  admin<T extends pg.QueryResultRow>(sql: string, values?: unknown[]): Promise<pg.QueryResult<T>>;
  /** `connectionLimit`: the tenant roles' CONNECTION LIMIT (default TENANT_CONNECTION_LIMIT; -1 = none). */
  createTenants(ids: readonly string[], rows: number, log?: (line: string) => void, connectionLimit?: number): Promise<TenantDatabase[]>;
  /** A delay proxy in front of Postgres, in its own process; stopped with the environment. */
  startProxy(delayMs: number): Promise<number>;
  /**
   * The PostgREST stand-in in front of a tenant database (as its login role), in its own process
   * (its CPU read apart); stopped with the environment. `dbPool`: its database connections.
   */
  startStandIn(databaseUrl: string, jwtSecret: string, dbPool: number): Promise<{ url: string; pid: number }>;
}

/** Put `?uselibpqcompat=true&sslmode=require` (libpq meaning: encrypt, do not verify) on a URL. */
export function tlsUrl(databaseUrl: string): string {
  const url = new URL(databaseUrl);
  url.searchParams.set('uselibpqcompat', 'true');
  url.searchParams.set('sslmode', 'require');
  return url.toString();
}

/** The same URL with another port (e.g. the delay proxy's). */
export function withPort(databaseUrl: string, port: number): string {
  const url = new URL(databaseUrl);
  url.port = String(port);
  return url.toString();
}

/**
 * The micro-benchmark keeps both of its sides connected at once (8 pools of up to 16
 * connections each per side): more than the demo's default role limit of 200.
 */
export const TENANT_CONNECTION_LIMIT = 400;

export async function startBenchEnv(log: (line: string) => void, maxConnections: number): Promise<BenchEnv> {
  await ensureSystemPackages({ redis: true, postgres: true, log });
  const tls = hasOpenssl();
  if (!tls) log('openssl not found: the remote workload runs without TLS');
  const certDir = await makeTempDir('lensfleet-bench-tls-');
  const cert = tls ? makeSelfSignedCert(certDir) : undefined;

  const redis = await startRedis({ log });
  onCleanup(() => redis.stop());
  const postgres = await startPostgres({
    fsync: true,
    maxConnections,
    log,
    extraConfig: cert ? { ssl: 'on', ssl_cert_file: cert.certFile, ssl_key_file: cert.keyFile } : {},
  });
  onCleanup(() => postgres.stop());

  const adminPool = new pg.Pool({ connectionString: postgres.adminUrl(), max: 2 });
  adminPool.on('error', () => {});
  onCleanup(() => adminPool.end());
  const admin = <T extends pg.QueryResultRow>(sql: string, values?: unknown[]) => adminPool.query<T>(sql, values);

  const probe = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await probe.connect();
  const info = await probe.info('server');
  probe.disconnect();
  const field = (name: string): string => new RegExp(`^${name}:(.*)$`, 'm').exec(info)?.[1]?.trim() ?? '?';
  const postmasterPid = Number((await readFile(path.join(postgres.dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
  const pgVersion = (await admin<{ v: string }>("SELECT current_setting('server_version') AS v")).rows[0]?.v ?? '?';
  const pkg = async (name: string): Promise<string> =>
    (
      JSON.parse(await readFile(path.join(path.dirname(fileURLToPath(import.meta.url)), '../../../node_modules', name, 'package.json'), 'utf8')) as {
        version: string;
      }
    ).version;

  return {
    redis,
    postgres,
    redisPid: Number(field('process_id')),
    postmasterPid,
    tls,
    versions: {
      node: process.version,
      pg: await pkg('pg'),
      bullmq: await pkg('bullmq'),
      bullmq6: await pkg('bullmq6'),
      redis: field('redis_version'),
      postgres: pgVersion,
    },
    admin,
    async createTenants(ids, rows, progress, connectionLimit = TENANT_CONNECTION_LIMIT) {
      const dbs: TenantDatabase[] = [];
      // A few at a time: CREATE DATABASE with fsync on is slow, and each holds a connection.
      for (let i = 0; i < ids.length; i += 4) {
        dbs.push(...(await Promise.all(ids.slice(i, i + 4).map((id) => createTenantDatabase(postgres.adminUrl(), id, { rows, connectionLimit })))));
        progress?.(`tenant databases ${dbs.length}/${ids.length}`);
      }
      return dbs;
    },
    async startProxy(delayMs) {
      const child: ChildProcess = fork(benchScript('proxy-child.js'), [String(postgres.port), String(delayMs)], {
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        execArgv: [],
      });
      onCleanup(() => {
        child.kill('SIGTERM');
      });
      return new Promise<number>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('delay proxy did not start within 10 s')), 10_000);
        child.once('message', (m: { port: number }) => {
          clearTimeout(timer);
          resolve(m.port);
        });
        child.once('exit', (code) => reject(new Error(`delay proxy exited (code ${code})`)));
      });
    },
    async startStandIn(databaseUrl, jwtSecret, dbPool) {
      const child: ChildProcess = fork(benchScript('standin-child.js'), [], {
        env: { PATH: process.env.PATH ?? '', PGRST_DB_URI: databaseUrl, PGRST_JWT_SECRET: jwtSecret, PGRST_DB_POOL: String(dbPool) },
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        execArgv: [],
      });
      onCleanup(() => {
        child.kill('SIGTERM');
      });
      return new Promise<{ url: string; pid: number }>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('PostgREST stand-in did not start within 10 s')), 10_000);
        child.once('message', (m: { url: string }) => {
          clearTimeout(timer);
          resolve({ url: m.url, pid: child.pid ?? 0 });
        });
        child.once('exit', (code) => reject(new Error(`PostgREST stand-in exited (code ${code})`)));
      });
    },
  };
}

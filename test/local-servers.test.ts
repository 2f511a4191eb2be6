import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';
import { describe, expect, inject, it } from 'vitest';
import { findPostgresBinDir, freePort, startPostgres, startRedis } from '../dev/local/servers.js';

/** Resolves with the connect error code, or 'connected' if something still listens. */
function probePort(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

async function query<T extends pg.QueryResultRow>(url: string, sql: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(sql)).rows;
  } finally {
    await client.end();
  }
}

describe('helpers', () => {
  it('freePort returns a port nothing listens on', async () => {
    const port = await freePort();
    expect(port).toBeGreaterThan(0);
    expect(await probePort(port)).toBe('ECONNREFUSED');
  });

  it('findPostgresBinDir finds initdb, pg_ctl and postgres', () => {
    const dir = findPostgresBinDir();
    expect(dir).toBeDefined();
    for (const bin of ['initdb', 'pg_ctl', 'postgres']) expect(existsSync(path.join(dir!, bin))).toBe(true);
  });
});

describe('injected servers', () => {
  it('Redis answers PING', async () => {
    const redis = new Redis(inject('redisUrl'), { maxRetriesPerRequest: 1 });
    try {
      expect(await redis.ping()).toBe('PONG');
    } finally {
      redis.disconnect();
    }
  });

  it('Postgres accepts the superuser password over SCRAM', async () => {
    const url = inject('pgAdminUrl');
    const [row] = await query<{ one: number; scram: boolean }>(
      url,
      "select 1 as one, rolpassword like 'SCRAM-SHA-256$%' as scram from pg_authid where rolname = current_user",
    );
    expect(row).toEqual({ one: 1, scram: true });
    const rules = await query<{ auth_method: string }>(url, 'select distinct auth_method from pg_hba_file_rules');
    expect(rules.map((r) => r.auth_method)).toEqual(['scram-sha-256']);
  });

  it('Postgres rejects a wrong password', async () => {
    const url = new URL(inject('pgAdminUrl'));
    url.password = 'not-the-password';
    await expect(query(url.toString(), 'select 1')).rejects.toMatchObject({ code: '28P01' });
  });
});

describe('separately started servers stop cleanly', () => {
  it('Postgres: stop() shuts it down, removes its temp dir, and is idempotent', async () => {
    const lines: string[] = [];
    const server = await startPostgres({ fsync: false, maxConnections: 20, log: (l) => lines.push(l), extraConfig: { application_name: "it's local" } });
    const tempDir = path.dirname(server.dataDir);
    expect(existsSync(server.dataDir)).toBe(true);
    expect(lines.some((l) => l.includes(`:${server.port}`))).toBe(true);
    const [row] = await query<{ max: string; fsync: string; app: string }>(
      server.adminUrl(),
      "select current_setting('max_connections') as max, current_setting('fsync') as fsync, current_setting('application_name') as app",
    );
    expect(row).toEqual({ max: '20', fsync: 'off', app: "it's local" });

    await Promise.all([server.stop(), server.stop()]);
    await server.stop();
    expect(existsSync(tempDir)).toBe(false);
    expect(await probePort(server.port)).toBe('ECONNREFUSED');
  });

  it('Redis: stop() shuts it down, removes its temp dir, and is idempotent', async () => {
    const server = await startRedis();
    const client = new Redis(server.url, { maxRetriesPerRequest: 1, lazyConnect: true });
    await client.connect();
    const dir = (await client.config('GET', 'dir')) as string[];
    client.disconnect();
    const tempDir = dir[1]!;
    expect(path.basename(tempDir)).toMatch(/^lensfleet-redis-/);
    expect(existsSync(tempDir)).toBe(true);

    await Promise.all([server.stop(), server.stop()]);
    await server.stop();
    expect(existsSync(tempDir)).toBe(false);
    expect(await probePort(server.port)).toBe('ECONNREFUSED');
  });
});

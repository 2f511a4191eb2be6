/**
 * `lensfleet status` (issue 13 item 2) and `lensfleet plan` (item 7), run as the compiled CLI
 * against the real Redis and Postgres: two in-process workers of one fleet, tenant A capped at 4
 * connections in the tenants file, tenant B without a cap, a tenant whose role allows only 3
 * connections, and one whose database does not answer.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTenantDatabase, dropTenantDatabase, type TenantDatabase } from '../dev/local/tenant-db.js';
import { enqueueMany } from '../queues/producer.js';
import { createTenants, pgAdminUrl, redisUrl, ROOT, startTestWorker, uniqueId, waitFor, type TestWorker } from './support/harness.js';
import { runNode } from './support/process.js';

const CLI = path.join(ROOT, 'dist/cli/lensfleet.js');
const A = uniqueId('yPlanA');
const B = uniqueId('yPlanB');
const LIMITED = uniqueId('yPlanL');

const lensfleet = (args: string[], env: Record<string, string>, timeoutMs?: number) => runNode([CLI, ...args], env, timeoutMs);

const passwordOf = (url: string) => decodeURIComponent(new URL(url).password);

describe('lensfleet status and plan', () => {
  let tenants: Awaited<ReturnType<typeof createTenants>>;
  let limited: TenantDatabase;
  let dir: string;
  let env: Record<string, string>;
  const workers: TestWorker[] = [];
  const queueName = uniqueId('q_cli');

  beforeAll(async () => {
    [tenants, limited] = await Promise.all([createTenants([A, B], 5), createTenantDatabase(pgAdminUrl(), LIMITED, { rows: 1, connectionLimit: 3 })]);
    dir = mkdtempSync(path.join(os.tmpdir(), 'lf-cli-'));
    const file = path.join(dir, 'tenants.json');
    writeFileSync(file, JSON.stringify({ tenants: { [A]: { pool: { fleetMaxConnections: 4, minSize: 0 } } } }));
    env = { ...tenants.env, LENSFLEET_TENANTS_FILE: file, REDIS_URL: redisUrl(), LENSFLEET_QUEUE: queueName };
    workers.push(await startTestWorker({ env, queueName, concurrency: 3 }));
    workers.push(await startTestWorker({ env, queueName, concurrency: 5 }));
    const jobs = await enqueueMany(
      workers[0]!.queue,
      Array.from({ length: 20 }, (_, i) => ({ tenant: i % 2 ? A : B, lens: 'receiving.recent', params: { limit: 2 } })),
    );
    await Promise.all(jobs.map((j) => j.waitUntilFinished(workers[0]!.events, 20_000)));
    for (const w of workers) await w.service.fleet.membership.beat();
  }, 120_000);
  afterAll(async () => {
    await Promise.allSettled(workers.map((w) => w.close()));
    await Promise.allSettled([tenants?.drop(), dropTenantDatabase(pgAdminUrl(), LIMITED)]);
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  describe('status', () => {
    it('--json: the live workers with their concurrency, the queue counts, and per tenant the connections and leases across the fleet', async () => {
      // Quiet pools (nothing opening or closing), their records sent: records and leases then agree.
      await waitFor('the pools to settle', () =>
        workers.every((w) => w.service.registry.stats().every((x) => x.opening === 0 && x.leases === (x.tenant === A ? x.size : 0))),
      );
      for (const w of workers) await w.service.fleet.membership.beat();
      const r = await lensfleet(['status', '--json'], env);
      expect(r.code, r.output).toBe(0);
      const s = JSON.parse(r.stdout) as {
        fleet: string;
        workers: { id: string; concurrency: number; pid: number; version: string; pools: Record<string, unknown> }[];
        queues: Record<string, Record<string, number>>;
        tenants: { tenant: string; workers: number; open: number; leases: number; cap?: number }[];
      };
      expect(s.fleet).toBe(queueName);
      expect(s.workers.map((w) => w.concurrency).sort()).toEqual([3, 5]);
      expect(s.workers.map((w) => w.id).sort()).toEqual(workers.map((w) => w.service.fleet.workerId).sort());
      expect(s.queues[queueName]).toMatchObject({ waiting: 0, active: 0, failed: 0 });
      expect(s.queues[queueName]!.completed).toBeGreaterThanOrEqual(20);
      const a = s.tenants.find((t) => t.tenant === A)!;
      const b = s.tenants.find((t) => t.tenant === B)!;
      expect(a.cap).toBe(4);
      expect(a.open).toBeGreaterThanOrEqual(1);
      // Every open connection of the capped tenant holds a lease; the uncapped one holds none.
      expect(a.leases).toBe(a.open);
      expect(a.leases).toBeLessThanOrEqual(4);
      expect(b.cap).toBeUndefined();
      expect(b.leases).toBe(0);
      expect(b.open).toBeGreaterThanOrEqual(1);
    });

    it('as tables, without the Redis password', async () => {
      const port = new URL(redisUrl()).port;
      const r = await lensfleet(['status'], { ...env, REDIS_URL: `redis://:S3cretPass@127.0.0.1:${port}` });
      expect(r.code, r.output).toBe(0);
      expect(r.stdout).toContain(`fleet ${queueName} on redis://127.0.0.1:${port}: 2 live workers`);
      expect(r.stdout).toMatch(/WORKER\s+HOST\s+PID\s+QUEUE\s+CONCURRENCY/);
      for (const w of workers) expect(r.stdout).toContain(w.service.fleet.workerId);
      expect(r.stdout).toMatch(new RegExp(`${A}\\s+\\d+\\s+\\d+\\s+\\d+\\s+\\d+\\s+\\d+\\s+\\d+\\s+4`));
      expect(r.output).not.toContain('S3cretPass');
    });

    it('exit 1 when Redis cannot be read (naming where, not the password); 2 on bad usage; 0 on --help', async () => {
      const { freePort } = await import('../dev/local/servers.js');
      const nowhere = await lensfleet(['status'], { ...env, REDIS_URL: `redis://:S3cretPass@127.0.0.1:${await freePort()}` });
      expect(nowhere.code).toBe(1);
      expect(nowhere.output).toMatch(/cannot read the fleet from Redis at redis:\/\/127\.0\.0\.1:\d+/);
      expect(nowhere.output).not.toContain('S3cretPass');
      expect((await lensfleet(['status', '--bogus'], env)).code).toBe(2);
      expect((await lensfleet(['status', '--fleet', 'a:b'], env)).code).toBe(2);
      const help = await lensfleet(['status', '--help'], env);
      expect(help.code).toBe(0);
      expect(help.stdout).toContain('usage: lensfleet status');
      expect(help.stdout).toContain('exit codes: 0');
    });
  });

  describe('plan', () => {
    interface PlanJson {
      workers: { source: string; concurrency: number[] };
      tenants: { tenant: string; perWorker: number[]; fleetMax: number; cap?: number; worstCase: number; server?: string; error?: string }[];
      servers: { server: string; tenants: string[]; maxConnections: number; worstCase: number; available: number }[];
      warnings: string[];
      errors: string[];
    }

    it('a planned fleet that fits: each tenant’s worst case is min(effective max × workers, its cap), tenants on one server add up; exit 0', async () => {
      const r = await lensfleet(['plan', '--workers', '4', '--concurrency', '16', '--json'], env);
      expect(r.code, r.output).toBe(0);
      const p = JSON.parse(r.stdout) as PlanJson;
      expect(p.workers).toEqual({ source: 'planned', concurrency: [16, 16, 16, 16] });
      // Defaults: maxSize 20 + maxOverflow 5, clamped to concurrency 16.
      expect(p.tenants.find((t) => t.tenant === B)).toMatchObject({ perWorker: [16, 16, 16, 16], fleetMax: 64, worstCase: 64 });
      expect(p.tenants.find((t) => t.tenant === A)).toMatchObject({ fleetMax: 64, cap: 4, worstCase: 4 });
      expect(p.servers).toHaveLength(1);
      expect(p.servers[0]).toMatchObject({ maxConnections: 300, worstCase: 68 });
      expect(p.servers[0]!.tenants.sort()).toEqual([A, B].sort());
      expect(p.warnings).toEqual([]);
      const human = await lensfleet(['plan', '--workers', '4', '--concurrency', '16'], env);
      expect(human.code).toBe(0);
      expect(human.stdout).toContain('plan for 4 workers × concurrency 16');
      expect(human.stdout).toContain('every tenant fits');
    });

    it('a planned fleet that could overrun the server: a warning naming the server and the tenants, exit 1; the capped tenant stays at its cap', async () => {
      const r = await lensfleet(['plan', '--workers', '30', '--concurrency', '16'], env);
      expect(r.code, r.output).toBe(1);
      expect(r.stdout).toMatch(new RegExp(`warning: server \\S+ \\(tenants ${A} 4, ${B} 480|warning: server \\S+ \\(tenants ${B} 480, ${A} 4`));
      expect(r.stdout).toMatch(/could open 484 connections, but only \d+ are free \(max_connections 300 − 3 reserved − \d+ held by other clients\)/);
      for (const url of Object.values(tenants.env).filter((v) => v.startsWith('postgres'))) expect(r.output).not.toContain(passwordOf(url));
    });

    it('--live: the live workers’ own concurrency (3 and 5)', async () => {
      const r = await lensfleet(['plan', '--live', '--json'], env);
      expect(r.code, r.output).toBe(0);
      const p = JSON.parse(r.stdout) as PlanJson;
      expect(p.workers.source).toBe('live');
      expect([...p.workers.concurrency].sort()).toEqual([3, 5]);
      expect(p.tenants.find((t) => t.tenant === B)).toMatchObject({ fleetMax: 8, worstCase: 8 });
      expect(p.tenants.find((t) => t.tenant === A)).toMatchObject({ fleetMax: 8, cap: 4, worstCase: 4 });
    });

    it('a role whose CONNECTION LIMIT (3) is below the worst case: a warning, exit 1', async () => {
      const r = await lensfleet(['plan', '--workers', '1', '--concurrency', '8'], {
        REDIS_URL: redisUrl(),
        LENSFLEET_TENANTS: LIMITED,
        [`${LIMITED}_DATABASE_URL`]: limited.databaseUrl,
      });
      expect(r.code, r.output).toBe(1);
      expect(r.stdout).toMatch(
        new RegExp(`warning: role \\S+ on \\S+ \\(tenant ${LIMITED} 8\\): the fleet could open 8 connections, but the role's CONNECTION LIMIT leaves 3`),
      );
      expect(r.output).not.toContain(passwordOf(limited.databaseUrl));
    });

    it('a database that cannot be reached: exit 3 naming the tenant and where (never the password); with an overrun elsewhere, exit 1', async () => {
      // Port 1 (tcpmux): nothing listens there. A "free" port could be taken by another test's
      // server between the probe and the plan (seen: a PgBouncer answering with an auth error).
      const down = 'postgres://reader:Pa55word@127.0.0.1:1/nowhere';
      const only = await lensfleet(['plan', '--workers', '1', '--concurrency', '2'], {
        REDIS_URL: redisUrl(),
        LENSFLEET_TENANTS: 'yDOWN',
        yDOWN_DATABASE_URL: down,
      });
      expect(only.code, only.output).toBe(3);
      expect(only.stdout).toMatch(/error: tenant yDOWN: cannot check its database at 127\.0\.0\.1:\d+\/nowhere: .*ECONNREFUSED/);
      expect(only.output).not.toContain('Pa55word');
      const both = await lensfleet(['plan', '--workers', '30', '--concurrency', '16'], {
        ...env,
        LENSFLEET_TENANTS: `${A},${B},yDOWN`,
        yDOWN_DATABASE_URL: down,
      });
      expect(both.code, both.output).toBe(1);
    });

    it.each([
      ['neither --workers nor --live', ['plan'], /give either --workers <n> \(a planned fleet\) or --live/],
      ['both', ['plan', '--workers', '2', '--live'], /give either/],
      ['--workers 0', ['plan', '--workers', '0'], /--workers must be a whole number from 1/],
      ['--concurrency with --live', ['plan', '--live', '--concurrency', '4'], /--concurrency goes with --workers/],
      ['an unknown option', ['plan', '--workers', '2', '--bogus'], /Unknown option '--bogus'/],
    ])('exit 2: %s', async (_what, args, message) => {
      const r = await lensfleet(args, env);
      expect(r.output).toMatch(message);
      expect(r.code).toBe(2);
    });

    it('exit 2 on an invalid setting (naming it); 0 on --help', async () => {
      const bad = await lensfleet(['plan', '--workers', '2'], { ...env, LENSFLEET_FLEET_MAX_CONNECTIONS: 'lots' });
      expect(bad.code).toBe(2);
      expect(bad.output).toContain('LENSFLEET_FLEET_MAX_CONNECTIONS');
      const help = await lensfleet(['plan', '--help'], env);
      expect(help.code).toBe(0);
      expect(help.stdout).toContain('usage: lensfleet plan');
      expect(help.stdout).toContain('exit codes: 0');
      expect((await lensfleet(['enqueue', '--help'], env)).code).toBe(0);
    });
  });
});

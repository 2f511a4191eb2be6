/**
 * Every documented exit code of every entry point, from the real processes:
 * - the worker (`node dist/workers/lens-worker.js`): 78 for each kind of configuration error (with
 *   a message naming the setting), 1 for another start-up failure and for a second signal, 0 after
 *   SIGTERM/SIGINT; a SIGHUP or SIGTERM during start-up does not kill it;
 * - the CLI (`node dist/cli/lensfleet.js`): 0 done, 1 the job failed or timed out, 2 bad usage or
 *   an invalid request or setting;
 * - the demo (`node dist/scripts/demo.js`): 2 for bad options, 0 for a run that completed.
 */
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { createLensQueue, enqueue } from '../queues/producer.js';
import {
  activeMutantEnv,
  createTenants,
  killWorker,
  pgAdminUrl,
  redisUrl,
  ROOT,
  spawnWorker,
  startTestWorker,
  TEST_LENS_MODULE,
  uniqueId,
  waitFor,
  WORKER_ENTRY,
  type ChildWorker,
  type TestWorker,
} from './support/harness.js';
import { runNode } from './support/process.js';

/** Run a Node.js script to its end (killed after `timeoutMs`). */
const run = runNode;

/** The `msg` of the worker's fatal log line. */
function fatalMessage(output: string): string {
  const line = output.split('\n').find((l) => l.includes('"level":"fatal"'));
  expect(line, `no fatal log line in: ${output.slice(-2000)}`).toBeDefined();
  return (JSON.parse(line!) as { msg: string }).msg;
}

const worker = (env: Record<string, string>) => run([WORKER_ENTRY], { REDIS_URL: redisUrl(), LENSFLEET_METRICS_HOST: '127.0.0.1', PORT: '0', ...env });

describe('worker exit codes', () => {
  it.each([
    [
      'a non-numeric concurrency',
      { LENSFLEET_CONCURRENCY: 'abc' },
      /^worker failed to start: LENSFLEET_CONCURRENCY="abc": LENSFLEET_CONCURRENCY must be a whole number/,
    ],
    ['an invalid tenant id', { LENSFLEET_TENANTS: 'bad-id', 'bad-id_DATABASE_URL': 'postgres://u:p@h/db' }, /tenant id "bad-id" is invalid/],
    [
      'min size above max size + overflow',
      { LENSFLEET_POOL_MIN_SIZE: '30', LENSFLEET_POOL_MAX_SIZE: '10' },
      /LENSFLEET_POOL_\*\): minSize \(30\) is larger than maxSize \+ maxOverflow \(10 \+ 5\)/,
    ],
    ['an http:// database URL', { LENSFLEET_TENANTS: 't1', t1_DATABASE_URL: 'http://u:S3CRET@db/t' }, /t1_DATABASE_URL must start with postgres:\/\//],
    ['a missing lens module', { LENSFLEET_LENS_MODULES: './no-such-lenses.js' }, /LENSFLEET_LENS_MODULES: cannot load .*no-such-lenses\.js/],
    ['an invalid LOG_LEVEL', { LOG_LEVEL: 'loud' }, /LOG_LEVEL="loud": LOG_LEVEL must be one of fatal\|error\|warn\|info\|debug\|trace\|silent/],
    [
      'a Redis Cluster mode that still has a REDIS_URL',
      { LENSFLEET_REDIS_MODE: 'cluster', LENSFLEET_REDIS_NODES: '127.0.0.1:7000', REDIS_URL: 'redis://:S3CRET@r:6379' },
      /REDIS_URL is set, but LENSFLEET_REDIS_MODE=cluster reaches the Cluster through LENSFLEET_REDIS_NODES/,
    ],
  ])('exits 78 on %s, with a message naming the setting', async (_what, env, message) => {
    const r = await worker(env);
    expect(fatalMessage(r.output)).toMatch(message);
    expect(r.output).not.toContain('S3CRET');
    expect(r).toMatchObject({ code: 78, signal: null });
  });

  it('exits 1 when start-up fails for another reason (the HTTP port is taken)', async () => {
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    onTestFinished(() => new Promise<void>((resolve) => taken.close(() => resolve())));
    const r = await worker({ PORT: String((taken.address() as net.AddressInfo).port), LENSFLEET_QUEUE: uniqueId('q_exit') });
    expect(fatalMessage(r.output)).toMatch(/^worker failed to start: .*EADDRINUSE/);
    expect(r).toMatchObject({ code: 1, signal: null });
  });

  describe('signals', () => {
    let tenants: Awaited<ReturnType<typeof createTenants>>;
    const children: ChildWorker[] = [];
    beforeAll(async () => {
      tenants = await createTenants([uniqueId('yExit')], 5);
    });
    afterAll(async () => {
      for (const c of children) await killWorker(c);
      await tenants?.drop();
    });
    const start = async (queue: string) => {
      const c = await spawnWorker({ ...tenants.env, LENSFLEET_QUEUE: queue });
      children.push(c);
      return c;
    };

    it('SIGINT drains like SIGTERM and exits 0', async () => {
      const c = await start(uniqueId('q_int'));
      c.proc.kill('SIGINT');
      expect(await c.exited).toEqual({ code: 0, signal: null });
      expect(c.output()).toMatch(/"signal":"SIGINT".*"msg":"shutting down"/);
    });

    it('a second signal during the drain exits 1 at once', async () => {
      const queueName = uniqueId('q_twice');
      const c = await start(queueName);
      const queue = createLensQueue({ connection: { url: redisUrl() }, name: queueName });
      onTestFinished(async () => {
        await queue.obliterate({ force: true }).catch(() => {});
        await queue.close();
      });
      await enqueue(queue, { tenant: tenants.dbs[0]!.tenant, lens: 'test.sleep', params: { seconds: 20 } });
      await waitFor('the job to run', async () => (await queue.getActiveCount()) === 1);
      const t0 = Date.now();
      c.proc.kill('SIGTERM');
      await waitFor('the drain to begin', () => c.output().includes('draining: no new jobs'), 10_000, 10);
      c.proc.kill('SIGTERM');
      expect(await c.exited).toEqual({ code: 1, signal: null });
      // long before the 20 s job would have let a drain finish
      expect(Date.now() - t0).toBeLessThan(15_000);
      expect(c.output()).toContain('second signal: exiting now');
    });
  });

  describe('signals during start-up', () => {
    /**
     * A TCP proxy to the test Redis that holds every connection until `open()`: the worker's
     * start-up waits on Redis, so it stays in start-up as long as we want.
     */
    async function gatedRedis(): Promise<{ url: string; open(): void; close(): Promise<void> }> {
      const target = new URL(redisUrl());
      const held: net.Socket[] = [];
      const sockets = new Set<net.Socket>();
      let opened = false;
      const forward = (client: net.Socket) => {
        const upstream = net.connect(Number(target.port), target.hostname);
        sockets.add(upstream);
        client.pipe(upstream).pipe(client);
        const end = () => {
          client.destroy();
          upstream.destroy();
        };
        client.on('error', end).on('close', end);
        upstream.on('error', end).on('close', end);
      };
      const server = net.createServer((client) => {
        sockets.add(client);
        if (opened) forward(client);
        else {
          client.pause();
          held.push(client);
        }
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      return {
        url: `redis://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
        open() {
          opened = true;
          for (const c of held.splice(0)) forward(c);
        },
        close: () =>
          new Promise<void>((resolve) => {
            for (const s of sockets) s.destroy();
            server.close(() => resolve());
          }),
      };
    }

    it('SIGHUP while starting is ignored (not fatal); SIGTERM while starting stops the worker once started, exit 0', async () => {
      const gate = await gatedRedis();
      onTestFinished(() => gate.close());
      const { freePort } = await import('../dev/local/servers.js');
      const port = await freePort();
      const proc = spawn(process.execPath, [WORKER_ENTRY], {
        env: {
          PATH: process.env.PATH ?? '',
          ...activeMutantEnv(),
          REDIS_URL: gate.url,
          PORT: String(port),
          LENSFLEET_METRICS_HOST: '127.0.0.1',
          LENSFLEET_QUEUE: uniqueId('q_start'),
          LENSFLEET_LENS_MODULES: TEST_LENS_MODULE,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
      proc.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
        proc.on('exit', (code, signal) => resolve({ code, signal })),
      );
      onTestFinished(() => {
        if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      });

      // Deep in start-up: HTTP is up, Redis is not reachable through the closed gate, so not ready.
      await waitFor('the HTTP server', async () => (await fetch(`http://127.0.0.1:${port}/health`)).status === 200);
      expect((await fetch(`http://127.0.0.1:${port}/ready`)).status).toBe(503);
      expect(out).not.toContain('worker started');

      proc.kill('SIGHUP');
      await waitFor('the SIGHUP to be logged', () => out.includes('SIGHUP ignored'), 10_000, 10);
      expect(proc.exitCode).toBeNull();
      expect(proc.signalCode).toBeNull();

      proc.kill('SIGTERM');
      await waitFor('the SIGTERM to be logged', () => out.includes('signal during start-up'), 10_000, 10);
      expect(proc.exitCode).toBeNull();

      gate.open();
      expect(await exited).toEqual({ code: 0, signal: null });
      expect(out.indexOf('worker started')).toBeGreaterThan(out.indexOf('signal during start-up'));
      expect(out.indexOf('shutting down')).toBeGreaterThan(out.indexOf('worker started'));
    });
  });
});

describe('CLI exit codes', () => {
  const cli = path.join(ROOT, 'dist/cli/lensfleet.js');
  let w: TestWorker;
  let tenant: string;
  let tenants: Awaited<ReturnType<typeof createTenants>>;
  beforeAll(async () => {
    tenant = uniqueId('yCli');
    tenants = await createTenants([tenant], 5);
    w = await startTestWorker({ env: tenants.env, concurrency: 2 });
  });
  afterAll(async () => {
    await w?.close();
    await tenants?.drop();
  });
  const lensfleet = (args: string[], env: Record<string, string> = {}) => run([cli, ...args], { REDIS_URL: redisUrl(), LENSFLEET_QUEUE: w.queueName, ...env });

  it('0: lenses, help, enqueue, enqueue --wait', async () => {
    expect((await lensfleet(['lenses'])).code).toBe(0);
    const help = await lensfleet(['help']);
    expect(help.code).toBe(0);
    expect(help.output).toContain('REDIS_URL (default redis://127.0.0.1:6379; or REDIS_URL_FILE)');
    const queued = await lensfleet(['enqueue', '--tenant', tenant, '--lens', 'receiving.recent']);
    expect(queued.code).toBe(0);
    expect(JSON.parse(queued.stdout)).toMatchObject({ queue: w.queueName, tenant });
    const done = await lensfleet(['enqueue', '--tenant', tenant, '--lens', 'receiving.recent', '--params', '{"limit":2}', '--wait']);
    expect(done.code).toBe(0);
    expect(JSON.parse(done.stdout)).toMatchObject({ rowCount: 2, tenant });
  });

  it('1: the job failed', async () => {
    const r = await lensfleet(['enqueue', '--tenant', 'yNO_SUCH_TENANT', '--lens', 'receiving.recent', '--wait']);
    expect(r.output).toMatch(/job \d+ failed: TENANT_NOT_FOUND:/);
    expect(r.code).toBe(1);
  });

  it('1: no result within --timeout-ms (no worker on that queue)', async () => {
    const r = await lensfleet(['enqueue', '--tenant', tenant, '--lens', 'receiving.recent', '--wait', '--timeout-ms', '300'], {
      LENSFLEET_QUEUE: uniqueId('q_nobody'),
    });
    expect(r.output).toMatch(/failed: .*timed out|failed: .*300/i);
    expect(r.code).toBe(1);
  });

  it.each([
    ['an unknown command', ['frobnicate'], {}, /unknown command "frobnicate"/],
    ['no command', [], {}, /usage:/],
    ['a missing --lens', ['enqueue', '--tenant', 'yA'], {}, /--tenant and --lens are required/],
    ['an unknown option', ['enqueue', '--tenant', 'yA', '--lens', 'a.b', '--bogus'], {}, /Unknown option '--bogus'/],
    ['params that are not JSON', ['enqueue', '--tenant', 'yA', '--lens', 'a.b', '--params', '{nope'], {}, /--params is not valid JSON/],
    ['an invalid request (tenant id)', ['enqueue', '--tenant', 'not valid!', '--lens', 'a.b'], {}, /INVALID_JOB: .*tenant/],
    ['an invalid LENSFLEET_QUEUE', ['enqueue', '--tenant', 'yA', '--lens', 'a.b'], { LENSFLEET_QUEUE: 'bad:name' }, /LENSFLEET_QUEUE="bad:name"/],
    ['an invalid REDIS_URL', ['enqueue', '--tenant', 'yA', '--lens', 'a.b'], { REDIS_URL: 'http://S3CRET@h' }, /^REDIS_URL: REDIS_URL must be a redis:\/\//],
  ])('2: %s', async (_what, args, env, message) => {
    const r = await lensfleet(args, env);
    expect(r.output).toMatch(message);
    expect(r.output).not.toContain('S3CRET');
    expect(r.code).toBe(2);
  });
});

describe('demo exit codes', () => {
  const demo = path.join(ROOT, 'dist/scripts/demo.js');

  it.each([
    ['a bad number', ['--jobs', 'abc'], /--jobs must be a positive whole number/],
    ['an unknown option', ['--bogus'], /Unknown option '--bogus'/],
  ])('2: %s', async (_what, args, message) => {
    const r = await run([demo, ...args], {});
    expect(r.output).toMatch(message);
    expect(r.code).toBe(2);
  });

  it('0: a small run on the test servers completes every job', async () => {
    const r = await run(
      [demo, '--jobs', '40', '--workers', '1', '--tenants', '1', '--concurrency', '4'],
      {
        REDIS_URL: redisUrl(),
        LENSFLEET_DEMO_ADMIN_URL: pgAdminUrl(),
      },
      120_000,
    );
    expect(r.output).toContain('completed 40, failed 0');
    // The Supabase tenant: its own jobs through the PostgREST stand-in, users through RLS, the stand-in stopped.
    expect(r.output).toMatch(/ySUPA_001 over REST: 4 lens queries[\s\S]*completed 4, failed 0/);
    expect(r.output).toMatch(/ySUPA_001 over REST: the worker sends[\s\S]*user 1 .* 30 rows[\s\S]*user 2 .* 30 rows[\s\S]*service \(no token\) +60 rows/);
    expect(r.output).toContain('PostgREST stand-in exited with 0');
    expect(r.code).toBe(0);
  });
});

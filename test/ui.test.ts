/**
 * The queue UI process (cli/ui.ts, src/ui/) over HTTP, as the Procfile runs it, on the run's
 * Redis: which configurations it refuses, the token (header, one-time ?token= and its session
 * cookie), read-only and read-write. The browser side is test/ui-browser.test.ts.
 */
import { spawnSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseProcfile } from '../cli/procfile.js';
import { enqueue } from '../queues/producer.js';
import { unknownLensfleetVariables } from '../src/config.js';
import { LensfleetError } from '../src/errors.js';
import { isLoopbackHost, loadUiConfig } from '../src/ui/config.js';
import { SESSION_COOKIE } from '../src/ui/gate.js';
import { ROOT, startTestWorker, type TestWorker, waitFor } from './support/harness.js';
import { runUiToExit, startUi, UI_TOKEN, type UiProcess } from './support/ui.js';

const bearer = { authorization: `Bearer ${UI_TOKEN}` };

describe('queue UI settings', () => {
  it('reads its own table, the queue and Redis as the worker does; the token may come from a file', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'lf-ui-'));
    try {
      const file = path.join(dir, 'token');
      writeFileSync(file, `${UI_TOKEN}\n`);
      const c = loadUiConfig({
        LENSFLEET_UI_TOKEN_FILE: file,
        LENSFLEET_UI_READ_WRITE: 'on',
        PORT: '7001',
        LENSFLEET_UI_PORT: '7002',
        LENSFLEET_UI_HOST: '10.0.0.5',
        LENSFLEET_QUEUE: 'q-ui',
        REDIS_URL: 'redis://r:6380/2',
        LOG_LEVEL: 'warn',
      });
      expect(c.token?.reveal()).toBe(UI_TOKEN);
      expect([c.readWrite, c.port, c.host, c.queueName, c.logLevel]).toEqual([true, 7001, '10.0.0.5', 'q-ui', 'warn']);
      expect(c.redis.mode === 'standalone' && c.redis.url.reveal()).toBe('redis://r:6380/2');
      expect(loadUiConfig({ LENSFLEET_UI_HOST: '127.0.0.1' })).toMatchObject({ token: undefined, readWrite: false, port: 9465, queueName: 'lens-queries' });
      expect(JSON.stringify(c)).not.toContain(UI_TOKEN);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses an open UI: no token on a reachable address, read-write without a token (loopback too), a short token', () => {
    const refused = (env: Record<string, string>): string => {
      try {
        loadUiConfig(env);
      } catch (err) {
        expect(err).toBeInstanceOf(LensfleetError);
        expect((err as LensfleetError).code).toBe('INVALID_CONFIG');
        return (err as Error).message;
      }
      throw new Error(`accepted ${JSON.stringify(env)}`);
    };
    expect(refused({})).toMatch(/^LENSFLEET_UI_TOKEN is not set and LENSFLEET_UI_HOST=0\.0\.0\.0 is reachable/);
    expect(refused({ LENSFLEET_UI_HOST: '::' })).toContain('LENSFLEET_UI_TOKEN is not set');
    expect(refused({ LENSFLEET_UI_HOST: '127.0.0.1', LENSFLEET_UI_READ_WRITE: 'on' })).toMatch(
      /^LENSFLEET_UI_READ_WRITE is on but LENSFLEET_UI_TOKEN is not set/,
    );
    const short = refused({ LENSFLEET_UI_TOKEN: 'sh0rt-S3CRET' });
    expect(short).toBe('LENSFLEET_UI_TOKEN: LENSFLEET_UI_TOKEN must be at least 16 characters');
    expect(refused({ LENSFLEET_UI_TOKEN: UI_TOKEN, LENSFLEET_UI_READ_WRITE: 'maybe' })).toContain('LENSFLEET_UI_READ_WRITE');
  });

  it('only loopback addresses count as loopback', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost', '::ffff:127.0.0.1']) expect(isLoopbackHost(h), h).toBe(true);
    for (const h of ['0.0.0.0', '::', '10.0.0.1', '127.example.com', 'localhost.example.com', '::2']) expect(isLoopbackHost(h), h).toBe(false);
  });

  it('its variables are known ones (a shared environment does not warn about them)', () => {
    expect(
      unknownLensfleetVariables({
        LENSFLEET_UI_TOKEN: 'x',
        LENSFLEET_UI_TOKEN_FILE: 'x',
        LENSFLEET_UI_READ_WRITE: 'x',
        LENSFLEET_UI_PORT: 'x',
        LENSFLEET_UI_HOST: 'x',
      }),
    ).toEqual([]);
  });

  it('`lensfleet ui --help` prints its usage (exit 0); arguments are bad usage (exit 2)', () => {
    const help = spawnSync(process.execPath, [path.join(ROOT, 'dist/cli/lensfleet.js'), 'ui', '--help'], { encoding: 'utf8' });
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('usage: lensfleet ui');
    expect(help.stdout).toContain('LENSFLEET_UI_READ_WRITE=on');
    const bad = spawnSync(process.execPath, [path.join(ROOT, 'dist/cli/ui.js'), '--port', '1'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('unexpected arguments: --port 1');
  });

  it('the Procfile has a ui type running dist/cli/ui.js', () => {
    expect(parseProcfile(readFileSync(path.join(ROOT, 'Procfile'), 'utf8'))).toContainEqual({ name: 'ui', command: 'node dist/cli/ui.js' });
  });
});

describe('queue UI process', () => {
  let worker: TestWorker;
  let readOnly: UiProcess;
  let readWrite: UiProcess;
  /** Ids of jobs that failed with TENANT_NOT_FOUND. */
  const failed: string[] = [];

  beforeAll(async () => {
    worker = await startTestWorker({ env: {} });
    for (let i = 0; i < 3; i++) {
      const job = await enqueue(worker.queue, { tenant: `yNoSuchTenant${i}`, lens: 'receiving.recent', params: {} });
      await expect(job.waitUntilFinished(worker.events, 30_000)).rejects.toThrow(/TENANT_NOT_FOUND/);
      failed.push(job.id!);
    }
    // No worker takes a retried job: its state after a retry stays visible.
    await worker.service.close();
    const queue = { LENSFLEET_QUEUE: worker.queueName, LENSFLEET_UI_TOKEN: UI_TOKEN };
    [readOnly, readWrite] = await Promise.all([startUi(queue), startUi({ ...queue, LENSFLEET_UI_READ_WRITE: 'on' })]);
  });
  afterAll(async () => {
    await Promise.all([readOnly?.stop(), readWrite?.stop()]);
    await worker?.close();
  });

  it('refuses to start without a token on a reachable address: exit 78 naming the setting, never a token', async () => {
    const open = await runUiToExit({ LENSFLEET_UI_HOST: '0.0.0.0' });
    expect(open.code).toBe(78);
    expect(open.output).toContain('LENSFLEET_UI_TOKEN is not set and LENSFLEET_UI_HOST=0.0.0.0');
    const short = await runUiToExit({ LENSFLEET_UI_TOKEN: 'sh0rt-S3CRET' });
    expect(short.code).toBe(78);
    expect(short.output).toContain('LENSFLEET_UI_TOKEN must be at least 16 characters');
    expect(short.output).not.toContain('S3CRET');
  });

  it('without the token: 401 with WWW-Authenticate for the page and the API; a wrong token too; /health answers', async () => {
    for (const p of ['/', '/api/queues', `/queue/${worker.queueName}`]) {
      const r = await fetch(`${readOnly.url}${p}`);
      expect(r.status, p).toBe(401);
      expect(r.headers.get('www-authenticate')).toMatch(/^Bearer/);
    }
    expect((await fetch(`${readOnly.url}/api/queues`, { headers: { authorization: 'Bearer wrong-token-0123456789' } })).status).toBe(401);
    expect((await fetch(`${readOnly.url}/health`)).status).toBe(200);
    expect((await fetch(`${readOnly.url}/`, { headers: bearer })).status).toBe(200);
    expect(readOnly.output()).not.toContain(UI_TOKEN);
  });

  it('?token= once: 303 to the URL without it, with an HttpOnly SameSite=Lax session cookie that holds no token; a wrong one sets none', async () => {
    const r = await fetch(`${readOnly.url}/queue/${worker.queueName}?status=failed&token=${UI_TOKEN}`, { redirect: 'manual' });
    expect(r.status).toBe(303);
    expect(r.headers.get('location')).toBe(`/queue/${worker.queueName}?status=failed`);
    const cookie = r.headers.get('set-cookie') ?? '';
    expect(cookie).toMatch(new RegExp(`^${SESSION_COOKIE}=[^;]+; Max-Age=43200; Path=/; HttpOnly; SameSite=Lax$`));
    expect(cookie).not.toContain(UI_TOKEN);
    const session = cookie.split(';')[0]!;
    const page = await fetch(`${readOnly.url}/api/queues`, { headers: { cookie: session } });
    expect(page.status).toBe(200);
    const wrong = await fetch(`${readOnly.url}/?token=wrong-token-0123456789`, { redirect: 'manual' });
    expect(wrong.status).toBe(401);
    expect(wrong.headers.get('set-cookie')).toBeNull();
  });

  it('a forged or expired session cookie is refused', async () => {
    const cookieFor = (expires: number, key = UI_TOKEN) =>
      `${SESSION_COOKIE}=${expires}.${createHmac('sha256', key).update(`lensfleet-ui-session:${expires}`).digest('base64url')}`;
    const nowS = Math.floor(Date.now() / 1000);
    const status = async (cookie: string) => (await fetch(`${readOnly.url}/api/queues`, { headers: { cookie } })).status;
    expect(await status(cookieFor(nowS + 600))).toBe(200);
    expect(await status(cookieFor(nowS - 1))).toBe(401);
    expect(await status(cookieFor(nowS + 600, 'another-token-0123456789'))).toBe(401);
    expect(await status(`${SESSION_COOKIE}=${nowS + 600}.${'A'.repeat(43)}`)).toBe(401);
  });

  it('read-only: retry, remove, add, empty and pause are refused (405) and the failed job stays failed', async () => {
    const api = `${readOnly.url}/api/queues/${worker.queueName}`;
    const id = failed[0]!;
    for (const [method, p] of [
      ['PUT', `/${id}/retry`],
      ['PUT', `/${id}/clean`],
      ['PUT', '/retry/failed'],
      ['PUT', '/clean/failed'],
      ['POST', '/add'],
      ['PUT', '/empty'],
      ['PUT', '/pause'],
    ] as const) {
      const r = await fetch(`${api}${p}`, { method, headers: { ...bearer, 'content-type': 'application/json' }, body: '{}' });
      expect(r.status, `${method} ${p}`).toBe(405);
      // by lensfleet's gate, before bull-board (which would refuse most of them too)
      expect(((await r.json()) as { error: string }).error, `${method} ${p}`).toContain('read-only (LENSFLEET_UI_READ_WRITE=on');
    }
    // Refused by the gate, whatever bull-board does with it (it answers "pause all" with 200, pausing only writable queues).
    expect((await fetch(`${readOnly.url}/api/queues/pause`, { method: 'PUT', headers: bearer })).status).toBe(405);
    const queues = (await (await fetch(`${readOnly.url}/api/queues`, { headers: bearer })).json()) as { queues: { readOnlyMode: boolean }[] };
    expect(queues.queues[0]?.readOnlyMode).toBe(true);
    expect(await worker.queue.getJobState(id)).toBe('failed');
    expect(await worker.queue.getJobCountByTypes('failed')).toBe(3);
    expect(await worker.queue.isPaused()).toBe(false);
  });

  it('read-write: retry and remove are served; add, empty and pause are not (405)', async () => {
    const api = `${readWrite.url}/api/queues/${worker.queueName}`;
    const put = (p: string) => fetch(`${api}${p}`, { method: 'PUT', headers: bearer });
    expect((await put(`/${failed[0]}/retry`)).status).toBe(204);
    await waitFor('the retried job to wait for a worker', async () => (await worker.queue.getJobState(failed[0]!)) === 'waiting');
    expect((await put(`/${failed[1]}/clean`)).status).toBe(204);
    expect(await worker.queue.getJob(failed[1]!)).toBeUndefined();
    for (const [method, p] of [
      ['POST', '/add'],
      ['PUT', '/empty'],
      ['PUT', '/pause'],
      ['PUT', '/obliterate'],
      ['PATCH', `/${failed[2]}/update-data`],
    ] as const) {
      const r = await fetch(`${api}${p}`, { method, headers: { ...bearer, 'content-type': 'application/json' }, body: '{}' });
      expect(r.status, `${method} ${p}`).toBe(405);
    }
    expect(await worker.queue.isPaused()).toBe(false);
    expect(await worker.queue.getJobState(failed[2]!)).toBe('failed');
  });

  it('read-write: a change carried by the session cookie must come from the UI’s own origin (403 otherwise)', async () => {
    const session = (await fetch(`${readWrite.url}/?token=${UI_TOKEN}`, { redirect: 'manual' })).headers.get('set-cookie')!.split(';')[0]!;
    const retry = `${readWrite.url}/api/queues/${worker.queueName}/${failed[2]}/retry`;
    expect((await fetch(retry, { method: 'PUT', headers: { cookie: session } })).status).toBe(403);
    expect((await fetch(retry, { method: 'PUT', headers: { cookie: session, origin: 'https://evil.example' } })).status).toBe(403);
    expect(await worker.queue.getJobState(failed[2]!)).toBe('failed');
    expect((await fetch(retry, { method: 'PUT', headers: { cookie: session, origin: readWrite.url } })).status).toBe(204);
  });

  it('on loopback without a token it is open and read-only; SIGTERM stops it with exit 0', async () => {
    const local = await startUi({ LENSFLEET_QUEUE: worker.queueName });
    try {
      expect((await fetch(`${local.url}/api/queues`)).status).toBe(200);
      expect((await fetch(`${local.url}/api/queues/${worker.queueName}/${failed[2]}/clean`, { method: 'PUT' })).status).toBe(405);
    } finally {
      expect(await local.stop()).toBe(0);
    }
  });
});

/**
 * Secrets from files (Docker / Kubernetes secrets) in a real worker process: REDIS_URL_FILE,
 * <ID>_DATABASE_URL_FILE and LENSFLEET_HTTP_TOKEN_FILE are read once, at start: the worker keeps
 * working after the files are gone (a pool opened afterwards still connects), and no secret
 * appears in its output.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLensQueue, enqueue, QueueEvents, type LensQueue } from '../queues/producer.js';
import { createTenants, killWorker, redisUrl, spawnWorker, uniqueId, type ChildWorker } from './support/harness.js';

const TENANT = uniqueId('yFile');
const QUEUE = uniqueId('q_files');
const TOKEN = 'file-token-0123456789abcdef';

describe('secrets from *_FILE variables', () => {
  let tenants: Awaited<ReturnType<typeof createTenants>>;
  let worker: ChildWorker | undefined;
  let queue: LensQueue;
  let events: QueueEvents;
  let dir: string;

  beforeAll(async () => {
    tenants = await createTenants([TENANT], 5);
    dir = mkdtempSync(path.join(os.tmpdir(), 'lf-secrets-'));
    const file = (name: string, value: string) => {
      writeFileSync(path.join(dir, name), `${value}\n`, { mode: 0o600 });
      return path.join(dir, name);
    };
    const dbUrl = tenants.env[`${TENANT}_DATABASE_URL`]!;
    worker = await spawnWorker({
      LENSFLEET_TENANTS: TENANT,
      LENSFLEET_QUEUE: QUEUE,
      // no direct variables: spawnWorker's REDIS_URL is blanked so that the file is the only source
      REDIS_URL: '',
      REDIS_URL_FILE: file('redis_url', redisUrl()),
      [`${TENANT}_DATABASE_URL_FILE`]: file('db_url', dbUrl),
      LENSFLEET_HTTP_TOKEN_FILE: file('http_token', TOKEN),
    });
    queue = createLensQueue({ connection: { url: redisUrl() }, name: QUEUE });
    events = new QueueEvents(QUEUE, { connection: { url: redisUrl() } });
    await events.waitUntilReady();
  });
  afterAll(async () => {
    await killWorker(worker);
    await events?.close();
    await queue?.obliterate({ force: true }).catch(() => {});
    await queue?.close();
    await tenants?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads them once at start: with the files removed, the first job still opens its pool and completes', async () => {
    rmSync(dir, { recursive: true, force: true });
    const job = await enqueue(queue, { tenant: TENANT, lens: 'test.whoami' });
    const r = await job.waitUntilFinished(events, 20_000);
    expect(r.rows[0]).toMatchObject({ db: tenants.dbs[0]!.database });
  });

  it('the token from its file guards /pools', async () => {
    const url = `http://127.0.0.1:${worker!.port}/pools`;
    expect((await fetch(url)).status).toBe(401);
    expect((await fetch(url, { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(200);
  });

  it('no secret in the output', () => {
    const password = new URL(tenants.env[`${TENANT}_DATABASE_URL`]!).password;
    expect(password.length).toBeGreaterThan(0);
    expect(worker!.output()).not.toContain(password);
    expect(worker!.output()).not.toContain(TOKEN);
  });
});

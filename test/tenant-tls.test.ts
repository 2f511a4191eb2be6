/**
 * TLS to a tenant's database, against a real Postgres with `ssl = on` and a throwaway
 * certificate (dev/local/tls.ts):
 * - `sslmode=verify-full&sslrootcert=<CA>` runs lenses, and the server sees every connection of
 *   the tenant's role encrypted (pg_stat_ssl);
 * - node-pg's `sslmode=require` (which verifies, unlike libpq's) against a certificate it cannot
 *   verify fails with CONNECTION_FAILED saying what to put in the URL, and no secret;
 * - `uselibpqcompat=true&sslmode=require` encrypts without verifying;
 * - `lensfleet tenants check` reports each tenant's TLS as the connection had it;
 * - the worker warns at start about tenants on another host without TLS (not about
 *   `sslmode=disable`, a stated choice) and about TLS without verification, never with a secret.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPostgres, type LocalPostgres } from '../dev/local/servers.js';
import { createTenantDatabase, type TenantDatabase } from '../dev/local/tenant-db.js';
import { hasOpenssl, makeSelfSignedCert, type SelfSignedCert } from '../dev/local/tls.js';
import { enqueue } from '../queues/producer.js';
import { tlsHint } from '../src/pool/ledger.js';
import { postgresTransport, transportWarnings } from '../src/transport.js';
import { Secret } from '../src/secret.js';
import type { Tenant } from '../src/tenants.js';
import { admin, redisUrl, ROOT, startTestWorker, uniqueId, type TestWorker } from './support/harness.js';
import { runNode } from './support/process.js';

describe('what a tenant URL means for TLS (node-pg’s reading)', () => {
  const at = (q: string, host = 'db.example.com') => postgresTransport(`postgres://u:p@${host}:5432/d${q}`, {});
  it.each([
    ['', 'off', false],
    ['?sslmode=disable', 'off', true],
    ['?sslmode=require', 'verified', true],
    ['?sslmode=prefer', 'verified', true],
    ['?sslmode=verify-full', 'verified', true],
    ['?sslmode=no-verify', 'unverified', true],
    ['?sslrootcert=/etc/ca.pem', 'verified', true],
    ['?uselibpqcompat=true&sslmode=require', 'unverified', true],
    ['?uselibpqcompat=true&sslmode=verify-ca', 'unverified', true],
    ['?uselibpqcompat=true&sslmode=verify-full', 'verified', true],
    ['?ssl=true', 'verified', true],
    ['?ssl=0', 'off', true],
    ['?ssl=no-verify', 'unverified', true],
  ] as const)('%s → %s', (q, tls, explicit) => {
    expect(at(q)).toEqual({ host: 'db.example.com', local: false, tls, explicit });
  });

  it('PGSSLMODE applies when the URL says nothing; loopback and Unix sockets are local', () => {
    expect(postgresTransport('postgres://u:p@db.example.com/d', { PGSSLMODE: 'require' })).toMatchObject({ tls: 'verified', explicit: true });
    expect(postgresTransport('postgres://u:p@db.example.com/d?sslmode=disable', { PGSSLMODE: 'require' })).toMatchObject({ tls: 'off' });
    for (const host of ['127.0.0.1', 'localhost', '[::1]']) expect(at('', host).local).toBe(true);
    expect(postgresTransport('postgres://u:p@db.example.com/d?host=/var/run/postgresql', {})).toMatchObject({ local: true, host: '/var/run/postgresql' });
    expect(at('', '10.0.0.5').local).toBe(false);
  });

  it('the warning lists tenants in clear (not sslmode=disable, not local) and unverified ones; Supabase over http is in clear', () => {
    const pgT = (id: string, url: string): Tenant => ({ id, backend: 'pg', databaseUrl: new Secret(url), pool: {} as never, pooling: true });
    const sb = (id: string, url: string): Tenant => ({
      id,
      backend: 'supabase',
      supabaseUrl: url,
      serviceKey: new Secret('k'),
      pool: {} as never,
      pooling: true,
    });
    const w = transportWarnings(
      [
        pgT('clear', 'postgres://u:p@db.example.com/d'),
        pgT('stated', 'postgres://u:p@db.example.com/d?sslmode=disable'),
        pgT('local', 'postgres://u:p@127.0.0.1/d'),
        pgT('verified', 'postgres://u:p@db.example.com/d?sslmode=verify-full'),
        pgT('noverify', 'postgres://u:p@db.example.com/d?sslmode=no-verify'),
        sb('sbhttp', 'http://api.example.com'),
        sb('sbhttps', 'https://api.example.com'),
        sb('sblocal', 'http://127.0.0.1:54321'),
      ],
      {},
    );
    expect(w).toEqual({ clear: ['clear', 'sbhttp'], unverified: ['noverify'] });
  });

  it('a certificate that could not be verified gets the fix in the error; other errors get nothing added', () => {
    for (const code of ['DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'ERR_TLS_CERT_ALTNAME_INVALID']) {
      expect(tlsHint(code, 'x')).toContain('sslrootcert=<file>');
    }
    expect(tlsHint('error', 'The server does not support SSL connections')).toContain('ssl = off');
    expect(tlsHint('ECONNREFUSED', 'connect ECONNREFUSED')).toBe('');
  });
});

describe('TLS to a tenant database, end to end', () => {
  const VERIFIED = uniqueId('yTlsVf');
  const PG_REQUIRE = uniqueId('yTlsReq');
  const LIBPQ_REQUIRE = uniqueId('yTlsLpq');
  const PLAIN = uniqueId('yTlsPln');
  const REMOTE_CLEAR = uniqueId('yTlsRc');
  const REMOTE_STATED = uniqueId('yTlsRs');
  const remotePassword = 'Rem0teSecret42';
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lf-tls-'));
  let cert: SelfSignedCert;
  let server: LocalPostgres;
  let db: TenantDatabase;
  let worker: TestWorker;
  let env: Record<string, string>;

  beforeAll(async () => {
    // Never skipped: Debian's postgresql brings openssl (through ssl-cert); .ci/run installs it too.
    if (!hasOpenssl()) throw new Error('openssl is missing: apt-get install openssl');
    cert = makeSelfSignedCert(dir);
    server = await startPostgres({ fsync: false, extraConfig: { ssl: 'on', ssl_cert_file: cert.certFile, ssl_key_file: cert.keyFile } });
    db = await createTenantDatabase(server.adminUrl(), VERIFIED, { rows: 5 });
    const url = (q: string) => `${db.databaseUrl}${q}`;
    env = {
      LENSFLEET_TENANTS: [VERIFIED, PG_REQUIRE, LIBPQ_REQUIRE, PLAIN, REMOTE_CLEAR, REMOTE_STATED].join(','),
      [`${VERIFIED}_DATABASE_URL`]: url(`?sslmode=verify-full&sslrootcert=${encodeURIComponent(cert.certFile)}`),
      [`${PG_REQUIRE}_DATABASE_URL`]: url('?sslmode=require'),
      [`${LIBPQ_REQUIRE}_DATABASE_URL`]: url('?uselibpqcompat=true&sslmode=require'),
      [`${PLAIN}_DATABASE_URL`]: db.databaseUrl,
      // Never connected to (no job names them): they are here for the warning at start.
      [`${REMOTE_CLEAR}_DATABASE_URL`]: `postgres://reader:${remotePassword}@db.invalid:5432/x`,
      [`${REMOTE_STATED}_DATABASE_URL`]: `postgres://reader:${remotePassword}@db.invalid:5432/x?sslmode=disable`,
    };
    worker = await startTestWorker({ env });
  }, 120_000);

  afterAll(async () => {
    await worker?.close();
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** The server's view of the tenant role's connections: encrypted or not, and how. */
  const sslOfRole = () =>
    admin(
      async (c) =>
        (
          await c.query<{ ssl: boolean; version: string | null }>(
            "SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.usename = $1 AND a.backend_type = 'client backend'",
            [db.role],
          )
        ).rows,
      server.adminUrl(),
    );

  it('verify-full with the CA: lenses run, and the server sees only encrypted connections of the tenant', async () => {
    for (const tenant of [VERIFIED, LIBPQ_REQUIRE]) {
      const job = await enqueue(worker.queue, { tenant, lens: 'receiving.recent', params: { limit: 3 } });
      await expect(job.waitUntilFinished(worker.events, 30_000)).resolves.toMatchObject({ rowCount: 3 });
    }
    const rows = await sslOfRole();
    expect(rows.length).toBeGreaterThan(0);
    for (const r of rows) expect(r).toMatchObject({ ssl: true, version: expect.stringMatching(/^TLSv1\.[23]$/) });
    // The plain URL to the same server: the server sees one unencrypted connection of the role.
    const plain = await enqueue(worker.queue, { tenant: PLAIN, lens: 'receiving.recent', params: { limit: 1 } });
    await plain.waitUntilFinished(worker.events, 30_000);
    expect((await sslOfRole()).filter((r) => !r.ssl).length).toBeGreaterThan(0);
  });

  it('node-pg’s sslmode=require verifies: against a certificate it cannot verify, CONNECTION_FAILED with the fix and no secret', async () => {
    const job = await enqueue(worker.queue, { tenant: PG_REQUIRE, lens: 'receiving.recent', params: {} }, { attempts: 1 });
    const err = await job.waitUntilFinished(worker.events, 30_000).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err?.message).toMatch(/^CONNECTION_FAILED: /);
    expect(err?.message).toContain('SELF_SIGNED_CERT');
    expect(err?.message).toContain('sslrootcert=<file>');
    expect(err?.message).toContain('uselibpqcompat=true');
    expect(err?.message).not.toContain(db.password);
  });

  it('the worker warned at start about the remote tenant without TLS, not the one with sslmode=disable, and without a secret', () => {
    const warnings = worker.logs.find((e) => e.level === 40 && e.tls === 'off');
    expect(warnings).toHaveLength(1);
    expect(String(warnings[0]!.msg)).toContain(REMOTE_CLEAR);
    expect(String(warnings[0]!.msg)).not.toContain(REMOTE_STATED);
    expect(String(warnings[0]!.msg)).toContain('sslmode=verify-full');
    expect(worker.logs.find((e) => e.tls === 'unverified')).toHaveLength(0);
    expect(worker.logs.text()).not.toContain(remotePassword);
  });

  it('lensfleet tenants check reports each tenant’s TLS as its connection had it', async () => {
    const only = [VERIFIED, LIBPQ_REQUIRE, PLAIN];
    const r = await runNode([path.join(ROOT, 'dist/cli/lensfleet.js'), 'tenants', 'check', '--json'], {
      ...env,
      LENSFLEET_TENANTS: only.join(','),
      REDIS_URL: redisUrl(),
    });
    expect(r.code, r.output).toBe(0);
    const { tenants: checks } = JSON.parse(r.stdout) as { tenants: { tenant: string; tls: boolean; tlsProtocol: string | null }[] };
    const reports = new Map(checks.map((t) => [t.tenant, t]));
    expect(reports.get(VERIFIED)).toMatchObject({ tls: true, tlsProtocol: expect.stringMatching(/^TLSv1\.[23]$/) });
    expect(reports.get(LIBPQ_REQUIRE)).toMatchObject({ tls: true });
    expect(reports.get(PLAIN)).toMatchObject({ tls: false, tlsProtocol: null });
    expect(r.stdout + r.stderr).not.toContain(db.password);
  });
});

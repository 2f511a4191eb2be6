/**
 * Test tokens: mint HS*, RS*, ES*, EdDSA JWTs (and hostile ones jose would refuse to make: alg
 * none, HMAC keyed with a public key), and serve a JWKS over loopback HTTP whose keys and
 * behaviour (down, slow, wrong status) a test can change.
 */
import { createHmac } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { exportJWK, exportSPKI, generateKeyPair, type JWK, SignJWT } from 'jose';

export type AsymmetricAlg = 'RS256' | 'PS256' | 'ES256' | 'EdDSA';
type SigningKey = Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];

/** An asymmetric key pair with its public JWK (for a JWKS) and SPKI PEM (for confusion attacks). */
export interface TestKeyPair {
  readonly alg: AsymmetricAlg;
  readonly kid: string;
  readonly privateKey: SigningKey;
  readonly publicJwk: JWK;
  readonly publicPem: string;
}

export async function generateTestKeyPair(alg: AsymmetricAlg, kid: string): Promise<TestKeyPair> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { alg, kid, privateKey, publicJwk, publicPem: await exportSPKI(publicKey) };
}

export type Claims = Record<string, unknown>;

/** Seconds since the epoch. */
export const nowSeconds = (): number => Math.floor(Date.now() / 1000);

/** Claims of a typical Supabase user token, valid for an hour from `now` (seconds), with overrides. */
export function userClaims(overrides: Claims = {}, now = nowSeconds()): Claims {
  return { sub: 'user-1', role: 'authenticated', aud: 'authenticated', iat: now, exp: now + 3600, ...overrides };
}

/** Sign `claims` with an HMAC secret (HS256 unless `alg` says otherwise). Undefined claims are dropped. */
export async function hmacToken(secret: string | Uint8Array, claims: Claims, alg: 'HS256' | 'HS384' | 'HS512' = 'HS256'): Promise<string> {
  const key = typeof secret === 'string' ? new TextEncoder().encode(secret) : secret;
  return new SignJWT(defined(claims)).setProtectedHeader({ alg, typ: 'JWT' }).sign(key);
}

/** Sign `claims` with an asymmetric key, naming its kid (or `kid` when given; null = no kid). */
export async function keyPairToken(pair: TestKeyPair, claims: Claims, kid: string | null = pair.kid): Promise<string> {
  const header = kid === null ? { alg: pair.alg, typ: 'JWT' } : { alg: pair.alg, typ: 'JWT', kid };
  return new SignJWT(defined(claims)).setProtectedHeader(header).sign(pair.privateKey);
}

/**
 * A token built by hand, which jose would refuse to produce: any header (e.g. `alg: none`), and
 * an HMAC-SHA256 signature keyed with arbitrary bytes (e.g. a public key PEM), or none.
 */
export function rawToken(header: Claims, claims: Claims, hmacKey?: string | Buffer): string {
  return rawTextToken(JSON.stringify(header), JSON.stringify(claims), hmacKey);
}

/** Like rawToken, from the header's and payload's texts as given (which need not be JSON). */
export function rawTextToken(header: string, payload: string | Buffer, hmacKey?: string | Buffer): string {
  const input = `${Buffer.from(header).toString('base64url')}.${Buffer.from(payload).toString('base64url')}`;
  const signature = hmacKey === undefined ? '' : createHmac('sha256', hmacKey).update(input).digest('base64url');
  return `${input}.${signature}`;
}

function defined(claims: Claims): Claims {
  return Object.fromEntries(Object.entries(claims).filter(([, v]) => v !== undefined));
}

export type JwksMode = 'ok' | 'status500' | 'notJson' | 'silent';

/** A JWKS endpoint on loopback. `close()` it in the test's cleanup. */
export interface JwksServer {
  readonly url: string;
  /** GET requests served so far. */
  readonly requests: number;
  /** Replace the published keys. */
  setKeys(keys: readonly JWK[]): void;
  /** ok = serve the keys; status500; notJson = 200 with HTML; silent = accept and never answer. */
  setMode(mode: JwksMode): void;
  close(): Promise<void>;
}

export async function startJwksServer(keys: readonly JWK[]): Promise<JwksServer> {
  let current = [...keys];
  let mode: JwksMode = 'ok';
  let requests = 0;
  const sockets = new Set<Socket>();
  const server = http.createServer((_req, res) => {
    requests++;
    if (mode === 'silent') return; // never answers: the client's timeout is the point
    if (mode === 'status500') {
      res.writeHead(500).end('boom');
      return;
    }
    if (mode === 'notJson') {
      res.writeHead(200, { 'content-type': 'text/html' }).end('<html>login</html>');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: current }));
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/.well-known/jwks.json`,
    get requests() {
      return requests;
    },
    setKeys(next) {
      current = [...next];
    },
    setMode(next) {
      mode = next;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A loopback URL on which nothing listens (connection refused). */
export async function refusedUrl(): Promise<string> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}/.well-known/jwks.json`;
}

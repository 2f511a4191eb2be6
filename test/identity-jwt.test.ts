/**
 * Verifying a job's user token against its own tenant's key: every hostile token fails with its
 * own code, a good one yields the role, subject and claims, and no error ever holds the token or
 * a claim value.
 */
import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { ERROR_CODES, type ErrorCode, LensfleetError } from '../src/errors.js';
import { JWT_MAX_LENGTH } from '../src/ids.js';
import { createJwtVerifier, type JwtVerifierOptions, type VerifiedIdentity } from '../src/identity/jwt.js';
import { parseTenantAuth, type RawTenantAuth, type TenantAuthSettings } from '../src/identity/settings.js';
import {
  type Claims,
  generateTestKeyPair,
  hmacToken,
  type JwksServer,
  keyPairToken,
  rawTextToken,
  rawToken,
  refusedUrl,
  startJwksServer,
  type TestKeyPair,
  userClaims,
} from './support/tokens.js';

const SECRET_A = 'tenant-A-secret-0123456789-0123456789';
const SECRET_B = 'tenant-B-secret-9876543210-9876543210';
/** Planted in every hostile token's claims; must never come back in an error. */
const CANARY = 'CANARY-7f3a9c-do-not-leak';
/** A fixed clock, so skew tests are exact (seconds). */
const NOW = 1_900_000_000;
const clock: JwtVerifierOptions = { now: () => NOW * 1000 };

function settings(raw: RawTenantAuth, tenant = 'A'): TenantAuthSettings {
  const s = parseTenantAuth(tenant, raw);
  if (s === undefined) throw new Error('expected settings');
  return s;
}

/** Claims valid at NOW, with the canary in a custom claim and in the subject. */
function claims(overrides: Claims = {}): Claims {
  return userClaims({ sub: `user-${CANARY}`, canary: CANARY, email: `${CANARY}@example.com`, ...overrides }, NOW);
}

/** The rejection of `promise`, checked to be `code` with `reason`, and to hold no canary nor token anywhere. */
async function expectAuthError(promise: Promise<VerifiedIdentity>, code: ErrorCode, reason: string, token?: string): Promise<LensfleetError> {
  const err = await promise.then(
    () => {
      throw new Error(`expected ${code}, but the token was accepted`);
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(LensfleetError);
  const e = err as LensfleetError;
  expect({ code: e.code, reason: e.details.reason }).toEqual({ code, reason });
  // Everything a log line, a failedReason or a stack trace could show: message, details, the whole
  // cause chain, and inspect's rendering of all of it.
  const shown = [e.message, e.toString(), e.stack ?? '', JSON.stringify(e.details), inspect(e, { depth: Number.POSITIVE_INFINITY, showHidden: true })];
  for (let c: unknown = e.cause; c !== undefined && c !== null; c = (c as { cause?: unknown }).cause)
    shown.push(inspect(c, { depth: Number.POSITIVE_INFINITY }));
  for (const text of shown) {
    expect(text).not.toContain(CANARY);
    if (token !== undefined && token.length > 20) {
      expect(text).not.toContain(token);
      // Any of its parts alone (a claims segment would decode to the canary).
      for (const part of token.split('.')) if (part.length > 8) expect(text).not.toContain(part);
    }
  }
  return e;
}

describe('HS256 tenant (jwtSecret)', () => {
  const verifier = createJwtVerifier('A', settings({ jwtSecret: SECRET_A }), clock);

  it('a valid token yields its role, subject and claims (claims frozen, claimsJson for request.jwt.claims)', async () => {
    const id = await verifier.verify(await hmacToken(SECRET_A, userClaims({ sub: 'user-42', app: { plan: 'pro' } }, NOW)));
    expect(id.role).toBe('authenticated');
    expect(id.subject).toBe('user-42');
    expect(id.claims).toMatchObject({ sub: 'user-42', role: 'authenticated', aud: 'authenticated', exp: NOW + 3600, app: { plan: 'pro' } });
    expect(JSON.parse(id.claimsJson)).toEqual(id.claims);
    expect(Object.isFrozen(id.claims)).toBe(true);
    expect(Object.isFrozen(id.claims.app)).toBe(true);
  });

  it('HS384 and HS512 with the same secret are accepted too', async () => {
    for (const alg of ['HS384', 'HS512'] as const) {
      expect((await verifier.verify(await hmacToken(SECRET_A, claims({ role: 'anon' }), alg))).role).toBe('anon');
    }
  });

  it('expired (exp more than the skew ago) → AUTH_EXPIRED', async () => {
    const token = await hmacToken(SECRET_A, claims({ iat: NOW - 7200, exp: NOW - 31 }));
    await expectAuthError(verifier.verify(token), 'AUTH_EXPIRED', 'expired', token);
  });

  it('not yet valid (nbf more than the skew ahead) → AUTH_NOT_YET_VALID', async () => {
    const token = await hmacToken(SECRET_A, claims({ nbf: NOW + 31 }));
    await expectAuthError(verifier.verify(token), 'AUTH_NOT_YET_VALID', 'not_yet_valid', token);
  });

  it('issued in the future (iat more than the skew ahead) → AUTH_NOT_YET_VALID', async () => {
    const token = await hmacToken(SECRET_A, claims({ iat: NOW + 31 }));
    await expectAuthError(verifier.verify(token), 'AUTH_NOT_YET_VALID', 'issued_in_future', token);
  });

  it('clock skew is honoured on both sides: exp up to 30 s past and nbf/iat up to 30 s ahead are accepted', async () => {
    await expect(verifier.verify(await hmacToken(SECRET_A, claims({ iat: NOW - 600, exp: NOW - 29 })))).resolves.toMatchObject({ role: 'authenticated' });
    await expect(verifier.verify(await hmacToken(SECRET_A, claims({ nbf: NOW + 29, iat: NOW + 29 })))).resolves.toMatchObject({ role: 'authenticated' });
    // A tenant with skew 0 refuses the same tokens.
    const strict = createJwtVerifier('A', settings({ jwtSecret: SECRET_A, jwtClockSkewSeconds: 0 }), clock);
    await expectAuthError(strict.verify(await hmacToken(SECRET_A, claims({ exp: NOW - 1 }))), 'AUTH_EXPIRED', 'expired');
    await expectAuthError(strict.verify(await hmacToken(SECRET_A, claims({ nbf: NOW + 1 }))), 'AUTH_NOT_YET_VALID', 'not_yet_valid');
  });

  it('signed with another key (another tenant’s valid token) → AUTH_INVALID signature; tenant B accepts it', async () => {
    const token = await hmacToken(SECRET_B, claims());
    await expectAuthError(verifier.verify(token), 'AUTH_INVALID', 'signature', token);
    const b = createJwtVerifier('B', settings({ jwtSecret: SECRET_B }, 'B'), clock);
    await expect(b.verify(token)).resolves.toMatchObject({ role: 'authenticated' });
  });

  it('a tampered payload (role changed after signing) → AUTH_INVALID signature', async () => {
    const token = await hmacToken(SECRET_A, claims({ role: 'anon' }));
    const [h, , s] = token.split('.');
    const forged = `${h}.${Buffer.from(JSON.stringify(claims({ role: 'authenticated' }))).toString('base64url')}.${s}`;
    await expectAuthError(verifier.verify(forged), 'AUTH_INVALID', 'signature', forged);
  });

  it('alg none (any spelling, with or without a signature) → AUTH_INVALID algorithm', async () => {
    for (const alg of ['none', 'None', 'NONE']) {
      const token = rawToken({ alg, typ: 'JWT' }, claims());
      await expectAuthError(verifier.verify(token), 'AUTH_INVALID', 'algorithm', token);
    }
    const signed = rawToken({ alg: 'none' }, claims(), SECRET_A);
    await expectAuthError(verifier.verify(signed), 'AUTH_INVALID', 'algorithm', signed);
  });

  it('an asymmetric alg on a secret-only tenant → AUTH_INVALID algorithm', async () => {
    const pair = await generateTestKeyPair('RS256', 'k1');
    const token = await keyPairToken(pair, claims());
    await expectAuthError(verifier.verify(token), 'AUTH_INVALID', 'algorithm', token);
  });

  it('role claim service_role / postgres / supabase_admin → AUTH_ROLE_FORBIDDEN', async () => {
    for (const role of ['service_role', 'postgres', 'supabase_admin', 'pg_read_all_data']) {
      const token = await hmacToken(SECRET_A, claims({ role }));
      await expectAuthError(verifier.verify(token), 'AUTH_ROLE_FORBIDDEN', 'role_forbidden', token);
    }
  });

  it('a role not in the allowlist (the role value itself never echoed) → AUTH_ROLE_FORBIDDEN', async () => {
    const token = await hmacToken(SECRET_A, claims({ role: `editor_${CANARY}` }));
    await expectAuthError(verifier.verify(token), 'AUTH_ROLE_FORBIDDEN', 'role_forbidden', token);
    // Case matters: Postgres role names are case-sensitive.
    await expectAuthError(verifier.verify(await hmacToken(SECRET_A, claims({ role: 'Authenticated' }))), 'AUTH_ROLE_FORBIDDEN', 'role_forbidden');
  });

  it('a hand-built settings object listing a privileged role still cannot obtain it', async () => {
    const unsafe: TenantAuthSettings = { ...settings({ jwtSecret: SECRET_A }), roles: ['authenticated', 'service_role'] };
    const v = createJwtVerifier('A', unsafe, clock);
    await expectAuthError(v.verify(await hmacToken(SECRET_A, claims({ role: 'service_role' }))), 'AUTH_ROLE_FORBIDDEN', 'role_forbidden');
  });

  it('missing role → AUTH_INVALID role_missing; with jwtDefaultRole it runs as that role (PostgREST’s anon fallback)', async () => {
    const token = await hmacToken(SECRET_A, claims({ role: undefined }));
    await expectAuthError(verifier.verify(token), 'AUTH_INVALID', 'role_missing', token);
    const withDefault = createJwtVerifier('A', settings({ jwtSecret: SECRET_A, jwtDefaultRole: 'anon' }), clock);
    await expect(withDefault.verify(token)).resolves.toMatchObject({ role: 'anon', subject: `user-${CANARY}` });
  });

  it('a role claim that is not a string → AUTH_INVALID role_invalid', async () => {
    for (const role of [['authenticated'], 42, '', { r: CANARY }]) {
      const token = await hmacToken(SECRET_A, claims({ role }));
      await expectAuthError(verifier.verify(token), 'AUTH_INVALID', 'role_invalid', token);
    }
  });

  it('a sub claim that is not a string → AUTH_INVALID sub_invalid', async () => {
    const token = await hmacToken(SECRET_A, claims({ sub: { id: CANARY } }));
    await expectAuthError(verifier.verify(token), 'AUTH_INVALID', 'sub_invalid', token);
  });

  it('no exp → AUTH_INVALID exp_missing (a token must expire)', async () => {
    const token = await hmacToken(SECRET_A, claims({ exp: undefined }));
    await expectAuthError(verifier.verify(token), 'AUTH_INVALID', 'exp_missing', token);
  });

  it('claims of the wrong type (exp as a string) → AUTH_INVALID claims', async () => {
    const token = await hmacToken(SECRET_A, claims({ exp: `${NOW + 60} ${CANARY}` }));
    await expectAuthError(verifier.verify(token), 'AUTH_INVALID', 'claims', token);
  });

  it('a 1 MB token is refused by its size, before parsing → AUTH_INVALID too_large', async () => {
    const big = await hmacToken(SECRET_A, claims({ pad: `${CANARY}${'x'.repeat(1024 * 1024)}` }));
    const e = await expectAuthError(verifier.verify(big), 'AUTH_INVALID', 'too_large', big);
    expect(e.message).toContain(String(JWT_MAX_LENGTH));
    // One character over the bound is refused, at the bound it is parsed (and here malformed).
    await expectAuthError(verifier.verify('a'.repeat(JWT_MAX_LENGTH + 1)), 'AUTH_INVALID', 'too_large');
    await expectAuthError(verifier.verify('a'.repeat(JWT_MAX_LENGTH)), 'AUTH_INVALID', 'malformed');
  });

  it('malformed tokens → AUTH_INVALID malformed, and nothing crashes', async () => {
    const good = await hmacToken(SECRET_A, claims());
    const [h, p] = good.split('.');
    const cases = [
      '',
      CANARY,
      'a.b',
      'a.b.c.d',
      `${h}.${p}`,
      `${h}.${p}.!!!`,
      `${Buffer.from(`{"alg":"HS256","x":"${CANARY}"`).toString('base64url')}.${p}.sig`,
      // Correctly signed, so only the payload is wrong: not JSON, not an object, not UTF-8.
      rawTextToken('{"alg":"HS256"}', `{"sub":"${CANARY}"`, SECRET_A),
      rawTextToken('{"alg":"HS256"}', `["${CANARY}"]`, SECRET_A),
      rawTextToken('{"alg":"HS256"}', `"${CANARY}"`, SECRET_A),
      rawTextToken('{"alg":"HS256"}', Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), SECRET_A),
      rawToken({ alg: 'HS256', crit: ['exp'], exp: 1 }, claims(), SECRET_A),
      rawToken({ alg: 'HS256', b64: false, crit: ['b64'] }, claims(), SECRET_A),
      rawToken({ typ: 'JWT' }, claims(), SECRET_A),
    ];
    for (const token of cases) await expectAuthError(verifier.verify(token), 'AUTH_INVALID', 'malformed', token);
    // Not a string at all (a producer bypassing the contract).
    await expectAuthError(verifier.verify(42 as unknown as string), 'AUTH_INVALID', 'too_large');
  });

  it('aud / iss mismatch or missing when configured → AUTH_INVALID audience / issuer', async () => {
    const v = createJwtVerifier('A', settings({ jwtSecret: SECRET_A, jwtAudience: 'authenticated', jwtIssuer: 'https://a.example/auth/v1' }), clock);
    const iss = 'https://a.example/auth/v1';
    await expect(v.verify(await hmacToken(SECRET_A, claims({ iss })))).resolves.toMatchObject({ role: 'authenticated' });
    const cases: [Claims, string][] = [
      [{ iss, aud: `other-${CANARY}` }, 'audience'],
      [{ iss, aud: undefined }, 'audience'],
      [{ iss: `https://b.example/${CANARY}` }, 'issuer'],
      [{ iss: undefined }, 'issuer'],
    ];
    for (const [c, reason] of cases) {
      const token = await hmacToken(SECRET_A, claims(c));
      await expectAuthError(v.verify(token), 'AUTH_INVALID', reason, token);
    }
  });

  it('a tenant without a key → AUTH_NOT_CONFIGURED for any token', async () => {
    const v = createJwtVerifier('C', parseTenantAuth('C', {}));
    const token = await hmacToken(SECRET_A, claims());
    const e = await expectAuthError(v.verify(token), 'AUTH_NOT_CONFIGURED', 'not_configured', token);
    expect(e.message).toContain('C_JWT_SECRET');
  });

  it('only AUTH_KEYS_UNAVAILABLE is retried among the auth codes', () => {
    const auth = Object.entries(ERROR_CODES).filter(([c]) => c.startsWith('AUTH_') && c !== 'AUTH_UNSUPPORTED');
    expect(auth.filter(([, retried]) => retried).map(([c]) => c)).toEqual(['AUTH_KEYS_UNAVAILABLE']);
    for (const c of ['AUTH_INVALID', 'AUTH_EXPIRED', 'AUTH_NOT_YET_VALID', 'AUTH_ROLE_FORBIDDEN', 'AUTH_NOT_CONFIGURED', 'AUTH_REQUIRED', 'AUTH_NOT_ALLOWED']) {
      expect(ERROR_CODES[c as ErrorCode]).toBe(false);
    }
  });
});

describe('JWKS tenant (jwksUrl): RS256, ES256, EdDSA', () => {
  let rsa: TestKeyPair;
  let ec: TestKeyPair;
  let ed: TestKeyPair;
  let ps: TestKeyPair;
  let jwks: JwksServer;

  beforeAll(async () => {
    [rsa, ec, ed, ps] = await Promise.all([
      generateTestKeyPair('RS256', 'rsa-1'),
      generateTestKeyPair('ES256', 'ec-1'),
      generateTestKeyPair('EdDSA', 'ed-1'),
      generateTestKeyPair('PS256', 'ps-1'),
    ]);
    jwks = await startJwksServer([rsa.publicJwk, ec.publicJwk, ed.publicJwk, ps.publicJwk]);
  });
  afterAll(async () => {
    await jwks?.close();
  });

  it('valid RS256, PS256, ES256 and EdDSA tokens yield role, subject and claims; the JWKS is fetched once', async () => {
    const v = createJwtVerifier('A', settings({ jwksUrl: jwks.url }), clock);
    const before = jwks.requests;
    for (const pair of [rsa, ps, ec, ed]) {
      const id = await v.verify(await keyPairToken(pair, userClaims({ sub: `u-${pair.alg}`, role: 'anon' }, NOW)));
      expect(id).toMatchObject({ role: 'anon', subject: `u-${pair.alg}`, claims: { sub: `u-${pair.alg}`, role: 'anon' } });
    }
    expect(jwks.requests - before).toBe(1);
  });

  it('HS256 signed with the RS256 tenant’s public key (PEM or JWK) → AUTH_INVALID (no HS/RS confusion)', async () => {
    const v = createJwtVerifier('A', settings({ jwksUrl: jwks.url }), clock);
    for (const key of [rsa.publicPem, JSON.stringify(rsa.publicJwk)]) {
      const token = rawToken({ alg: 'HS256', typ: 'JWT', kid: rsa.kid }, claims(), key);
      await expectAuthError(v.verify(token), 'AUTH_INVALID', 'algorithm', token);
    }
    // A tenant with both a secret and a JWKS verifies HS* with its secret only: still refused.
    const both = createJwtVerifier('A', settings({ jwksUrl: jwks.url, jwtSecret: SECRET_A }), clock);
    const token = rawToken({ alg: 'HS256', typ: 'JWT', kid: rsa.kid }, claims(), rsa.publicPem);
    await expectAuthError(both.verify(token), 'AUTH_INVALID', 'signature', token);
    await expect(both.verify(await hmacToken(SECRET_A, claims()))).resolves.toMatchObject({ role: 'authenticated' });
    await expect(both.verify(await keyPairToken(rsa, claims()))).resolves.toMatchObject({ role: 'authenticated' });
  });

  it('alg none on a JWKS tenant → AUTH_INVALID algorithm', async () => {
    const v = createJwtVerifier('A', settings({ jwksUrl: jwks.url }), clock);
    const token = rawToken({ alg: 'none', kid: rsa.kid }, claims());
    await expectAuthError(v.verify(token), 'AUTH_INVALID', 'algorithm', token);
  });

  it('another tenant’s valid token: unknown kid → no_matching_key; same kid, other key → signature', async () => {
    const v = createJwtVerifier('A', settings({ jwksUrl: jwks.url }), clock);
    const otherTenantKey = await generateTestKeyPair('RS256', 'tenant-b-1');
    const unknownKid = await keyPairToken(otherTenantKey, claims());
    await expectAuthError(v.verify(unknownKid), 'AUTH_INVALID', 'no_matching_key', unknownKid);
    const sameKid = await keyPairToken(otherTenantKey, claims(), rsa.kid);
    await expectAuthError(v.verify(sameKid), 'AUTH_INVALID', 'signature', sameKid);
  });

  it('a token without kid is tried against every key of its type', async () => {
    const other = await generateTestKeyPair('RS256', 'rsa-2');
    const server = await startJwksServer([other.publicJwk, rsa.publicJwk]);
    onTestFinished(() => server.close());
    const v = createJwtVerifier('A', settings({ jwksUrl: server.url }), clock);
    await expect(v.verify(await keyPairToken(rsa, claims(), null))).resolves.toMatchObject({ role: 'authenticated' });
    const stranger = await generateTestKeyPair('RS256', 'x');
    const token = await keyPairToken(stranger, claims(), null);
    await expectAuthError(v.verify(token), 'AUTH_INVALID', 'signature', token);
  });

  it('a rotated key (new kid) is picked up by refetching the JWKS', async () => {
    const server = await startJwksServer([rsa.publicJwk]);
    onTestFinished(() => server.close());
    const v = createJwtVerifier('A', settings({ jwksUrl: server.url }), { ...clock, jwksCooldownMs: 0 });
    await v.verify(await keyPairToken(rsa, claims()));
    const next = await generateTestKeyPair('ES256', 'ec-2');
    server.setKeys([rsa.publicJwk, next.publicJwk]);
    await expect(v.verify(await keyPairToken(next, claims()))).resolves.toMatchObject({ role: 'authenticated' });
  });

  it('JWKS down (refused, 500, not JSON, silent) → AUTH_KEYS_UNAVAILABLE, retried; once it is back the token verifies', async () => {
    const refused = createJwtVerifier('A', settings({ jwksUrl: `${await refusedUrl()}?apikey=query-key-xyz` }), clock);
    const token = await keyPairToken(rsa, claims());
    const e = await expectAuthError(refused.verify(token), 'AUTH_KEYS_UNAVAILABLE', 'keys_unavailable', token);
    expect(e.retryable).toBe(true);
    expect(e.message).toContain('ECONNREFUSED');
    expect(e.message).toContain('/.well-known/jwks.json');
    expect(e.message).not.toContain('query-key-xyz'); // a query string may carry an API key

    const server = await startJwksServer([rsa.publicJwk]);
    onTestFinished(() => server.close());
    const v = createJwtVerifier('A', settings({ jwksUrl: server.url }), clock);
    for (const mode of ['status500', 'notJson'] as const) {
      server.setMode(mode);
      await expectAuthError(v.verify(token), 'AUTH_KEYS_UNAVAILABLE', 'keys_unavailable', token);
    }
    // Only the silent case needs a short timeout; the others keep the default 5 s (a loaded CI).
    server.setMode('silent');
    const short = createJwtVerifier('A', settings({ jwksUrl: server.url }), { ...clock, jwksTimeoutMs: 300 });
    const timedOut = await expectAuthError(short.verify(token), 'AUTH_KEYS_UNAVAILABLE', 'keys_unavailable', token);
    expect(timedOut.message).toContain('timed out');
    server.setMode('ok');
    await expect(v.verify(token)).resolves.toMatchObject({ role: 'authenticated' });
  });
});

describe('cache of verified tokens', () => {
  it('a repeated token is served from the cache (same identity object) until its exp + skew, then refused', async () => {
    let nowMs = NOW * 1000;
    const v = createJwtVerifier('A', settings({ jwtSecret: SECRET_A }), { now: () => nowMs, cacheMaxAgeMs: 3_600_000 });
    const token = await hmacToken(SECRET_A, claims({ exp: NOW + 100 }));
    const first = await v.verify(token);
    expect(await v.verify(token)).toBe(first);
    nowMs = (NOW + 100 + 29) * 1000;
    expect(await v.verify(token)).toBe(first);
    nowMs = (NOW + 100 + 30) * 1000;
    await expectAuthError(v.verify(token), 'AUTH_EXPIRED', 'expired', token);
  });

  it('entries live at most cacheMaxAgeMs, and the cache holds at most cacheSize tokens', async () => {
    let nowMs = NOW * 1000;
    const v = createJwtVerifier('A', settings({ jwtSecret: SECRET_A }), { now: () => nowMs, cacheSize: 2, cacheMaxAgeMs: 1000 });
    const [t1, t2, t3] = await Promise.all(['u1', 'u2', 'u3'].map((sub) => hmacToken(SECRET_A, claims({ sub }))));
    const a = await v.verify(t1!);
    expect(await v.verify(t1!)).toBe(a);
    nowMs += 1000;
    const a2 = await v.verify(t1!);
    expect(a2).not.toBe(a); // verified again after cacheMaxAgeMs
    await v.verify(t2!);
    await v.verify(t3!); // evicts t1, the oldest
    expect(await v.verify(t1!)).not.toBe(a2);
  });

  it('a failed token is not cached, and a cached token of one tenant means nothing to another', async () => {
    const a = createJwtVerifier('A', settings({ jwtSecret: SECRET_A }), clock);
    const b = createJwtVerifier('B', settings({ jwtSecret: SECRET_B }, 'B'), clock);
    const token = await hmacToken(SECRET_A, claims());
    await a.verify(token);
    await expectAuthError(b.verify(token), 'AUTH_INVALID', 'signature', token);
    await expectAuthError(b.verify(token), 'AUTH_INVALID', 'signature', token);
  });
});

describe('cost of one verification (printed, not asserted)', () => {
  it('HS256 and ES256, with and without the cache', async () => {
    const n = 2000;
    const pair = await generateTestKeyPair('ES256', 'ec-bench');
    const server = await startJwksServer([pair.publicJwk]);
    onTestFinished(() => server.close());
    const hs = await hmacToken(SECRET_A, claims());
    const es = await keyPairToken(pair, claims());
    const measure = async (label: string, token: string, raw: RawTenantAuth, cacheSize: number): Promise<void> => {
      const v = createJwtVerifier('A', settings(raw), { ...clock, cacheSize });
      for (let i = 0; i < 200; i++) await v.verify(token); // warm up (JIT, key import, JWKS fetch)
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < n; i++) await v.verify(token);
      const us = Number(process.hrtime.bigint() - t0) / 1000 / n;
      console.log(`[identity] ${label}: ${us.toFixed(1)} µs per verify (${n} sequential)`);
    };
    await measure('HS256, no cache', hs, { jwtSecret: SECRET_A }, 0);
    await measure('HS256, cache hit', hs, { jwtSecret: SECRET_A }, 1000);
    await measure('ES256, no cache', es, { jwksUrl: server.url }, 0);
    await measure('ES256, cache hit', es, { jwksUrl: server.url }, 1000);
  });
});

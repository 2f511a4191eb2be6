/**
 * Turns a job's user token into a verified identity for one tenant, before any connection is
 * taken: the signature against that tenant's own key (HS* with its secret, asymmetric algorithms
 * with its JWKS), exp/nbf/iat with the tenant's clock skew, aud/iss when configured, and the
 * `role` claim against the tenant's allowlist.
 *
 * Errors never carry the token or any claim value: jose's errors keep the decoded claims (in
 * `payload` and `cause`), so they are mapped to a `LensfleetError` with a fixed message and a
 * stable `details.reason`, and are not attached as its cause.
 */
import { createHash, webcrypto } from 'node:crypto';
import {
  createRemoteJWKSet,
  errors as joseErrors,
  type JWTPayload,
  type JWTVerifyGetKey,
  type JWTVerifyOptions,
  jwtVerify,
  type JWSHeaderParameters,
  type FlattenedJWSInput,
} from 'jose';
import { LensfleetError, type ErrorCode } from '../errors.js';
import { JWT_MAX_LENGTH } from '../ids.js';
import { isPrivilegedRole, type TenantAuthSettings } from './settings.js';

/** Who a job runs as: what the lead's runner puts in `role` and `request.jwt.claims`. */
export interface VerifiedIdentity {
  /** The `role` claim (or the tenant's `jwtDefaultRole`), always in the tenant's allowlist. */
  readonly role: string;
  /** The `sub` claim. */
  readonly subject: string | undefined;
  /** Every claim of the token, deeply frozen. */
  readonly claims: Readonly<Record<string, unknown>>;
  /** `JSON.stringify(claims)`, for `set_config('request.jwt.claims', …, true)`. */
  readonly claimsJson: string;
}

export interface JwtVerifier {
  /** Verify `token` for this verifier's tenant; rejects with a `LensfleetError` (AUTH_*). */
  verify(token: string): Promise<VerifiedIdentity>;
}

export interface JwtVerifierOptions {
  /**
   * Verified tokens remembered (keyed by the token's SHA-256, so the cache holds no token) so that
   * a repeated token skips the signature check: a hit costs ~1 µs against ~40 µs (HS256) or
   * ~140 µs (ES256) for a verification. Per tenant; an entry is its claims twice (object and
   * JSON), at most ~32 KB for the largest token. 0 disables. @defaultValue 256
   */
  readonly cacheSize?: number;
  /** Longest a verified token is remembered; it is also forgotten at its `exp` (+ skew). @defaultValue 60000 */
  readonly cacheMaxAgeMs?: number;
  /** Timeout of one JWKS fetch; then `AUTH_KEYS_UNAVAILABLE`. @defaultValue 5000 */
  readonly jwksTimeoutMs?: number;
  /** How long a fetched JWKS is used before it is fetched again. @defaultValue 600000 */
  readonly jwksCacheMaxAgeMs?: number;
  /** A token whose `kid` is not in the JWKS refetches it at most this often (key rotation). @defaultValue 30000 */
  readonly jwksCooldownMs?: number;
  /** Clock, in milliseconds since the epoch (tests move it). @defaultValue Date.now */
  readonly now?: () => number;
}

const HMAC_ALGORITHMS = ['HS256', 'HS384', 'HS512'] as const;
/** Asymmetric algorithms accepted from a JWKS. `none` and HS* never are (no HS/RS confusion). */
const JWKS_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const;

/** Why a token was refused, in `details.reason` (stable strings, like error codes). */
export type AuthFailureReason =
  | 'too_large'
  | 'malformed'
  | 'algorithm'
  | 'signature'
  | 'no_matching_key'
  | 'claims'
  | 'exp_missing'
  | 'audience'
  | 'issuer'
  | 'role_missing'
  | 'role_invalid'
  | 'sub_invalid'
  | 'expired'
  | 'not_yet_valid'
  | 'issued_in_future'
  | 'role_forbidden'
  | 'keys_unavailable'
  | 'not_configured';

/**
 * The verifier of one tenant. Create one per tenant and reuse it: it holds the tenant's imported
 * keys, its JWKS cache and its cache of verified tokens. With `settings` undefined (the tenant has
 * no key) every token fails with `AUTH_NOT_CONFIGURED`.
 */
export function createJwtVerifier(tenantId: string, settings: TenantAuthSettings | undefined, options: JwtVerifierOptions = {}): JwtVerifier {
  if (settings === undefined) return new UnconfiguredVerifier(tenantId);
  return new TenantJwtVerifier(tenantId, settings, options);
}

class UnconfiguredVerifier implements JwtVerifier {
  readonly #tenantId: string;
  constructor(tenantId: string) {
    this.#tenantId = tenantId;
  }
  verify(): Promise<VerifiedIdentity> {
    const t = this.#tenantId;
    return Promise.reject(
      authError(
        'AUTH_NOT_CONFIGURED',
        'not_configured',
        t,
        `tenant "${t}" has no JWT key configured, so it cannot run jobs with auth.jwt; set ${t}_JWT_SECRET (or jwtSecret / jwksUrl in the tenants file), or send the job without auth`,
      ),
    );
  }
}

/** Thrown by the key resolver when the JWKS could not be fetched; mapped to AUTH_KEYS_UNAVAILABLE. */
class KeysUnavailable extends Error {}

interface CacheEntry {
  readonly identity: VerifiedIdentity;
  readonly expiresAtMs: number;
}

class TenantJwtVerifier implements JwtVerifier {
  readonly #tenantId: string;
  readonly #settings: TenantAuthSettings;
  readonly #options: JWTVerifyOptions;
  readonly #getKey: JWTVerifyGetKey;
  readonly #remote: ReturnType<typeof createRemoteJWKSet> | undefined;
  readonly #hmacKeys = new Map<string, Promise<webcrypto.CryptoKey>>();
  readonly #accepted: string;
  /** The JWKS URL without its query (which might carry an API key), for messages. */
  readonly #jwksWhere: string;
  readonly #now: () => number;
  readonly #cache = new Map<string, CacheEntry>();
  readonly #cacheSize: number;
  readonly #cacheMaxAgeMs: number;

  constructor(tenantId: string, settings: TenantAuthSettings, options: JwtVerifierOptions) {
    this.#tenantId = tenantId;
    this.#settings = settings;
    this.#now = options.now ?? Date.now;
    this.#cacheSize = options.cacheSize ?? 256;
    this.#cacheMaxAgeMs = options.cacheMaxAgeMs ?? 60_000;
    this.#jwksWhere = settings.jwksUrl === undefined ? '' : ((u) => `${u.origin}${u.pathname}`)(new URL(settings.jwksUrl));
    const algorithms: string[] = [];
    if (settings.jwtSecret !== undefined) algorithms.push(...HMAC_ALGORITHMS);
    if (settings.jwksUrl !== undefined) {
      algorithms.push(...JWKS_ALGORITHMS);
      this.#remote = createRemoteJWKSet(new URL(settings.jwksUrl), {
        timeoutDuration: options.jwksTimeoutMs ?? 5000,
        cacheMaxAge: options.jwksCacheMaxAgeMs ?? 600_000,
        cooldownDuration: options.jwksCooldownMs ?? 30_000,
      });
    }
    this.#accepted = [
      settings.jwtSecret !== undefined ? `${HMAC_ALGORITHMS.join('/')} with the tenant's jwtSecret` : undefined,
      settings.jwksUrl !== undefined ? `${JWKS_ALGORITHMS.join('/')} with a key of the tenant's jwksUrl` : undefined,
    ]
      .filter(Boolean)
      .join('; ');
    this.#options = {
      algorithms,
      clockTolerance: settings.clockSkewSeconds,
      // A token without exp would be valid forever (and could not leave the verified-token cache).
      requiredClaims: ['exp'],
      ...(settings.audience !== undefined ? { audience: typeof settings.audience === 'string' ? settings.audience : [...settings.audience] } : {}),
      ...(settings.issuer !== undefined ? { issuer: settings.issuer } : {}),
    };
    this.#getKey = (header, token) => this.#resolveKey(header, token);
  }

  async verify(token: string): Promise<VerifiedIdentity> {
    if (typeof token !== 'string' || token.length > JWT_MAX_LENGTH) {
      // Bounded before any parsing: a huge token costs nothing but this check.
      throw this.#invalid(
        'too_large',
        `the user token is ${typeof token === 'string' ? `${token.length} characters, more than the limit of ${JWT_MAX_LENGTH}` : 'not a string'}; send a compact JWT`,
      );
    }
    const key = this.#cacheSize > 0 ? createHash('sha256').update(token).digest('base64') : undefined;
    if (key !== undefined) {
      const hit = this.#cache.get(key);
      if (hit !== undefined) {
        if (this.#now() < hit.expiresAtMs) return hit.identity;
        this.#cache.delete(key);
      }
    }
    const payload = await this.#verifySignatureAndClaims(token);
    const identity = this.#identity(payload);
    if (key !== undefined) this.#remember(key, identity, payload.exp as number);
    return identity;
  }

  async #verifySignatureAndClaims(token: string): Promise<JWTPayload> {
    const options = { ...this.#options, currentDate: new Date(this.#now()) };
    try {
      return (await jwtVerify(token, this.#getKey, options)).payload;
    } catch (err) {
      // A JWKS without `kid`s may hold several keys of the token's type: try each (jose's pattern).
      if (err instanceof joseErrors.JWKSMultipleMatchingKeys) {
        for await (const candidate of err as unknown as AsyncIterable<webcrypto.CryptoKey>) {
          try {
            return (await jwtVerify(token, candidate, options)).payload;
          } catch (inner) {
            if (!(inner instanceof joseErrors.JWSSignatureVerificationFailed)) throw this.#classify(inner);
          }
        }
        throw this.#invalid('signature', this.#signatureMessage());
      }
      throw this.#classify(err);
    }
  }

  async #resolveKey(header: JWSHeaderParameters, token: FlattenedJWSInput): Promise<webcrypto.CryptoKey> {
    const alg = header.alg as string; // jose checked it against `algorithms` before asking for a key
    if (alg.startsWith('HS')) return this.#hmacKey(alg);
    const remote = this.#remote!;
    try {
      return await remote(header, token);
    } catch (err) {
      // Key-selection outcomes are about the token; anything else (network, timeout, non-200,
      // not a JWKS) means the keys could not be had.
      if (
        err instanceof joseErrors.JWKSNoMatchingKey ||
        err instanceof joseErrors.JWKSMultipleMatchingKeys ||
        err instanceof joseErrors.JOSENotSupported ||
        err instanceof joseErrors.JOSEAlgNotAllowed
      ) {
        throw err;
      }
      throw new KeysUnavailable('JWKS unavailable', { cause: err });
    }
  }

  /** The secret imported once per HMAC algorithm: jose imports a raw secret on every call, a third of the cost (60 → 40 µs measured). */
  #hmacKey(alg: string): Promise<webcrypto.CryptoKey> {
    let key = this.#hmacKeys.get(alg);
    if (key === undefined) {
      const secret = new TextEncoder().encode(this.#settings.jwtSecret!.reveal());
      key = webcrypto.subtle.importKey('raw', secret, { name: 'HMAC', hash: `SHA-${alg.slice(2)}` }, false, ['verify']);
      this.#hmacKeys.set(alg, key);
    }
    return key;
  }

  #identity(payload: JWTPayload): VerifiedIdentity {
    const s = this.#settings;
    const t = this.#tenantId;
    const nowSeconds = Math.floor(this.#now() / 1000);
    if (typeof payload.iat === 'number' && payload.iat > nowSeconds + s.clockSkewSeconds) {
      throw authError(
        'AUTH_NOT_YET_VALID',
        'issued_in_future',
        t,
        `the user token's iat is more than ${s.clockSkewSeconds} s in the future for tenant "${t}" (the allowed clock skew); check the issuer's clock`,
      );
    }
    if (payload.sub !== undefined && typeof payload.sub !== 'string') {
      throw this.#invalid('sub_invalid', `the user token's sub claim is not a string`);
    }
    let role: unknown = payload.role;
    if (role === undefined) {
      if (s.defaultRole === undefined) {
        throw this.#invalid(
          'role_missing',
          `the user token has no role claim; tenant "${t}" needs one of its allowed roles (${s.roles.join(', ')}) there, or set jwtDefaultRole (${t}_JWT_DEFAULT_ROLE) to run such tokens as that role`,
        );
      }
      role = s.defaultRole;
    }
    if (typeof role !== 'string' || role === '') throw this.#invalid('role_invalid', `the user token's role claim is not a non-empty string`);
    // The privileged check is redundant with the allowlist (settings refuse privileged names) and
    // kept so that a hand-built settings object cannot open the door either.
    if (!s.roles.includes(role) || isPrivilegedRole(role)) {
      throw authError(
        'AUTH_ROLE_FORBIDDEN',
        'role_forbidden',
        t,
        `the role the user token asks for is not allowed for tenant "${t}" (allowed: ${s.roles.join(', ')}; jwtRoles / ${t}_JWT_ROLES)`,
      );
    }
    const claims = deepFreeze({ ...payload }) as Readonly<Record<string, unknown>>;
    return Object.freeze({ role, subject: payload.sub, claims, claimsJson: JSON.stringify(claims) });
  }

  #remember(key: string, identity: VerifiedIdentity, expSeconds: number): void {
    const now = this.#now();
    const expiresAtMs = Math.min((expSeconds + this.#settings.clockSkewSeconds) * 1000, now + this.#cacheMaxAgeMs);
    if (expiresAtMs <= now) return;
    if (this.#cache.size >= this.#cacheSize) {
      // Evict the oldest insertion (Map keeps insertion order): O(1), and a hot token is simply
      // verified and inserted again.
      const oldest = this.#cache.keys().next().value as string;
      this.#cache.delete(oldest);
    }
    this.#cache.set(key, { identity, expiresAtMs });
  }

  /** Map anything jwtVerify threw to a typed error that holds no token content. */
  #classify(err: unknown): LensfleetError {
    const t = this.#tenantId;
    const skew = this.#settings.clockSkewSeconds;
    if (err instanceof LensfleetError) return err;
    if (err instanceof KeysUnavailable) {
      return new LensfleetError(
        'AUTH_KEYS_UNAVAILABLE',
        `the JWKS of tenant "${t}" (${this.#jwksWhere}) could not be fetched (${fetchFailure(err.cause)}); the job is retried`,
        // The cause is the fetch failure, which never saw the token.
        { cause: err.cause, details: { tenant: t, reason: 'keys_unavailable' satisfies AuthFailureReason } },
      );
    }
    if (err instanceof joseErrors.JWTExpired) {
      return authError('AUTH_EXPIRED', 'expired', t, `the user token expired more than ${skew} s ago (the allowed clock skew); send a fresh token`);
    }
    if (err instanceof joseErrors.JWTClaimValidationFailed) {
      if (err.reason === 'missing' && err.claim === 'exp') {
        return this.#invalid('exp_missing', `the user token has no exp claim; tenant "${t}" accepts only tokens that expire`);
      }
      if (err.reason === 'check_failed') {
        if (err.claim === 'nbf') {
          return authError(
            'AUTH_NOT_YET_VALID',
            'not_yet_valid',
            t,
            `the user token is not valid yet (nbf more than ${skew} s ahead, the allowed clock skew); check the issuer's clock`,
          );
        }
        if (err.claim === 'aud') return this.#invalid('audience', `the user token's aud does not include tenant "${t}"'s audience (jwtAudience)`);
        if (err.claim === 'iss') return this.#invalid('issuer', `the user token's iss is not tenant "${t}"'s issuer (jwtIssuer)`);
      }
      if (err.reason === 'missing' && (err.claim === 'aud' || err.claim === 'iss')) {
        return this.#invalid(err.claim === 'aud' ? 'audience' : 'issuer', `the user token has no ${err.claim} claim; tenant "${t}" requires one`);
      }
      return this.#invalid('claims', 'the user token has malformed claims (exp, nbf and iat must be numbers; aud a string or a list of strings)');
    }
    // Only JOSEAlgNotAllowed: the allowlist is checked before anything else looks at `alg`, so
    // JOSENotSupported means an unsupported header feature (e.g. an unknown `crit`): malformed.
    if (err instanceof joseErrors.JOSEAlgNotAllowed) {
      return this.#invalid('algorithm', `the user token's signing algorithm is not accepted for tenant "${t}" (accepted: ${this.#accepted})`);
    }
    if (err instanceof joseErrors.JWSSignatureVerificationFailed) return this.#invalid('signature', this.#signatureMessage());
    if (err instanceof joseErrors.JWKSNoMatchingKey) {
      return this.#invalid(
        'no_matching_key',
        `no key of tenant "${t}"'s JWKS matches the user token (unknown kid or key type): a token of another tenant or project, or a key not published yet`,
      );
    }
    // JWSInvalid, JWTInvalid, JOSENotSupported, and TypeErrors from decoding: not a usable JWS.
    return this.#invalid('malformed', 'the user token is not a well-formed signed JWT (header.payload.signature, base64url, JSON claims)');
  }

  #signatureMessage(): string {
    return `the user token's signature does not verify with tenant "${this.#tenantId}"'s key: a token of another tenant or project, or signed with another key`;
  }

  #invalid(reason: AuthFailureReason, message: string): LensfleetError {
    return authError('AUTH_INVALID', reason, this.#tenantId, message);
  }
}

function authError(code: ErrorCode, reason: AuthFailureReason, tenant: string, message: string): LensfleetError {
  return new LensfleetError(code, message, { details: { tenant, reason } });
}

/** A short, secret-free description of a JWKS fetch failure, from codes and classes only. */
function fetchFailure(cause: unknown): string {
  if (cause instanceof joseErrors.JWKSTimeout) return 'timed out';
  if (cause instanceof joseErrors.JWKSInvalid) return 'the response is not a JSON Web Key Set';
  if (cause instanceof joseErrors.JOSEError) return 'no 200 response with a JSON body';
  const code = (cause as { cause?: { code?: unknown } } | undefined)?.cause?.code;
  return typeof code === 'string' ? code : 'network error';
}

function deepFreeze(value: unknown): unknown {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

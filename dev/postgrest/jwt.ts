/**
 * HS256 tokens as a Supabase project issues them, for the stand-in, tests and the demo: the
 * service key is a `service_role` token, a user's token carries `sub` and `role: authenticated`.
 */
import { type JWTPayload, SignJWT } from 'jose';

/** Sign `claims` with the project's JWT secret (HS256), valid for `expiresIn` (jose's syntax, e.g. '1h'). */
export function signJwt(secret: string, claims: JWTPayload, expiresIn: string | number = '1h'): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).setIssuedAt().setExpirationTime(expiresIn).sign(new TextEncoder().encode(secret));
}

/** A project's service key: `{ role: 'service_role' }`, long-lived (as Supabase's are). */
export function serviceKeyFor(secret: string): Promise<string> {
  return signJwt(secret, { iss: 'supabase', role: 'service_role' }, '10y');
}

/** A signed-in user's access token. */
export function userTokenFor(secret: string, userId: string, expiresIn: string | number = '1h', extra: JWTPayload = {}): Promise<string> {
  return signJwt(secret, { iss: 'supabase', aud: 'authenticated', role: 'authenticated', sub: userId, ...extra }, expiresIn);
}

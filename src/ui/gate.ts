/**
 * Who may use the queue UI, and what they may change: the middleware in front of bull-board.
 *
 * - **Token.** `Authorization: Bearer <token>` (scripts, proxies), or `?token=<token>` once in a
 *   browser: that answers 303 to the same URL without it (so it leaves the address bar and the
 *   history) and sets an HttpOnly session cookie. The cookie holds no token: it is an expiry time
 *   and an HMAC of it keyed by the token, so any number of UI processes accept it without shared
 *   state, and changing the token ends every session. Tokens are compared as SHA-256 digests in
 *   constant time (neither content nor length leaks).
 * - **Changes.** Read-only: every method but GET/HEAD is refused here (405), whatever bull-board
 *   would do (it also hides its buttons and refuses them itself). Read-write: retrying and
 *   removing jobs only; adding, editing, emptying, obliterating, pausing are never served: a job
 *   added here would skip the producer SDK, and a paused queue stops the whole fleet.
 * - **Cross-site requests.** The cookie is SameSite=Lax (a link from a runbook still opens the
 *   UI), and a change carried by the cookie must come from the UI's own origin (403 otherwise).
 * - **Nothing leaves for other origins.** The page may load and call only its own origin (CSP):
 *   bull-board's page links Google Fonts, so without this every operator opening the UI would
 *   tell Google (and wait for it on a machine without Internet); its fonts fall back to the
 *   browser's sans-serif and monospace.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { MiddlewareHandler } from 'hono';
import { getCookie, setCookie } from 'hono/cookie';
import type { Logger } from 'pino';
import type { Secret } from '../secret.js';

export const SESSION_COOKIE = 'lensfleet_ui';
/**
 * Own origin only; inline styles and data: images and fonts are what bull-board's page uses
 * (its one inline script is JSON, not run). Never framed.
 */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "font-src 'self' data:",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');
/** How long a browser session lasts after `?token=`: a working day. */
export const SESSION_TTL_SECONDS = 12 * 3600;

/** The changes read-write serves (bull-board's routes): retry and remove, one job or a whole state. */
const ALLOWED_CHANGES: readonly { method: string; path: RegExp }[] = [
  { method: 'PUT', path: /^\/api\/queues\/[^/]+\/[^/]+\/retry$/ },
  { method: 'PUT', path: /^\/api\/queues\/[^/]+\/[^/]+\/clean$/ },
  { method: 'PUT', path: /^\/api\/queues\/[^/]+\/retry\/[a-z]+$/ },
  { method: 'PUT', path: /^\/api\/queues\/[^/]+\/clean\/[a-z]+$/ },
];

export interface GateOptions {
  /** Asked of every request; undefined = open (the config allows that on loopback only, read-only). */
  readonly token: Secret | undefined;
  readonly readWrite: boolean;
  readonly logger: Logger;
  /** Clock in ms, for session expiry. @defaultValue Date.now */
  readonly now?: () => number;
}

/** Whether a request may change something: retry or remove through read-write. */
export function isAllowedChange(method: string, path: string): boolean {
  return ALLOWED_CHANGES.some((c) => c.method === method && c.path.test(path));
}

export function createGate(opts: GateOptions): MiddlewareHandler {
  const now = opts.now ?? Date.now;
  const digest = (s: string) => createHash('sha256').update(s).digest();
  const expected = opts.token === undefined ? undefined : digest(opts.token.reveal());
  const isToken = (given: string) => expected !== undefined && timingSafeEqual(digest(given), expected);
  const sessionMac = (expires: string) =>
    createHmac('sha256', opts.token?.reveal() ?? '')
      .update(`lensfleet-ui-session:${expires}`)
      .digest('base64url');
  const isSession = (value: string | undefined): boolean => {
    const m = value === undefined ? null : /^(\d{1,12})\.([A-Za-z0-9_-]{43})$/.exec(value);
    if (m === null || Number(m[1]) * 1000 <= now()) return false;
    return timingSafeEqual(digest(m[2]!), digest(sessionMac(m[1]!)));
  };

  return async (c, next) => {
    // Clickjacking a retry button, and the Referer of a page opened with ?token=.
    c.header('x-frame-options', 'DENY');
    c.header('content-security-policy', CONTENT_SECURITY_POLICY);
    c.header('referrer-policy', 'no-referrer');
    c.header('x-content-type-options', 'nosniff');
    const method = c.req.method;
    const safe = method === 'GET' || method === 'HEAD';
    if (expected !== undefined) {
      const url = new URL(c.req.url);
      const given = url.searchParams.get('token');
      if (given !== null) {
        if (!safe || !isToken(given)) {
          opts.logger.warn({ path: c.req.path.slice(0, 200) }, 'queue UI: wrong ?token= refused');
          return unauthorized(c);
        }
        const expires = String(Math.floor(now() / 1000) + SESSION_TTL_SECONDS);
        setCookie(c, SESSION_COOKIE, `${expires}.${sessionMac(expires)}`, {
          path: '/',
          httpOnly: true,
          sameSite: 'Lax',
          maxAge: SESSION_TTL_SECONDS,
          // Behind a TLS-terminating proxy the cookie never travels in clear.
          secure: c.req.header('x-forwarded-proto') === 'https',
        });
        url.searchParams.delete('token');
        c.header('cache-control', 'no-store');
        return c.redirect(`${url.pathname}${url.search}`, 303);
      }
      const bearer = /^Bearer\s+(.+)$/i.exec(c.req.header('authorization') ?? '');
      const byHeader = bearer !== null && isToken(bearer[1]!.trim());
      if (!byHeader) {
        if (bearer !== null) opts.logger.warn({ path: c.req.path.slice(0, 200) }, 'queue UI: wrong bearer token refused');
        if (!isSession(getCookie(c, SESSION_COOKIE))) return unauthorized(c);
        if (!safe && !sameOrigin(c.req.header('origin'), c.req.header('host'))) {
          return c.json({ error: 'a change must come from the queue UI’s own pages (Origin does not match)' }, 403);
        }
      }
    }
    if (!safe) {
      if (!opts.readWrite) return c.json({ error: 'the queue UI is read-only (LENSFLEET_UI_READ_WRITE=on serves retry and remove)' }, 405);
      if (!isAllowedChange(method, c.req.path)) return c.json({ error: 'the queue UI serves retry and remove only' }, 405);
    }
    await next();
  };
}

function unauthorized(c: Parameters<MiddlewareHandler>[0]) {
  c.header('www-authenticate', 'Bearer realm="lensfleet queue UI"');
  c.header('cache-control', 'no-store');
  return c.text('lensfleet queue UI: open /?token=<LENSFLEET_UI_TOKEN> once, or send Authorization: Bearer <LENSFLEET_UI_TOKEN>\n', 401);
}

/** A browser's change request names the page's origin; its host must be the one it was sent to. */
function sameOrigin(origin: string | undefined, host: string | undefined): boolean {
  if (origin === undefined || host === undefined) return false;
  try {
    return new URL(origin).host === host;
  } catch {
    return false;
  }
}

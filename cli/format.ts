/**
 * Output helpers of the `lensfleet` command line: aligned text tables, durations, and where a
 * server is without its credentials (a URL's user and password are never printed).
 */

/** Columns padded to their widest cell; numbers (and `-`) right-aligned. */
export function table(headers: readonly string[], rows: readonly (readonly (string | number)[])[]): string {
  const cells = rows.map((r) => r.map((c) => String(c)));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => (r[i] ?? '').length)));
  const numeric = headers.map((_, i) => cells.length > 0 && cells.every((r) => /^(-|-?\d+(\.\d+)?%?)$/.test(r[i] ?? '')));
  const line = (r: readonly string[]) =>
    r
      .map((c, i) => (numeric[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...cells.map(line)].join('\n');
}

/** 1234 → `1.2s`, 95000 → `1m35s`, 7200000 → `2h0m`. */
export function duration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${Math.floor(s % 60)}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h${m % 60}m`;
  return `${Math.floor(h / 24)}d${h % 24}h`;
}

/** `scheme://host:port/path` of a URL, without user and password; `(invalid URL)` when it does not parse. */
export function location(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname === '/' ? '' : u.pathname}`;
  } catch {
    return '(invalid URL)';
  }
}

/**
 * An error message safe to print: a driver may quote what it was given, so every credential of
 * the URLs involved is replaced (pg and ioredis do not quote passwords today; this keeps it so).
 */
export function safeMessage(err: unknown, urls: readonly string[]): string {
  let text = err instanceof Error ? err.message : String(err);
  for (const url of urls) {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      continue;
    }
    for (const secret of [u.password, decodeURIComponent(u.password)]) if (secret.length >= 3) text = text.split(secret).join('***');
    text = text.split(url).join(location(url));
  }
  return text;
}

/**
 * A throwaway real Prometheus for integration tests, and the small PromQL helpers the live
 * dashboard/alert test needs.
 *
 * `startPrometheus` runs the system's `/usr/bin/prometheus` (Debian package `prometheus`) on a
 * free 127.0.0.1 port with all its state (config, rule files, TSDB) in a fresh temp dir. The
 * config is written as JSON, which is valid YAML, so no YAML library is needed. `stop()` kills
 * it and removes the dir; a process `exit` hook does the same if a test run dies first.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { freePort, isExecutable, registerEmergencyKill, watchChild } from '../../dev/local/servers.js';

export const PROMETHEUS_BIN = '/usr/bin/prometheus';
const TAIL_CHARS = 8000;

export interface PrometheusOptions {
  /** `job_name` of the one scrape config. */
  readonly jobName: string;
  /** `host:port` targets of that job. */
  readonly targets: readonly string[];
  /** Rule files to load: file name → YAML text. */
  readonly ruleFiles?: Readonly<Record<string, string>>;
  /** @defaultValue '1s' */
  readonly scrapeInterval?: string;
  /** @defaultValue '1s' */
  readonly evaluationInterval?: string;
}

/** One sample of an instant vector (`resultType: vector`). */
export interface VectorSample {
  readonly metric: Readonly<Record<string, string>>;
  readonly value: readonly [number, string];
}

export interface InstantResult {
  readonly resultType: 'vector' | 'scalar' | 'matrix' | 'string';
  readonly result: unknown;
}

export interface ActiveAlert {
  readonly labels: Readonly<Record<string, string>>;
  readonly state: 'pending' | 'firing' | 'inactive';
  readonly value: string;
}

export interface RuleState {
  readonly name: string;
  readonly query: string;
  readonly duration: number;
  readonly health: string;
  readonly lastError?: string;
  readonly type: 'alerting' | 'recording';
  readonly state?: string;
}

export interface LocalPrometheus {
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  /** GET an API path (`/api/v1/...`); throws unless `status` is `success`. */
  api<T>(pathAndQuery: string): Promise<T>;
  /** Instant query at "now". Throws (with the expr and Prometheus' error) if it is invalid. */
  query(expr: string): Promise<InstantResult>;
  alerts(): Promise<ActiveAlert[]>;
  rules(): Promise<RuleState[]>;
  /** The tail of Prometheus' own log, for failure messages. */
  output(): string;
  /** SIGTERM (SIGKILL after 5 s), then remove the temp dir. Idempotent. */
  stop(): Promise<void>;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// A Prometheus still running when this (vitest fork) process exits is killed synchronously and
// its dir removed (servers.ts's emergency hook), so a crashed or timed-out test leaves nothing.

/** Start Prometheus scraping `targets` and evaluating `ruleFiles`; resolves when `/-/ready` answers 200. */
export async function startPrometheus(opts: PrometheusOptions): Promise<LocalPrometheus> {
  if (!isExecutable(PROMETHEUS_BIN)) {
    throw new Error(`${PROMETHEUS_BIN} not found: install the Debian package "prometheus" (apt-get install prometheus)`);
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), 'lensfleet-prom-'));
  try {
    const ruleNames = Object.keys(opts.ruleFiles ?? {});
    for (const name of ruleNames) await writeFile(path.join(dir, name), opts.ruleFiles![name]!);
    const config = {
      global: {
        scrape_interval: opts.scrapeInterval ?? '1s',
        evaluation_interval: opts.evaluationInterval ?? '1s',
        scrape_timeout: '900ms',
      },
      rule_files: ruleNames,
      scrape_configs: [{ job_name: opts.jobName, metrics_path: '/metrics', static_configs: [{ targets: [...opts.targets] }] }],
    };
    // JSON is YAML: Prometheus reads it as is.
    await writeFile(path.join(dir, 'prometheus.yml'), JSON.stringify(config, null, 2));

    // Another process can take the free port before Prometheus binds it; retry on a fresh one.
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const started = await spawnPrometheus(dir, port);
      if ('prometheus' in started) return started.prometheus;
      if (!/address already in use/i.test(started.error.message) || attempt >= 3) throw started.error;
    }
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

async function spawnPrometheus(dir: string, port: number): Promise<{ prometheus: LocalPrometheus } | { error: Error }> {
  const url = `http://127.0.0.1:${port}`;
  const child: ChildProcess = spawn(
    PROMETHEUS_BIN,
    [
      `--config.file=${path.join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${path.join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--storage.tsdb.retention.time=1h',
      '--log.level=warn',
    ],
    { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const watched = watchChild(child, TAIL_CHARS);
  const exited = watched.exited;
  const kill = async (): Promise<void> => {
    if (watched.hasExited()) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };

  const deadline = Date.now() + 20_000;
  for (;;) {
    if (watched.hasExited()) return { error: new Error(`prometheus exited before becoming ready on port ${port}:\n${watched.output().trim()}`) };
    const ready = await fetch(`${url}/-/ready`).then(
      (r) => r.status === 200,
      () => false,
    );
    if (ready) break;
    if (Date.now() > deadline) {
      await kill();
      return { error: new Error(`prometheus was not ready on port ${port} within 20 s:\n${watched.output().trim()}`) };
    }
    await sleep(100);
  }

  const unregister = registerEmergencyKill(() => {
    if (!watched.hasExited()) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
  });
  const api = async <T>(pathAndQuery: string): Promise<T> => {
    const res = await fetch(`${url}${pathAndQuery}`);
    const body = (await res.json()) as { status: string; data?: T; error?: string; errorType?: string };
    if (body.status !== 'success') throw new Error(`GET ${pathAndQuery}: ${body.errorType ?? res.status}: ${body.error ?? 'no error text'}`);
    return body.data as T;
  };
  let stopping: Promise<void> | undefined;
  return {
    prometheus: {
      url,
      port,
      dir,
      api,
      query: (expr) => api<InstantResult>(`/api/v1/query?query=${encodeURIComponent(expr)}`),
      alerts: async () => (await api<{ alerts: ActiveAlert[] }>('/api/v1/alerts')).alerts,
      rules: async () => (await api<{ groups: { rules: RuleState[] }[] }>('/api/v1/rules')).groups.flatMap((g) => g.rules),
      output: () => watched.output(),
      stop: () =>
        (stopping ??= (async () => {
          await kill();
          unregister();
          await rm(dir, { recursive: true, force: true });
        })()),
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Rule file and PromQL helpers

/**
 * Replace every `for:` duration of a rule file with `to`. Returns the new text and how many were
 * replaced. Only lines that are exactly `for: <duration>` (plus an optional comment) match.
 */
export function shortenForDurations(yaml: string, to: string): { yaml: string; replaced: number } {
  let replaced = 0;
  const out = yaml.replace(/^(\s+for:\s*)(\d+[smhdwy])(\s*(?:#.*)?)$/gm, (_m, head: string, _d: string, tail: string) => {
    replaced++;
    return `${head}${to}${tail}`;
  });
  return { yaml: out, replaced };
}

/** Samples of an instant vector, or [] for other result types. */
export function vectorOf(r: InstantResult): VectorSample[] {
  return r.resultType === 'vector' ? (r.result as VectorSample[]) : [];
}

/** True when the result has at least one sample that is a number (not NaN): what a panel draws. */
export function hasNumber(r: InstantResult): boolean {
  if (r.resultType === 'scalar') return !Number.isNaN(Number((r.result as [number, string])[1]));
  return vectorOf(r).some((s) => !Number.isNaN(Number(s.value[1])));
}

const NUMBER_LITERAL = /^[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?|0x[0-9a-f]+|inf|nan)$/i;
const COMPARISONS = ['==', '!=', '>=', '<=', '>', '<'] as const;
const SET_OPERATORS = ['and', 'or', 'unless'] as const;
const isIdentChar = (c: string | undefined) => c !== undefined && /[A-Za-z0-9_:]/.test(c);

/** Index after the bracket group that opens at `open` (`(`, `[` or `{`), skipping strings. */
function skipGroup(s: string, open: number): number {
  let depth = 0;
  for (let i = open; i < s.length; i++) {
    const c = s[i]!;
    if (c === '"' || c === "'" || c === '`') {
      i = skipString(s, i) - 1;
    } else if (c === '(' || c === '[' || c === '{') {
      depth++;
    } else if (c === ')' || c === ']' || c === '}') {
      depth--;
      if (depth === 0) return i + 1;
    }
  }
  throw new Error(`unbalanced brackets in PromQL: ${s}`);
}

/** Index after the string literal that opens at `start`. */
function skipString(s: string, start: number): number {
  const quote = s[start];
  for (let i = start + 1; i < s.length; i++) {
    if (s[i] === '\\' && quote !== '`') i++;
    else if (s[i] === quote) return i + 1;
  }
  throw new Error(`unterminated string in PromQL: ${s}`);
}

/** Skip `bool`, `on (...)` / `ignoring (...)` and `group_left/right (...)` after a binary operator. */
function skipModifiers(s: string, from: number): number {
  let i = from;
  for (;;) {
    while (/\s/.test(s[i] ?? '')) i++;
    const m = /^(bool|on|ignoring|group_left|group_right)\b/.exec(s.slice(i));
    if (!m) return i;
    i += m[0].length;
    while (/\s/.test(s[i] ?? '')) i++;
    if (s[i] === '(' && m[1] !== 'bool') i = skipGroup(s, i);
  }
}

/**
 * Split a PromQL expression at its top-level comparison and set operators (`> 0.8`, `and on (…)`),
 * which bind more loosely than arithmetic: `A / B > 0.01 <= 0.05` → [`A / B`, `0.01`, `0.05`].
 */
export function splitTopLevel(expr: string): string[] {
  const parts: string[] = [];
  let start = 0;
  let i = 0;
  const s = expr;
  while (i < s.length) {
    const c = s[i]!;
    if (c === '"' || c === "'" || c === '`') {
      i = skipString(s, i);
      continue;
    }
    if (c === '(' || c === '[' || c === '{') {
      i = skipGroup(s, i);
      continue;
    }
    if (c === '#') break; // comment to end of line; rule queries have none, but be safe
    let opLength = 0;
    const comparison = COMPARISONS.find((op) => s.startsWith(op, i));
    if (comparison) {
      opLength = comparison.length;
    } else if (!isIdentChar(s[i - 1])) {
      const set = SET_OPERATORS.find((op) => s.startsWith(op, i) && !isIdentChar(s[i + op.length]));
      if (set) opLength = set.length;
    }
    if (opLength > 0) {
      parts.push(s.slice(start, i).trim());
      i = skipModifiers(s, i + opLength);
      start = i;
      continue;
    }
    i++;
  }
  parts.push(s.slice(start).trim());
  return parts;
}

/** `( X )` → `X` when the outer parentheses enclose the whole expression. */
function unwrapParens(expr: string): string {
  let e = expr.trim();
  while (e.startsWith('(') && skipGroup(e, 0) === e.length) e = e.slice(1, -1).trim();
  return e;
}

/**
 * The series an alert expression reads, with its thresholds taken off: for `A >= 0.8 < 0.95`
 * it is [`A`]; for `A > 0 and on (…) B >= 1` it is [`A`, `B`]; for `absent(X == 1)` it is
 * [`X`]. If every one of these returns data, the alert is wired to real metrics and only its
 * threshold decides whether it fires.
 */
export function signalExprs(expr: string): string[] {
  const e = unwrapParens(expr);
  const parts = splitTopLevel(e).filter((p) => !NUMBER_LITERAL.test(unwrapParens(p)));
  if (parts.length > 1) return parts.flatMap(signalExprs);
  const only = parts[0] ?? e;
  if (only !== e) return signalExprs(only);
  const absent = /^absent\s*\(/.exec(e);
  if (absent && skipGroup(e, absent[0].length - 1) === e.length) {
    return signalExprs(e.slice(absent[0].length, -1));
  }
  return [e];
}

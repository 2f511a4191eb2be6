/**
 * Lenses: named, read-only, parameterized queries. A job names a lens and passes parameters;
 * SQL never travels inside a job. Each lens validates its parameters with a schema and builds
 * its SQL with bind parameters only.
 */
import { createHash } from 'node:crypto';
import type { z } from 'zod';
import { formatIssues, LensfleetError } from './errors.js';
import { isLensName, LENS_NAME_MAX_LENGTH, LENS_NAME_PATTERN } from './ids.js';
import type { RestForm } from './rest/client.js';
import { clip } from './settings.js';

export { LENS_NAME_PATTERN };

/** SQL text plus bind values. Values are never interpolated into the text. */
export interface LensQuery {
  readonly text: string;
  readonly values: readonly unknown[];
}

export interface LensDefinition<P> {
  /** Stable name jobs use, e.g. `work_orders.open`. */
  readonly name: string;
  readonly description?: string;
  /** Schema of the job's `params`; its output is what `sql` receives. */
  readonly params: z.ZodType<P>;
  readonly sql: (params: P) => LensQuery;
  /** A result with more rows fails with `RESULT_TOO_LARGE`. @defaultValue 1000 */
  readonly maxRows?: number;
  /** Statement timeout of this lens; defaults to the tenant's statementTimeoutMs. */
  readonly timeoutMs?: number;
  /**
   * Who may run the lens: `service` (the tenant's own login role; a job carrying a user token is
   * refused with AUTH_NOT_ALLOWED), `user` (a verified user token is required: AUTH_REQUIRED
   * without one), or `optional` (as the user when the job carries a token, as the service
   * otherwise). @defaultValue 'service'
   */
  readonly auth?: LensAuthMode;
  /**
   * The same view as a supabase-js query, for Supabase tenants (which are reached over REST, not
   * SQL): `(db, { limit }) => db.from('receiving').select('id, …').order('received_at', { ascending:
   * false }).limit(limit)`. Return the query unawaited. Without it the lens fails on a Supabase
   * tenant with `LENS_BACKEND_UNSUPPORTED`. See docs/SUPABASE.md.
   */
  readonly rest?: RestForm<P>;
}

/** Who may run a lens (see LensDefinition.auth). */
export type LensAuthMode = 'service' | 'user' | 'optional';
const LENS_AUTH_MODES: readonly LensAuthMode[] = ['service', 'user', 'optional'];

/**
 * Set by defineLens on every lens it makes: a catalog accepts nothing else, so a module exporting
 * hand-made objects (no params check, no session-state check on its SQL) is refused at start.
 * `Symbol.for`, not `Symbol()`: a lens module built against its own copy of lensfleet is fine.
 */
export const LENS_BRAND: unique symbol = Symbol.for('lensfleet.lens');

/** Whether `value` is a lens made by defineLens. */
export function isLens(value: unknown): value is Lens<unknown> {
  return typeof value === 'object' && value !== null && (value as { [LENS_BRAND]?: unknown })[LENS_BRAND] === true;
}

export interface Lens<P = unknown> {
  readonly [LENS_BRAND]: true;
  readonly name: string;
  readonly description: string;
  readonly maxRows: number;
  readonly timeoutMs: number | undefined;
  readonly auth: LensAuthMode;
  /** The schema `parse` checks params with (for describing a lens: `lensfleet lenses`, JSON Schema). */
  readonly paramsSchema: z.ZodType<P>;
  /** Validate raw params; `INVALID_PARAMS` naming each problem. */
  parse(raw: unknown): P;
  /** Build the query with a stable prepared-statement name (per distinct SQL text). */
  query(params: P): LensQuery & { readonly name: string };
  /** The REST form (Supabase tenants), if the lens has one. */
  readonly rest: RestForm<P> | undefined;
}

/** Define a lens. Throws at definition time on a bad name or limits. */
export function defineLens<P>(def: LensDefinition<P>): Lens<P> {
  if (!isLensName(def.name)) {
    throw new LensfleetError('INVALID_CONFIG', `lens name "${def.name}" must match ${LENS_NAME_PATTERN.source} (at most ${LENS_NAME_MAX_LENGTH} characters)`);
  }
  const maxRows = def.maxRows ?? 1000;
  if (!Number.isInteger(maxRows) || maxRows < 1) throw new LensfleetError('INVALID_CONFIG', `lens ${def.name}: maxRows must be a positive integer`);
  const auth = def.auth ?? 'service';
  if (!LENS_AUTH_MODES.includes(auth)) throw new LensfleetError('INVALID_CONFIG', `lens ${def.name}: auth must be one of ${LENS_AUTH_MODES.join(', ')}`);
  if (def.timeoutMs !== undefined && (!Number.isInteger(def.timeoutMs) || def.timeoutMs < 1)) {
    throw new LensfleetError('INVALID_CONFIG', `lens ${def.name}: timeoutMs must be a positive integer`);
  }
  // Prepared statement names per SQL text: Postgres parses and plans once per connection.
  const names = new Map<string, string>();
  const statementName = (text: string): string => {
    let n = names.get(text);
    if (n === undefined) {
      // Advice for lens authors, once per distinct SQL text: connections come back clean
      // whatever a lens does (src/lens-run.ts), so this is not a safety check, only a hint that
      // the lens does something a read-only lens should not need.
      if (changesSessionState(text)) {
        process.emitWarning(
          `lens ${def.name} builds SQL that changes session state (SET/RESET/DISCARD or set_config(…, false)); it is rolled back after the job, use a transaction-local setting instead`,
          { code: 'LENSFLEET_LENS_SESSION_STATE' },
        );
      }
      n = `lf_${createHash('sha1').update(text).digest('hex').slice(0, 16)}`;
      names.set(text, n);
    }
    return n;
  };
  return Object.freeze({
    [LENS_BRAND]: true as const,
    name: def.name,
    description: def.description ?? '',
    maxRows,
    timeoutMs: def.timeoutMs,
    auth,
    rest: def.rest,
    paramsSchema: def.params,
    parse(raw: unknown): P {
      const r = def.params.safeParse(raw ?? {});
      if (r.success) return r.data;
      throw new LensfleetError('INVALID_PARAMS', `params of lens ${def.name} are invalid: ${formatIssues(r.error)}`, {
        details: { lens: def.name },
      });
    },
    query(params: P) {
      const q = def.sql(params);
      return { name: statementName(q.text), text: q.text, values: q.values };
    },
  });
}

/**
 * Whether SQL text would change session state that outlives its statement: a SET/RESET/DISCARD
 * statement, or set_config(…) whose third argument is not `true` (transaction-local).
 */
export function changesSessionState(text: string): boolean {
  if (/^\s*(set|reset|discard)\b/i.test(text)) return true;
  const re = /\bset_config\s*\(/gi;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    let depth = 1;
    let i = re.lastIndex;
    const start = i;
    for (; i < text.length && depth > 0; i++) {
      if (text[i] === '(') depth++;
      else if (text[i] === ')') depth--;
    }
    const args = text.slice(start, i - 1);
    if (!/,\s*true\s*$/i.test(args)) return true;
  }
  return false;
}

/** The lenses a worker can run, by name. */
export class LensCatalog {
  readonly #lenses = new Map<string, Lens<unknown>>();

  // biome-ignore lint/suspicious/noExplicitAny: a catalog holds lenses of every params type
  constructor(lenses: Iterable<Lens<any>> = []) {
    for (const l of lenses) this.add(l);
  }

  // biome-ignore lint/suspicious/noExplicitAny: a catalog holds lenses of every params type
  add(lens: Lens<any>): this {
    if (!isLens(lens)) throw new LensfleetError('INVALID_CONFIG', 'a catalog takes only lenses made by defineLens(...)');
    if (this.#lenses.has(lens.name)) throw new LensfleetError('INVALID_CONFIG', `lens ${lens.name} is defined twice`);
    this.#lenses.set(lens.name, lens);
    return this;
  }

  /** The lens with this name, or `UNKNOWN_LENS`. */
  get(name: string): Lens<unknown> {
    const lens = this.#lenses.get(name);
    if (lens === undefined) {
      throw new LensfleetError('UNKNOWN_LENS', `unknown lens "${name}"; known lenses: ${this.names().join(', ')}`, { details: { lens: name } });
    }
    return lens;
  }

  names(): string[] {
    return [...this.#lenses.keys()].sort();
  }

  list(): Lens<unknown>[] {
    return [...this.#lenses.values()];
  }
}

/** Load lens modules (`LENSFLEET_LENS_MODULES`): each default-exports or exports `lenses`: Lens[]. */
export async function loadLensModules(catalog: LensCatalog, specifiers: readonly string[]): Promise<void> {
  const { pathToFileURL } = await import('node:url');
  const { isAbsolute, resolve } = await import('node:path');
  for (const spec of specifiers) {
    const target = spec.startsWith('.') || isAbsolute(spec) ? pathToFileURL(resolve(spec)).href : spec;
    let mod: { default?: unknown; lenses?: unknown };
    try {
      mod = (await import(target)) as typeof mod;
    } catch (err) {
      throw new LensfleetError('INVALID_CONFIG', `LENSFLEET_LENS_MODULES: cannot load ${spec}: ${(err as Error).message}`, { cause: err });
    }
    const lenses = mod.lenses ?? mod.default;
    if (!Array.isArray(lenses))
      throw new LensfleetError('INVALID_CONFIG', `LENSFLEET_LENS_MODULES: ${spec} must export \`lenses\` (an array of defineLens(...))`);
    for (const [i, l] of lenses.entries()) {
      if (!isLens(l)) {
        const named = (l as { name?: unknown } | null)?.name;
        const name = typeof named === 'string' ? ` (${clip(named, 64)})` : '';
        throw new LensfleetError('INVALID_CONFIG', `LENSFLEET_LENS_MODULES: ${spec}: lenses[${i}]${name} is not made by defineLens(...) from 'lensfleet/lens'`);
      }
      catalog.add(l);
    }
  }
}

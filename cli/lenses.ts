/**
 * `lensfleet lenses`: the catalog a worker started with this environment would load — the
 * built-in lenses plus those of LENSFLEET_LENS_MODULES, loaded by the worker's own code (so a
 * module the worker would refuse is refused here, with the same message and exit code 78) — each
 * with its parameters as a JSON Schema (from its zod schema), who may run it, maxRows and timeout.
 */
import { z } from 'zod';
import { loadWorkerConfig, unknownLensfleetVariables } from '../src/config.js';
import { LensfleetError } from '../src/errors.js';
import { type Lens, LensCatalog, loadLensModules } from '../src/lens.js';
import { maritimeLenses } from '../src/lenses/maritime.js';
import type { Env } from '../src/settings.js';
import { parseCommandArgs } from './args.js';

export const LENSES_EXIT = {
  OK: 0,
  /** Bad usage. */
  USAGE: 2,
  /** The configuration is invalid, e.g. a lens module cannot be loaded: the worker would exit 78 too. */
  CONFIG: 78,
} as const;

export const LENSES_USAGE = `usage: lensfleet lenses [--json]

The lenses a worker started with this environment would serve: the built-in ones and those of
LENSFLEET_LENS_MODULES (loaded as the worker loads them), each with its parameters (a JSON
Schema, draft 2020-12, of what a job's params may be), who may run it (auth: service, user or
optional), maxRows and timeout (none: the tenant's statement timeout).

options:
  --json  one JSON array: name, description, auth, maxRows, timeoutMs, rest (has a form for
          Supabase tenants), params (JSON Schema)
  --help  this text
environment: LENSFLEET_LENS_MODULES, LENSFLEET_LENS_BASE_DIR and every other worker setting (they
are validated as the worker validates them)
exit codes: 0 listed, 2 bad usage, 78 the configuration is invalid (as the worker would exit: a
lens module that cannot be loaded, a setting out of range)`;

export interface LensDescription {
  readonly name: string;
  readonly description: string;
  readonly auth: string;
  readonly maxRows: number;
  /** null: the tenant's statementTimeoutMs. */
  readonly timeoutMs: number | null;
  /** Whether the lens can run on a Supabase (REST) tenant. */
  readonly rest: boolean;
  readonly params: Record<string, unknown>;
}

export async function lensesCommand(argv: readonly string[], env: Env): Promise<number> {
  const parsed = parseCommandArgs<{ json: boolean }>(argv, { json: { type: 'boolean', default: false } }, LENSES_USAGE);
  if ('exit' in parsed) return parsed.exit;
  const { values } = parsed;
  let catalog: LensCatalog;
  try {
    catalog = await loadCatalog(env);
  } catch (err) {
    if (!(err instanceof LensfleetError) || err.code !== 'INVALID_CONFIG') throw err;
    console.error(`lensfleet lenses: ${err.message}`);
    return LENSES_EXIT.CONFIG;
  }
  const unknown = unknownLensfleetVariables(env);
  if (unknown.length > 0) console.error(`(unknown LENSFLEET_* variables are ignored, as the worker ignores them: ${unknown.join(', ')})`);
  const lenses = catalog
    .list()
    .sort((a, b) => (a.name < b.name ? -1 : 1))
    .map(describeLens);
  console.log(values.json ? JSON.stringify(lenses, null, 2) : render(lenses));
  return LENSES_EXIT.OK;
}

/** The worker's catalog for `env`, built as workers/bootstrap.ts builds it. Throws INVALID_CONFIG. */
export async function loadCatalog(env: Env): Promise<LensCatalog> {
  const config = loadWorkerConfig(env);
  const catalog = new LensCatalog(maritimeLenses);
  await loadLensModules(catalog, config.lensModules);
  return catalog;
}

export function describeLens(lens: Lens<unknown>): LensDescription {
  return {
    name: lens.name,
    description: lens.description,
    auth: lens.auth,
    maxRows: lens.maxRows,
    timeoutMs: lens.timeoutMs ?? null,
    rest: lens.rest !== undefined,
    params: paramsSchema(lens),
  };
}

/**
 * What a job may send as params (`io: 'input'`: a field with a default is optional). A part JSON
 * Schema cannot say (a transform, a custom check) is left open rather than failing the listing:
 * the worker still checks it with the zod schema.
 */
function paramsSchema(lens: Lens<unknown>): Record<string, unknown> {
  return z.toJSONSchema(lens.params, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
}

function render(lenses: readonly LensDescription[]): string {
  const out: string[] = [];
  for (const l of lenses) {
    out.push(`${l.name}${l.description ? `  ${l.description}` : ''}`);
    out.push(
      `  auth ${l.auth}, maxRows ${l.maxRows}, timeout ${l.timeoutMs === null ? "the tenant's statement timeout" : `${l.timeoutMs} ms`}${l.rest ? ', Postgres and Supabase tenants' : ', Postgres tenants only'}`,
    );
    out.push(`  params: ${summarize(l.params)}`);
    out.push('');
  }
  out.push(`${lenses.length} lens${lenses.length === 1 ? '' : 'es'} (--json for each one's params as a JSON Schema)`);
  return out.join('\n');
}

type JsonSchema = {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  required?: string[];
  enum?: unknown[];
  const?: unknown;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  default?: unknown;
  items?: JsonSchema;
  anyOf?: JsonSchema[];
};

/** `{ limit?: integer 1..200 = 20, status?: "pending"|"received" }` */
function summarize(schema: Record<string, unknown>): string {
  const s = schema as JsonSchema;
  if (s.properties === undefined) return describeType(s);
  const required = new Set(s.required ?? []);
  const fields = Object.entries(s.properties).map(([k, v]) => `${k}${required.has(k) ? '' : '?'}: ${describeType(v)}`);
  return fields.length === 0 ? '{} (none)' : `{ ${fields.join(', ')} }`;
}

function describeType(s: JsonSchema): string {
  if (s.enum !== undefined) return s.enum.map((v) => JSON.stringify(v)).join('|');
  if (s.const !== undefined) return JSON.stringify(s.const);
  if (s.anyOf !== undefined) return s.anyOf.map(describeType).join(' | ');
  let t = Array.isArray(s.type) ? s.type.join('|') : (s.type ?? 'any');
  if (t === 'array' && s.items) t = `${describeType(s.items)}[]`;
  const lo = s.minimum ?? s.minLength;
  const hi = s.maximum ?? s.maxLength;
  if (lo !== undefined || hi !== undefined) t += ` ${lo ?? ''}..${hi ?? ''}${s.type === 'string' ? ' chars' : ''}`;
  if (s.default !== undefined) t += ` = ${JSON.stringify(s.default)}`;
  return t;
}

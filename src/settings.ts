/**
 * Settings machinery: a setting is one environment variable whose name, schema, default and help
 * are written once, in a table (`config.ts`) that the loader, the README and the tests all loop
 * over. Values are read once, at the edge, and parsed with the setting's schema; a bad value is an
 * `INVALID_CONFIG` naming the variable (and never echoing a secret).
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { clip, LensfleetError } from './errors.js';
import { Secret } from './secret.js';

export type Env = Readonly<Record<string, string | undefined>>;

/** One environment variable. */
export interface Setting<T> {
  /** The variable's name. */
  readonly env: string;
  /** Variables read before `env`; the first one set wins (`PORT` before `LENSFLEET_METRICS_PORT`). */
  readonly aliases?: readonly string[];
  /** Schema of a value; `label` names the setting in messages (the variable, or a tenants-file key). */
  readonly schema: (label: string) => z.ZodType<T>;
  /** Value when the variable is unset or blank. */
  readonly default: T;
  /** The default as the README shows it, when the value itself does not say it (`2 × concurrency`). */
  readonly defaultDoc?: string;
  /** One line of Markdown for the README. */
  readonly help: string;
  /**
   * A secret: it may instead be given as a file path in `<env>_FILE` (Docker/Kubernetes secrets),
   * read once when the configuration is loaded; its value is never echoed in a message.
   */
  readonly secret?: boolean;
}

// biome-ignore lint/suspicious/noExplicitAny: a table holds settings of every value type
export type SettingsTable = Readonly<Record<string, Setting<any>>>;

export type SettingValues<T extends SettingsTable> = { [K in keyof T]: T[K] extends Setting<infer V> ? V : never };

/** Define a setting (infers its value type from the schema). */
export function setting<T>(s: Setting<T>): Setting<T> {
  return Object.freeze(s);
}

// ---------------------------------------------------------------------------------------------
// Schemas. Each accepts an environment string and, for the tenants file, the JSON value.

const BOOL_TRUE = ['1', 'true', 'on', 'yes'];
const BOOL_FALSE = ['0', 'false', 'off', 'no'];

export const schemas = {
  int:
    (min: number, max = Number.MAX_SAFE_INTEGER) =>
    (label: string) =>
      z.coerce
        .number({ error: `${label} must be a whole number` })
        .int(`${label} must be a whole number`)
        .min(min, `${label} must be at least ${min}`)
        .max(max, `${label} must be at most ${max}`),
  bool: () => (label: string) =>
    z.union([z.boolean(), z.string()], { error: `${label} must be one of on|off|true|false|1|0` }).transform((v, ctx) => {
      if (typeof v === 'boolean') return v;
      const s = v.trim().toLowerCase();
      if (BOOL_TRUE.includes(s)) return true;
      if (!BOOL_FALSE.includes(s)) ctx.addIssue({ code: 'custom', message: `${label} must be one of on|off|true|false|1|0` });
      return false;
    }),
  oneOf:
    <const V extends string>(values: readonly [V, ...V[]]) =>
    (label: string) =>
      z
        .string()
        .trim()
        .toLowerCase()
        .pipe(z.enum(values, { error: `${label} must be one of ${values.join('|')}` })),
  text: () => (_label: string) => z.string().trim(),
  optionalText: () => (_label: string) => z.string().trim().optional(),
  list: () => (_label: string) => z.string().transform(splitList),
  secret: () => (label: string) =>
    z
      .string()
      .trim()
      .min(1, `${label} is empty`)
      .transform((v) => new Secret(v))
      .optional(),
} as const;

/** `a, b,,c` → `['a', 'b', 'c']`. */
export function splitList(value: string | undefined): string[] {
  return (value ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

// ---------------------------------------------------------------------------------------------
// Reading.

/** `clip` (errors.ts, a leaf module the job contract may import) quotes values in messages. */
export { clip };

/** Parse one value with a schema; `INVALID_CONFIG` naming `name`, echoing the value only if `echo`. */
export function parseValue<T>(schema: z.ZodType<T>, raw: unknown, name: string, echo = true): T {
  const r = schema.safeParse(raw);
  if (r.success) return r.data;
  const msg = r.error.issues[0]?.message ?? 'invalid value';
  if (!echo) throw new LensfleetError('INVALID_CONFIG', `${name}: ${msg}`);
  throw new LensfleetError('INVALID_CONFIG', `${name}=${clip(JSON.stringify(raw) ?? String(raw), 64)}: ${msg}`);
}

/**
 * The raw text of a setting and the variable it came from, or undefined when unset or blank.
 * A secret may come from `<name>_FILE`; setting both the variable and its file is a contradiction.
 */
export function rawSetting(env: Env, names: readonly string[], secret = false): { name: string; raw: string } | undefined {
  for (const name of names) {
    const direct = env[name];
    const filePath = secret ? env[`${name}_FILE`]?.trim() : undefined;
    if (filePath) {
      if (direct !== undefined && direct.trim() !== '') {
        throw new LensfleetError('INVALID_CONFIG', `${name} and ${name}_FILE are both set: set only one`);
      }
      return { name: `${name}_FILE`, raw: readSecretFile(filePath, `${name}_FILE`) };
    }
    if (direct !== undefined && direct.trim() !== '') return { name, raw: direct };
  }
  return undefined;
}

/** Read a secret from a file (one value; a trailing newline, as `echo` writes, is not part of it). */
export function readSecretFile(path: string, name: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new LensfleetError('INVALID_CONFIG', `${name}=${path}: cannot read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const value = text.replace(/\r?\n$/, '');
  if (value.trim() === '') throw new LensfleetError('INVALID_CONFIG', `${name}=${path}: the file is empty`);
  return value;
}

/** Read one setting from the environment. */
export function readSetting<T>(s: Setting<T>, env: Env): T {
  const found = rawSetting(env, [...(s.aliases ?? []), s.env], s.secret);
  if (found === undefined) return s.default;
  return parseValue(s.schema(found.name.replace(/_FILE$/, '')), found.raw, found.name, !s.secret);
}

/** Read every setting of a table from the environment. */
export function readSettings<T extends SettingsTable>(table: T, env: Env): SettingValues<T> {
  const out: Record<string, unknown> = {};
  for (const [key, s] of Object.entries(table)) out[key] = readSetting(s, env);
  return out as SettingValues<T>;
}

/** Every variable name a table reads (aliases and `_FILE` variants included). */
export function variableNames(table: SettingsTable): string[] {
  return Object.values(table).flatMap((s) => [...(s.aliases ?? []), s.env].flatMap((n) => (s.secret ? [n, `${n}_FILE`] : [n])));
}

// ---------------------------------------------------------------------------------------------
// Documentation.

/** The default as the README shows it. */
export function defaultDoc(s: Setting<unknown>): string {
  if (s.defaultDoc !== undefined) return s.defaultDoc;
  const d = s.default;
  if (d === undefined || (Array.isArray(d) && d.length === 0)) return '(none)';
  if (typeof d === 'boolean') return `\`${d ? 'on' : 'off'}\``;
  if (Array.isArray(d)) return `\`${d.join(',')}\``;
  return `\`${String(d)}\``;
}

/** A Markdown table of settings: variable(s), default, meaning. */
export function renderSettingsTable(table: SettingsTable): string {
  const rows = Object.values(table).map((s) => {
    const names = [...(s.aliases ?? []), s.env].map((n) => `\`${n}\``).join(' / ');
    const file = s.secret ? ` (or \`${s.env}_FILE\`)` : '';
    return `| ${names}${file} | ${defaultDoc(s)} | ${s.help} |`;
  });
  return ['| variable | default | meaning |', '|---|---|---|', ...rows].join('\n');
}

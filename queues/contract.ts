/**
 * The queue contract: what producers put in Redis and workers accept. The contract is the data,
 * not this SDK: a plain BullMQ producer adding the same JSON to the same queue works too, so the
 * worker validates every job again.
 *
 * Job data, version 1: `{ "v": 1, "tenant": "<id>", "lens": "<name>", "params": { … }, "auth"?: { "jwt": "<token>" } }`
 * Job result: `{ rows, rowCount, lens, tenant, durationMs }` (fields may be added, never removed).
 */
import type { DefaultJobOptions } from 'bullmq';
import { z } from 'zod';
import { formatIssues, LensfleetError } from '../src/errors.js';
import {
  DEFAULT_MAX_PAYLOAD_BYTES,
  DEFAULT_QUEUE_NAME,
  isLensName,
  JWT_MAX_LENGTH,
  LENS_NAME_MAX_LENGTH,
  LENS_NAME_PATTERN,
  TENANT_ID_PATTERN,
} from '../src/ids.js';

export { DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_QUEUE_NAME };

// The descriptions are for the published JSON Schema (queues/job-schema.ts); they change no check.
export const jobDataV1 = z
  .object({
    v: z.literal(1, { error: 'v must be 1 (the job data version)' }).meta({ description: 'The job data version: 1.' }),
    tenant: z
      .string()
      .regex(TENANT_ID_PATTERN, `tenant must match ${TENANT_ID_PATTERN.source}`)
      .meta({ description: 'The tenant whose database the lens reads, as configured on the worker (case-sensitive).' }),
    lens: z
      .string()
      .max(LENS_NAME_MAX_LENGTH)
      .regex(LENS_NAME_PATTERN, `lens must match ${LENS_NAME_PATTERN.source}`)
      .meta({ description: 'The lens to run, e.g. receiving.recent.' }),
    params: z
      .record(z.string(), z.unknown())
      .default({})
      .meta({ description: "The lens's parameters, checked against its params schema ($defs, by lens name)." }),
    auth: z
      .object({ jwt: z.string().min(1).max(JWT_MAX_LENGTH).meta({ description: "The user's access token (a JWT signed with the tenant's key)." }) })
      .strict()
      .optional()
      .meta({ description: 'Run as this user: row-level security decides what the job sees. Without it the job runs as the service.' }),
  })
  .strict();

export type LensJobData = z.infer<typeof jobDataV1>;

/**
 * BullMQ's key prefix of the queue on one Redis server or behind Sentinel: BullMQ's own default,
 * so queues made before lensfleet knew about Redis Cluster, and plain BullMQ producers that set no
 * prefix, are the same queue.
 */
export const QUEUE_PREFIX = 'bull';

/**
 * The key prefix of queue `name`: `bull` on one server or behind Sentinel; `{<name>}` on a Redis
 * Cluster, where BullMQ's scripts touch several keys of a queue at once and so every key must
 * hash to one slot (the braces are the hash tag; one tag per queue spreads several queues over
 * the nodes). A producer and the workers must use the same prefix, or they use two different
 * queues: `createLensQueue` takes it from here (a Cluster connection gets the tagged one), and a
 * plain BullMQ producer on a Cluster passes `prefix: queuePrefix(name, true)`. A producer on a
 * Cluster without the tag cannot add at all (Redis answers CROSSSLOT).
 */
export function queuePrefix(name: string, cluster: boolean): string {
  return cluster ? `{${name}}` : QUEUE_PREFIX;
}

/** What a producer passes: the job data without the version. */
export interface LensRequest {
  readonly tenant: string;
  readonly lens: string;
  readonly params?: Record<string, unknown>;
  readonly auth?: { readonly jwt: string };
}

/**
 * A lens catalog as the typed SDK sees it: lens name → the params a producer sends (the params
 * schema's input). `MaritimeCatalog` (the built-in lenses, `lensfleet/lens`) is one;
 * `CatalogOf<typeof myLenses>` makes one from your own `defineLens` list. Only a type: the
 * producer loads no lens code, and the worker validates every job again.
 */
export type LensCatalogShape = { readonly [lens: string]: Record<string, unknown> };

/** The untyped catalog: any lens name, any params (the escape hatch for dynamic use). */
export type AnyLensCatalog = LensCatalogShape;

/**
 * A request for one lens of catalog `C`: `lens` names it and `params` has its params type; params
 * may be left out when the lens needs none (every field optional).
 */
export type LensRequestOf<C extends LensCatalogShape> = {
  [K in keyof C & string]: { readonly tenant: string; readonly lens: K; readonly auth?: { readonly jwt: string } } & (Record<never, never> extends C[K]
    ? { readonly params?: C[K] }
    : { readonly params: C[K] });
}[keyof C & string];

export interface LensResult {
  readonly rows: Record<string, unknown>[];
  readonly rowCount: number;
  readonly lens: string;
  readonly tenant: string;
  readonly durationMs: number;
}

/**
 * Validate raw job data. Throws `PAYLOAD_TOO_LARGE` or `INVALID_JOB` with a message saying what
 * to fix. Never echoes the payload (it may carry a JWT).
 */
export function parseJobData(raw: unknown, maxPayloadBytes = DEFAULT_MAX_PAYLOAD_BYTES): LensJobData {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    const kind = raw === null ? 'null' : Array.isArray(raw) ? 'an array' : typeof raw;
    throw new LensfleetError('INVALID_JOB', `job data must be an object {v, tenant, lens, params}, got ${kind}`);
  }
  // Characters are not bytes (UTF-8 takes up to 4 per character), so only a job that is clearly
  // small skips the exact measure.
  if (jsonSizeUpTo(raw, maxPayloadBytes) > maxPayloadBytes / 4) {
    const size = jsonSize(raw);
    if (size > maxPayloadBytes) {
      throw new LensfleetError(
        'PAYLOAD_TOO_LARGE',
        `job data is ${size} bytes, more than the limit of ${maxPayloadBytes} (LENSFLEET_MAX_PAYLOAD_BYTES); send ids, not documents`,
      );
    }
  }
  // Hot path: plain checks for a well-formed job; the schema only runs to explain a bad one.
  const quick = wellFormed(raw as Record<string, unknown>);
  if (quick !== undefined) return quick;
  const r = jobDataV1.safeParse(raw);
  if (!r.success) throw new LensfleetError('INVALID_JOB', `job data is invalid: ${formatIssues(r.error)}`);
  return r.data;
}

const JOB_KEYS = new Set(['v', 'tenant', 'lens', 'params', 'auth']);

/** The job data if it is a valid version-1 job (same rules as `jobDataV1`), else undefined. */
function wellFormed(d: Record<string, unknown>): LensJobData | undefined {
  for (const k in d) if (!JOB_KEYS.has(k)) return undefined;
  const { v, tenant, lens, params, auth } = d;
  if (v !== 1 || typeof tenant !== 'string' || !TENANT_ID_PATTERN.test(tenant)) return undefined;
  if (typeof lens !== 'string' || !isLensName(lens)) return undefined;
  if (params !== undefined && (params === null || typeof params !== 'object' || Array.isArray(params))) return undefined;
  if (auth !== undefined) {
    if (auth === null || typeof auth !== 'object') return undefined;
    const a = auth as Record<string, unknown>;
    for (const k in a) if (k !== 'jwt') return undefined;
    if (typeof a.jwt !== 'string' || a.jwt.length < 1 || a.jwt.length > JWT_MAX_LENGTH) return undefined;
  }
  if (params !== undefined && auth === undefined) return d as LensJobData; // nothing to default: no copy
  const out: LensJobData = { v: 1, tenant, lens, params: (params ?? {}) as Record<string, unknown> };
  if (auth !== undefined) out.auth = auth as { jwt: string };
  return out;
}

function jsonSize(value: unknown): number {
  try {
    return Buffer.byteLength(JSON.stringify(value) ?? '', 'utf8');
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}

/**
 * A lower bound of the serialised size, computed without serialising, that stops as soon as it
 * passes `limit` (a job of a few hundred bytes costs a handful of property visits).
 */
function jsonSizeUpTo(value: unknown, limit: number): number {
  let size = 0;
  const stack: unknown[] = [value];
  while (stack.length > 0 && size <= limit) {
    const v = stack.pop();
    if (typeof v === 'string') size += v.length + 2;
    else if (v === null || typeof v !== 'object') size += 5;
    else if (Array.isArray(v)) {
      size += 2 + v.length;
      for (const x of v) stack.push(x);
    } else {
      size += 2;
      for (const k in v as Record<string, unknown>) {
        size += k.length + 4;
        stack.push((v as Record<string, unknown>)[k]);
      }
    }
    if (stack.length > 100_000) return Number.POSITIVE_INFINITY;
  }
  return size;
}

/** Attempts of a job (the first run and its retries); the worker caps any job at LENSFLEET_MAX_ATTEMPTS, default the same. */
export const DEFAULT_ATTEMPTS = 5;
/** First retry delay, doubling per attempt (LENSFLEET_RETRY_BACKOFF_MS for jobs without their own backoff). */
export const DEFAULT_BACKOFF_MS = 500;
/** Completed jobs kept 1 h, at most 10,000 (LENSFLEET_KEEP_COMPLETED_SECONDS / _COUNT on the worker). */
export const DEFAULT_KEEP_COMPLETED = Object.freeze({ age: 3600, count: 10_000 });
/** Failed jobs kept 7 days, at most 10,000 (LENSFLEET_KEEP_FAILED_SECONDS / _COUNT on the worker). */
export const DEFAULT_KEEP_FAILED = Object.freeze({ age: 7 * 24 * 3600, count: 10_000 });

/**
 * Default job options: retries with exponential backoff for transient faults (validation
 * failures are never retried, see errors.ts), and bounded history so Redis does not grow
 * without limit. The worker applies the same bounds to jobs from any producer.
 */
export const DEFAULT_JOB_OPTIONS: DefaultJobOptions = Object.freeze({
  attempts: DEFAULT_ATTEMPTS,
  backoff: { type: 'exponential', delay: DEFAULT_BACKOFF_MS },
  removeOnComplete: { ...DEFAULT_KEEP_COMPLETED },
  removeOnFail: { ...DEFAULT_KEEP_FAILED },
});

/**
 * The job contract as a JSON Schema (draft 2020-12), for producers in other languages: generated
 * from the same zod schemas the worker validates with — the job envelope (`jobDataV1`) and each
 * lens's params schema — so the published file cannot say something the worker does not.
 * `npm run schema` writes `schema/lens-job.v1.schema.json` from the built-in lenses; a test fails
 * when the committed file differs from a fresh generation.
 *
 * Shape: the envelope, and per lens `if lens is "<name>" then params is <that lens's schema>`
 * (an `allOf` of if/then, not a `oneOf`): a validator then reports the one lens's params problem
 * instead of one failure per lens, and a job for a lens outside this catalog (a lens module the
 * schema was not generated with) still passes the envelope check — the worker answers
 * UNKNOWN_LENS if it has no such lens.
 */
import { z } from 'zod';
import { DEFAULT_ATTEMPTS, DEFAULT_JOB_OPTIONS, DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_QUEUE_NAME, jobDataV1, QUEUE_PREFIX } from './contract.js';

/** What the schema needs of a lens: its name, description and params schema (a `Lens` has them). */
export interface SchemaLens {
  readonly name: string;
  readonly description?: string;
  readonly params: z.ZodType;
}

/** The published file's path in the repository. */
export const JOB_SCHEMA_FILE = 'schema/lens-job.v1.schema.json';

/** The `$id` of the schema: a name, not a URL to fetch. */
export const JOB_SCHEMA_ID = 'urn:lensfleet:lens-job:v1';

/**
 * What no JSON Schema keyword can say, stated in the descriptions so a producer knows what the
 * worker checks beyond the schema.
 */
const ENVELOPE_NOTE = [
  `The worker also refuses job data whose JSON is larger than LENSFLEET_MAX_PAYLOAD_BYTES (default ${DEFAULT_MAX_PAYLOAD_BYTES} bytes, UTF-8) with PAYLOAD_TOO_LARGE: JSON Schema measures no serialised size.`,
  'A lens name that matches the pattern but is not in the worker’s catalog fails with UNKNOWN_LENS, a tenant it does not know with TENANT_NOT_FOUND.',
].join(' ');

/**
 * The schema's `x-lensfleet` annotation (validators ignore unknown keywords): how to add a job
 * that passes, for a producer that is not this SDK.
 */
function bullmqContract(): Record<string, unknown> {
  return {
    queue: DEFAULT_QUEUE_NAME,
    queueNote: 'the workers’ LENSFLEET_QUEUE; lens-queries unless set',
    prefix: QUEUE_PREFIX,
    prefixOnRedisCluster: '{<queue>}',
    jobName: 'the lens name (the worker reads only the data; the name is for people and dashboards)',
    idempotentJobId: 'idem-<tenant>-<key>, key matching ^[A-Za-z0-9_.-]{1,128}$ (the SDK’s idempotencyKey)',
    maxPayloadBytes: DEFAULT_MAX_PAYLOAD_BYTES,
    maxPayloadBytesNote: 'the worker default (LENSFLEET_MAX_PAYLOAD_BYTES): serialised UTF-8 JSON of the job data',
    jobOptions: structuredClone(DEFAULT_JOB_OPTIONS),
    jobOptionsNote: `the SDK's defaults; the worker caps attempts at LENSFLEET_MAX_ATTEMPTS (default ${DEFAULT_ATTEMPTS}) and retention at its LENSFLEET_KEEP_* settings whatever a job asks`,
  };
}

/** The JSON Schema of version-1 job data for `lenses`. */
export function lensJobSchema(lenses: readonly SchemaLens[]): Record<string, unknown> {
  const envelope = z.toJSONSchema(jobDataV1, { io: 'input', target: 'draft-2020-12' }) as Record<string, unknown>;
  delete envelope.$schema;
  const defs: Record<string, unknown> = {};
  const byLens: unknown[] = [];
  for (const lens of [...lenses].sort((a, b) => a.name.localeCompare(b.name))) {
    const params = z.toJSONSchema(lens.params, { io: 'input', target: 'draft-2020-12', unrepresentable: 'any' }) as Record<string, unknown>;
    delete params.$schema;
    const note = transformNote(lens.params);
    defs[lens.name] = {
      title: `params of ${lens.name}`,
      ...(lens.description ? { description: note ? `${lens.description} ${note}` : lens.description } : note ? { description: note } : {}),
      ...params,
    };
    byLens.push({
      if: { properties: { lens: { const: lens.name } }, required: ['lens'] },
      // biome-ignore lint/suspicious/noThenProperty: `then` is a JSON Schema keyword
      then: { properties: { params: { $ref: `#/$defs/${escapePointer(lens.name)}` } } },
    });
  }
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    $id: JOB_SCHEMA_ID,
    title: 'lensfleet lens job, version 1',
    description: `The data of one BullMQ job on a lensfleet queue: which lens to run for which tenant, with which params (and, optionally, as which user). Generated from the worker's own schemas (queues/contract.ts jobDataV1 and each lens's params); do not edit. ${ENVELOPE_NOTE}`,
    'x-lensfleet': bullmqContract(),
    ...envelope,
    allOf: byLens,
    $defs: defs,
  };
}

/** The schema as the published file holds it (2-space JSON, final newline). */
export function renderJobSchema(lenses: readonly SchemaLens[]): string {
  return `${JSON.stringify(lensJobSchema(lenses), null, 2)}\n`;
}

/** A JSON Pointer token (RFC 6901): `~` → `~0`, `/` → `~1`. Lens names have neither, but a pointer is a pointer. */
function escapePointer(token: string): string {
  return token.replace(/~/g, '~0').replace(/\//g, '~1');
}

/**
 * Transforms JSON Schema cannot express, found in the params schema: a string zod rewrites before
 * its checks (`.trim()`, `.toLowerCase()`: an "overwrite" check) is checked after rewriting, so
 * "   " fails `minLength: 1` at the worker, not in the schema.
 */
function transformNote(schema: z.ZodType): string | undefined {
  const rewritten: string[] = [];
  const visit = (s: unknown, path: string): void => {
    const def = (s as { _zod?: { def?: Record<string, unknown> } })._zod?.def;
    if (def === undefined) return;
    if (def.type === 'object') {
      for (const [k, v] of Object.entries(def.shape as Record<string, unknown>)) visit(v, path ? `${path}.${k}` : k);
    } else if (def.type === 'optional' || def.type === 'default' || def.type === 'nullable') {
      visit(def.innerType, path);
    } else if (def.type === 'string') {
      const checks = (def.checks as { _zod?: { def?: { check?: string } } }[] | undefined) ?? [];
      if (checks.some((c) => c._zod?.def?.check === 'overwrite')) rewritten.push(path);
    }
  };
  visit(schema, '');
  return rewritten.length
    ? `The worker normalises ${rewritten.join(', ')} (trim or case) before its checks, which JSON Schema cannot express: a value that passes only before normalising (blank, for a minLength) passes here and fails there with INVALID_PARAMS.`
    : undefined;
}

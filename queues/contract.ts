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
import { LensfleetError } from '../src/errors.js';
import { formatIssues, LENS_NAME_PATTERN } from '../src/lens.js';
import { TENANT_ID_PATTERN } from '../src/tenants.js';

/** Default queue name (`LENSFLEET_QUEUE` overrides it). */
export const DEFAULT_QUEUE_NAME = 'lens-queries';

/** Largest job data accepted by default (serialised JSON bytes). */
export const DEFAULT_MAX_PAYLOAD_BYTES = 65_536;

export const jobDataV1 = z
  .object({
    v: z.literal(1, { error: 'v must be 1 (the job data version)' }),
    tenant: z.string().regex(TENANT_ID_PATTERN, `tenant must match ${TENANT_ID_PATTERN.source}`),
    lens: z.string().max(128).regex(LENS_NAME_PATTERN, `lens must match ${LENS_NAME_PATTERN.source}`),
    params: z.record(z.string(), z.unknown()).default({}),
    auth: z.object({ jwt: z.string().min(1).max(16_384) }).strict().optional(),
  })
  .strict();

export type LensJobData = z.infer<typeof jobDataV1>;

/** What a producer passes: the job data without the version. */
export interface LensRequest {
  readonly tenant: string;
  readonly lens: string;
  readonly params?: Record<string, unknown>;
  readonly auth?: { readonly jwt: string };
}

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
  const size = jsonSize(raw);
  if (size > maxPayloadBytes) {
    throw new LensfleetError('PAYLOAD_TOO_LARGE', `job data is ${size} bytes, more than the limit of ${maxPayloadBytes} (LENSFLEET_MAX_PAYLOAD_BYTES); send ids, not documents`);
  }
  const r = jobDataV1.safeParse(raw);
  if (!r.success) throw new LensfleetError('INVALID_JOB', `job data is invalid: ${formatIssues(r.error)}`);
  return r.data;
}

function jsonSize(value: unknown): number {
  try {
    return Buffer.byteLength(JSON.stringify(value) ?? '', 'utf8');
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}

/**
 * Default job options: retries with exponential backoff for transient faults (validation
 * failures are never retried, see errors.ts), and bounded history so Redis does not grow
 * without limit.
 */
export const DEFAULT_JOB_OPTIONS: DefaultJobOptions = Object.freeze({
  attempts: 5,
  backoff: { type: 'exponential', delay: 500 },
  removeOnComplete: { age: 3600, count: 10_000 },
  removeOnFail: { age: 7 * 24 * 3600, count: 10_000 },
});

/**
 * Identifiers and limits shared by the job contract (`queues/`) and the worker library: the one
 * module producers and workers both read, so neither pulls in the other's code.
 */

/** Tenant ids are case-sensitive and used as the environment prefix as written. */
export const TENANT_ID_PATTERN = /^[A-Za-z0-9_]{1,64}$/;

/** Lens names: dotted lowercase words, e.g. `work_orders.open`. */
export const LENS_NAME_PATTERN = /^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$/;
export const LENS_NAME_MAX_LENGTH = 128;

/** Longest user JWT a job may carry (characters). */
export const JWT_MAX_LENGTH = 16_384;

/** Default queue name (`LENSFLEET_QUEUE` overrides it). */
export const DEFAULT_QUEUE_NAME = 'lens-queries';

/** Largest job data accepted by default (serialised JSON bytes; `LENSFLEET_MAX_PAYLOAD_BYTES`). */
export const DEFAULT_MAX_PAYLOAD_BYTES = 65_536;

/** Whether `name` is a valid lens name. */
export function isLensName(name: string): boolean {
  return name.length <= LENS_NAME_MAX_LENGTH && LENS_NAME_PATTERN.test(name);
}

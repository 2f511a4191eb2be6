import { createHash } from 'node:crypto';
import { inspect } from 'node:util';

const REDACTED = '[REDACTED]';

/**
 * A value that must never be printed: connection strings, service keys, JWTs.
 *
 * Serialising it (JSON, template strings, util.inspect, pino) yields `[REDACTED]`; only
 * `reveal()` returns the value, and only code that hands it to a driver calls that.
 */
export class Secret {
  readonly #value: string;

  constructor(value: string) {
    this.#value = value;
  }

  reveal(): string {
    return this.#value;
  }

  toJSON(): string {
    return REDACTED;
  }

  toString(): string {
    return REDACTED;
  }

  [inspect.custom](): string {
    return REDACTED;
  }
}

/**
 * A digest of values that may contain secrets (a connection string, a service key), for telling
 * two configurations apart without keeping the secrets in a string: SHA-256 of their JSON.
 */
export function fingerprintOf(...parts: unknown[]): string {
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex');
}

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

/** Replace every occurrence of each secret in `text` (for messages built from third-party errors). */
export function scrub(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets) if (s.length >= 4) out = out.split(s).join(REDACTED);
  return out;
}

/**
 * pino JSON logs. Secrets are kept out twice: secret values are `Secret` objects that serialise
 * as `[REDACTED]`, and these redaction paths catch the usual field names if a raw value slips in.
 */
import pino, { type Logger } from 'pino';

export const REDACT_PATHS = [
  'password',
  '*.password',
  'connectionString',
  '*.connectionString',
  'databaseUrl',
  '*.databaseUrl',
  'serviceKey',
  '*.serviceKey',
  'supabaseServiceKey',
  '*.supabaseServiceKey',
  'jwt',
  '*.jwt',
  'auth',
  '*.auth',
  'data.auth',
  'job.data.auth',
  'authorization',
  '*.authorization',
  'headers.authorization',
  'REDIS_URL',
  'redisUrl',
  '*.redisUrl',
];

export interface LoggerOptions {
  level?: string;
  /** Where to write; defaults to stdout. */
  destination?: pino.DestinationStream;
  /** Pretty output is only for humans who ask for it (LOG_PRETTY=1); never in production. */
  name?: string;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  return pino(
    {
      name: opts.name ?? 'lensfleet',
      level: opts.level ?? 'info',
      redact: { paths: REDACT_PATHS, censor: '[REDACTED]' },
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    opts.destination ?? pino.destination({ sync: false }),
  );
}

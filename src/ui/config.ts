/**
 * The queue UI's configuration, read once from the environment: its own table (UI_SETTINGS) plus
 * the worker's rows for Redis, the queue name and the log level, so the UI shows the very queue
 * the workers take jobs from (same name, same key prefix, same Redis: standalone, Cluster or
 * Sentinel).
 */
import { isIP } from 'node:net';
import { type Env, type LOG_LEVELS, loadRedisSettings, PROCESS_SETTINGS } from '../config.js';
import { LensfleetError } from '../errors.js';
import type { RedisSettings } from '../redis.js';
import type { Secret } from '../secret.js';
import { readSettings } from '../settings.js';
import { UI_SETTINGS } from './settings.js';

export interface UiConfig {
  readonly redis: RedisSettings;
  /** The lens queue. @defaultValue lens-queries */
  readonly queueName: string;
  /** Asked of every request (but `/health`); undefined only on a loopback address. */
  readonly token: Secret | undefined;
  /** Retry and remove are served. @defaultValue false */
  readonly readWrite: boolean;
  /** @defaultValue 9465 */
  readonly port: number;
  /** @defaultValue 0.0.0.0 */
  readonly host: string;
  readonly logLevel: (typeof LOG_LEVELS)[number];
}

const UI_PROCESS_SETTINGS = { queueName: PROCESS_SETTINGS.queueName, logLevel: PROCESS_SETTINGS.logLevel };

/**
 * Parse the UI's settings. Throws `INVALID_CONFIG` naming the setting, and refuses the two ways
 * of serving an open UI: no token on a reachable address, and no token with read-write (on
 * loopback too: any local process, or a page the operator's browser opens, could then retry or
 * remove jobs).
 */
export function loadUiConfig(env: Env = process.env): UiConfig {
  const ui = readSettings(UI_SETTINGS, env);
  const proc = readSettings(UI_PROCESS_SETTINGS, env);
  const redis = loadRedisSettings(env);
  if (ui.token === undefined && ui.readWrite) {
    throw new LensfleetError(
      'INVALID_CONFIG',
      'LENSFLEET_UI_READ_WRITE is on but LENSFLEET_UI_TOKEN is not set: a UI that retries and removes jobs needs a token',
    );
  }
  if (ui.token === undefined && !isLoopbackHost(ui.host)) {
    throw new LensfleetError(
      'INVALID_CONFIG',
      `LENSFLEET_UI_TOKEN is not set and LENSFLEET_UI_HOST=${ui.host} is reachable from other machines: set LENSFLEET_UI_TOKEN (16+ characters; or LENSFLEET_UI_TOKEN_FILE), or LENSFLEET_UI_HOST=127.0.0.1 for local use`,
    );
  }
  return Object.freeze({ redis, ...proc, ...ui });
}

/** A loopback address (the only ones a UI without a token may listen on); `localhost` too. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  return h === '::1' || h.startsWith('::ffff:127.');
}

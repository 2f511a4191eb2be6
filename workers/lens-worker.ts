#!/usr/bin/env node
/**
 * Worker process entry point (Procfile: `worker: node dist/workers/lens-worker.js`).
 * Configured only by environment variables (see README).
 *
 * Exit codes: 0 after a drain (SIGTERM/SIGINT: stop taking jobs, finish active ones, close pools);
 * 78 (EX_CONFIG) when the configuration is invalid, with a message naming the setting; 1 when
 * start-up or shutdown failed otherwise, or on a second signal (exit at once; unfinished jobs are
 * retried by another worker).
 *
 * Signal handlers are installed first, before the worker's modules load: a SIGHUP (reload) or a
 * SIGTERM that arrives during start-up must not kill the process with the default action. Only
 * node built-ins and the dependency-free error module are imported statically for that reason.
 */
import type { Logger } from 'pino';
import { LensfleetError } from '../src/errors.js';
import type { StartedWorker } from './bootstrap.js';

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
/** sysexits.h EX_CONFIG: a configuration error; restarting with the same settings will not help. */
export const EXIT_CONFIG = 78;

type Phase = 'loading' | 'starting' | 'running' | 'stopping' | 'exiting';

let phase: Phase = 'loading';
let logger: Logger | undefined;
let started: StartedWorker | undefined;
let stopSignals = 0;
let stopWhenStarted: NodeJS.Signals | undefined;

/** Log through pino once it exists; before that (modules still loading), one JSON line on stdout. */
function log(level: 'info' | 'warn' | 'error' | 'fatal', fields: Record<string, unknown>, msg: string): void {
  if (logger) logger[level](fields, msg);
  else process.stdout.write(`${JSON.stringify({ level, time: new Date().toISOString(), pid: process.pid, name: 'lensfleet', ...fields, msg })}\n`);
}

/** Flush the log, then exit. The fallback timer is not unref'd: it must fire if the flush never calls back. */
function exit(code: number): void {
  phase = 'exiting';
  process.exitCode = code;
  const done = () => process.exit(code);
  setTimeout(done, 2000);
  if (logger) logger.flush(() => done());
  else done();
}

function onStopSignal(signal: NodeJS.Signals): void {
  stopSignals++;
  if (stopSignals > 1 || phase === 'exiting') {
    log('warn', { signal }, 'second signal: exiting now (active jobs will be retried elsewhere)');
    exit(EXIT_FAILURE);
    return;
  }
  if (phase !== 'running') {
    stopWhenStarted = signal;
    log('info', { signal, phase }, 'signal during start-up: stopping as soon as the worker has started (a second signal exits at once)');
    return;
  }
  stop(signal);
}

function stop(signal: NodeJS.Signals): void {
  phase = 'stopping';
  log('info', { signal }, 'shutting down');
  started!.service.close().then(
    () => exit(EXIT_OK),
    (err: unknown) => {
      log('error', { err }, 'shutdown failed');
      exit(EXIT_FAILURE);
    },
  );
}

function onReloadSignal(): void {
  if (phase !== 'running') {
    log('warn', { signal: 'SIGHUP', phase }, 'SIGHUP ignored: the worker is not running (still starting or stopping); send it again once it is');
    return;
  }
  started!.reload().catch((err: unknown) => {
    if (err instanceof LensfleetError && err.code === 'INVALID_CONFIG')
      log('error', { code: err.code }, `reload rejected, keeping the current tenants: ${err.message}`);
    else log('error', { msg: (err as Error).message }, 'reload: warming pools failed');
  });
}

process.on('SIGTERM', onStopSignal);
process.on('SIGINT', onStopSignal);
process.on('SIGHUP', onReloadSignal);
process.on('unhandledRejection', (reason) => log('error', { err: reason }, 'unhandled rejection (kept running)'));

async function main(): Promise<void> {
  const boot = await import('./bootstrap.js');
  logger = boot.createProcessLogger();
  phase = 'starting';
  logger.info({ node: process.version }, 'worker starting');
  try {
    started = await boot.startFromEnvironment(process.env, logger);
  } catch (err) {
    const configError = err instanceof LensfleetError && err.code === 'INVALID_CONFIG';
    log('fatal', { code: (err as LensfleetError).code }, `worker failed to start: ${(err as Error).message}`);
    exit(configError ? EXIT_CONFIG : EXIT_FAILURE);
    return;
  }
  if (phase !== 'starting') return; // a second signal is already exiting
  phase = 'running';
  if (stopWhenStarted) stop(stopWhenStarted);
}

main().catch((err: unknown) => {
  // (an Error's own fields are not enumerable: logged as {} it would say nothing)
  log(
    'fatal',
    { code: (err as { code?: unknown } | null)?.code },
    `worker failed to start: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`,
  );
  exit(EXIT_FAILURE);
});

#!/usr/bin/env node
/**
 * The queue UI process (Procfile: `ui: node dist/cli/ui.js`; also `lensfleet ui`): bull-board for
 * the lens queue (src/ui/), configured only by environment variables (README, “Queue UI”).
 *
 * Exit codes, as the worker's: 0 after SIGTERM/SIGINT; 78 (EX_CONFIG) when the configuration is
 * invalid, with a message naming the setting (no token on a reachable address, read-write without
 * a token…); 1 when start-up failed otherwise (the port is taken…); 2 for bad usage.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { LensfleetError } from '../src/errors.js';
import { createLogger } from '../src/logger.js';
import { loadUiConfig } from '../src/ui/config.js';
import { startUiServer, type UiServer } from '../src/ui/server.js';

export const UI_EXIT = { OK: 0, FAILURE: 1, USAGE: 2, CONFIG: 78 } as const;

export const UI_USAGE = `usage: lensfleet ui        (or: node dist/cli/ui.js)

Serves bull-board for the lens queue (LENSFLEET_QUEUE on the workers' Redis) on
http://$LENSFLEET_UI_HOST:$PORT/ (default 0.0.0.0:9465). Open /?token=<LENSFLEET_UI_TOKEN> once in a
browser (it sets a session cookie), or send Authorization: Bearer <LENSFLEET_UI_TOKEN>.
environment:
  LENSFLEET_UI_TOKEN (or LENSFLEET_UI_TOKEN_FILE)  required unless LENSFLEET_UI_HOST is loopback
  LENSFLEET_UI_READ_WRITE=on                       retry and remove jobs (default: read-only)
  LENSFLEET_UI_HOST, PORT / LENSFLEET_UI_PORT      bind address and port
  REDIS_URL or LENSFLEET_REDIS_*, LENSFLEET_QUEUE  as the worker
exit codes: 0 stopped by SIGTERM/SIGINT, 1 start-up failed, 2 bad usage, 78 invalid setting`;

/** Run the UI until SIGTERM/SIGINT; resolves with the exit code. */
export async function uiCommand(args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    console.log(UI_USAGE);
    return UI_EXIT.OK;
  }
  if (args.length > 0) {
    console.error(`unexpected arguments: ${args.join(' ')} (the UI is configured by environment variables)\n${UI_USAGE}`);
    return UI_EXIT.USAGE;
  }
  // Listening before start-up: a SIGTERM while it connects stops it once started, not by the default action.
  const stopSignal = new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  let logger: Logger = createLogger({ level: 'info' });
  let server: UiServer;
  try {
    const config = loadUiConfig(env);
    logger = createLogger({ level: config.logLevel });
    server = await startUiServer(config, logger);
  } catch (err) {
    const configError = err instanceof LensfleetError && err.code === 'INVALID_CONFIG';
    logger.fatal({ code: configError ? err.code : (err as { code?: unknown }).code }, `queue UI failed to start: ${(err as Error).message}`);
    return configError ? UI_EXIT.CONFIG : UI_EXIT.FAILURE;
  }
  const signal = await stopSignal;
  logger.info({ signal }, 'queue UI stopping');
  await server.close();
  return UI_EXIT.OK;
}

const isMain = process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  uiCommand(process.argv.slice(2), process.env).then(
    (code) => {
      // Whatever still holds the event loop (a Redis reconnect timer) must not keep a stopped UI alive.
      process.exitCode = code;
      setTimeout(() => process.exit(code), 1000).unref();
    },
    (err: unknown) => {
      console.error(err);
      process.exit(UI_EXIT.FAILURE);
    },
  );
}

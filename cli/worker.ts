/**
 * `lensfleet worker`: the worker process itself, the same as `node dist/workers/lens-worker.js`
 * (the Procfile's `worker:`). The entry point is imported in this process, not spawned: its
 * signal handlers, exit codes and logs are the worker's own, with no second process between a
 * supervisor's signal and the drain. Nothing heavy is imported before it (the entry point
 * installs its signal handlers before it loads BullMQ, pg…).
 */

export const WORKER_USAGE = `usage: lensfleet worker

Runs a worker process in the foreground, exactly as \`node dist/workers/lens-worker.js\` (the
Procfile's worker: process): it takes lens queries from the queue and runs them against the
tenants' databases, serving /metrics /health /ready /pools on PORT. Configured only by the
environment: REDIS_URL, LENSFLEET_TENANTS with <ID>_DATABASE_URL (or <ID>_SUPABASE_URL and
<ID>_SUPABASE_SERVICE_KEY), LENSFLEET_TENANTS_FILE, LENSFLEET_CONCURRENCY, LENSFLEET_POOL_*,
LENSFLEET_LENS_MODULES, PORT, LOG_LEVEL… (every setting, with its default: README "Configuration").
Logs are JSON lines on stdout.

signals: SIGTERM or SIGINT drains (no new jobs, active ones finish, pools close), a second one
exits at once; SIGHUP re-reads the tenants.
exit codes: 0 drained after SIGTERM/SIGINT, 1 start-up or shutdown failed otherwise (or a second
signal), 78 the configuration is invalid (the message names the setting)`;

/** Exit 2: `worker` takes no arguments (settings are environment variables). */
const EXIT_USAGE = 2;

export async function workerCommand(argv: readonly string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(WORKER_USAGE);
    return 0;
  }
  if (argv.length > 0) {
    console.error(`lensfleet worker takes no arguments (it is configured by the environment), got ${argv.join(' ')}\n\n${WORKER_USAGE}`);
    return EXIT_USAGE;
  }
  await import('../workers/lens-worker.js');
  // The worker ends the process itself (process.exit with its own code): never resolve.
  return new Promise<number>(() => {});
}

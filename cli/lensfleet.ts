#!/usr/bin/env node
/**
 * `lensfleet` command line: one dispatcher, a module per command (each with its own usage text,
 * `--help` and exit codes). Command modules are imported only when their command runs: `worker`
 * must install its signal handlers before BullMQ and pg load, and `--help` should not load them.
 *
 *   lensfleet worker                                     (cli/worker.ts: the worker's exit codes)
 *   lensfleet enqueue --tenant T --lens L [--params '{…}'] [--wait]            (cli/enqueue.ts)
 *   lensfleet lenses [--json]                                                  (cli/lenses.ts)
 *   lensfleet tenants check [--json]                                           (cli/tenants.ts)
 *   lensfleet queue [retry|remove --code C [--dry-run]] [--json]               (cli/queue.ts)
 *   lensfleet status [--fleet F] [--json]                                      (cli/status.ts)
 *   lensfleet plan (--workers N [--concurrency C] | --live) [--json]           (cli/plan.ts)
 *   lensfleet ui                                                               (cli/ui.ts)
 *   lensfleet procfile [--scale worker=3]                                      (cli/procfile.ts)
 *
 * Exit codes of the dispatcher itself: 0 help, 2 no or an unknown command.
 */
import type { Env } from '../src/settings.js';

type Run = (argv: readonly string[], env: Env) => Promise<number>;

interface Command {
  /** How it is called, for the overview. */
  readonly synopsis: string;
  readonly summary: string;
  readonly load: () => Promise<Run>;
}

/** Every command, in the order the overview lists them. */
export const COMMANDS: Readonly<Record<string, Command>> = {
  worker: {
    synopsis: 'worker',
    summary: 'run a worker process (as node dist/workers/lens-worker.js)',
    load: async () => (await import('./worker.js')).workerCommand,
  },
  enqueue: {
    synopsis: "enqueue --tenant <id> --lens <name> [--params '<json>'] [--wait]",
    summary: 'add a lens query (and wait for its result)',
    load: async () => (await import('./enqueue.js')).enqueueCommand,
  },
  lenses: {
    synopsis: 'lenses [--json]',
    summary: 'the lens catalog a worker would load, with each lens’s params schema',
    load: async () => (await import('./lenses.js')).lensesCommand,
  },
  tenants: {
    synopsis: 'tenants check [--tenant <id>]… [--json]',
    summary: 'connect to each tenant: version, max_connections, connections, TLS, latency, auth',
    load: async () => (await import('./tenants.js')).tenantsCommand,
  },
  queue: {
    synopsis: 'queue [retry|remove --code <CODE> [--dry-run]] [--json]',
    summary: 'job counts, failed jobs by error code; retry or remove them by code',
    load: async () => (await import('./queue.js')).queueCommand,
  },
  status: {
    synopsis: 'status [--fleet <name>] [--json]',
    summary: 'the live fleet: workers, queues, connections per tenant',
    load: async () => (await import('./status.js')).statusCommand,
  },
  plan: {
    synopsis: 'plan (--workers <n> [--concurrency <c>] | --live) [--json]',
    summary: 'could the fleet overrun a tenant’s database?',
    load: async () => (await import('./plan.js')).planCommand,
  },
  ui: {
    synopsis: 'ui',
    summary: 'serve the queue UI (bull-board; read-only unless enabled, behind a token)',
    load: async () => (await import('./ui.js')).uiCommand as Run,
  },
  procfile: {
    synopsis: 'procfile [--procfile <path>] [--scale <type>=<n>]',
    summary: 'run the Procfile’s processes here (as foreman does)',
    load: async () => (await import('./procfile.js')).procfileCommand as Run,
  },
};

export const EXIT_OK = 0;
/** No command, or an unknown one. */
export const EXIT_USAGE = 2;

async function usage(): Promise<string> {
  // The settings table gives the defaults: loaded only when the overview is printed.
  const { QUEUE_ENVIRONMENT } = await import('./enqueue.js');
  return `usage: lensfleet <command> [options]

commands:
${Object.values(COMMANDS)
  .map((c) => `  lensfleet ${c.synopsis}\n      ${c.summary}`)
  .join('\n')}
  lensfleet <command> --help
      its options, environment and exit codes

environment (as the worker reads it; every setting: README "Configuration"):
${QUEUE_ENVIRONMENT}
exit codes: each command documents its own (--help); 0 done, 1 failed, 2 bad usage throughout,
78 an invalid configuration where the worker's configuration is loaded (worker, lenses, tenants)`;
}

async function main(argv: readonly string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    const text = await usage();
    if (name === undefined) {
      console.error(text);
      return EXIT_USAGE;
    }
    console.log(text);
    return EXIT_OK;
  }
  const command = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (command === undefined) {
    console.error(`unknown command "${name}"\n${await usage()}`);
    return EXIT_USAGE;
  }
  return (await command.load())(rest, process.env);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);

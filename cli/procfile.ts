/**
 * `lensfleet procfile`: run the Procfile's processes on this machine, as foreman or honcho would —
 * each process type scaled to N instances, every output line prefixed with its instance, PORT set
 * per instance (base + 100 × type + instance, foreman's numbering), SIGTERM/SIGINT passed on to
 * every instance (workers drain), and the exit once every instance has exited. An instance that
 * dies is reported and not restarted (that is a supervisor's job: compose, Kubernetes, systemd);
 * the others keep running.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseCommandArgs } from './args.js';

export const PROCFILE_EXIT = {
  /** Every instance exited 0. */
  OK: 0,
  /** Some instance exited non-zero or was killed by a signal. */
  FAILED: 1,
  /** Bad usage, or a Procfile that cannot be read or names no such type. */
  USAGE: 2,
} as const;

export const PROCFILE_USAGE = `usage: lensfleet procfile [--procfile <path>] [--scale <type>=<n>[,<type>=<n>…]]

Runs every process type of the Procfile (default ./Procfile), each --scale times (default 1):
output prefixed with the instance (worker.1 | …), PORT = base + 100 × type index + instance
(base: PORT, else 5000; PORT=0: each picks a free one), SIGTERM or SIGINT passed on to every instance. An instance that exits is
reported and not restarted; the command ends when every instance has ended.
exit codes: 0 every instance exited 0 (or ended on the signal passed on), 1 one exited non-zero or was
killed otherwise, 2 bad usage or Procfile`;

export interface ProcessType {
  readonly name: string;
  readonly command: string;
}

/** `name: command` lines; blank lines and # comments skipped. Throws on a malformed line. */
export function parseProcfile(text: string): ProcessType[] {
  const types: ProcessType[] = [];
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([A-Za-z0-9_-]+):\s*(.+)$/.exec(line);
    if (m === null) throw new Error(`line ${i + 1}: expected "<type>: <command>", got ${JSON.stringify(line.slice(0, 80))}`);
    types.push({ name: m[1]!, command: m[2]! });
  }
  if (types.length === 0) throw new Error('no process types in it');
  return types;
}

export async function procfileCommand(args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const parsed = parseCommandArgs<{ procfile: string; scale?: string }>(
    args,
    { procfile: { type: 'string', default: 'Procfile' }, scale: { type: 'string' } },
    PROCFILE_USAGE,
  );
  if ('exit' in parsed) return parsed.exit;
  const { values } = parsed;
  let types: ProcessType[];
  try {
    types = parseProcfile(readFileSync(values.procfile, 'utf8'));
  } catch (err) {
    console.error(`${values.procfile}: ${(err as Error).message}`);
    return PROCFILE_EXIT.USAGE;
  }
  const scale = new Map<string, number>();
  for (const part of (values.scale ?? '').split(',').filter(Boolean)) {
    const m = /^([A-Za-z0-9_-]+)=(\d{1,3})$/.exec(part.trim());
    if (m === null || !types.some((t) => t.name === m[1])) {
      console.error(`--scale: expected <type>=<n> for a type of ${values.procfile} (${types.map((t) => t.name).join(', ')}), got "${part}"`);
      return PROCFILE_EXIT.USAGE;
    }
    scale.set(m[1]!, Number(m[2]));
  }
  // PORT=0: every instance picks a free port of its own (tests).
  const anyPort = env.PORT === '0';
  const base = Number.parseInt(env.PORT ?? '', 10) || 5000;
  const instances: { label: string; child: ChildProcess; exited: Promise<number | NodeJS.Signals> }[] = [];
  for (const [t, type] of types.entries()) {
    for (let i = 1; i <= (scale.get(type.name) ?? 1); i++) {
      const label = `${type.name}.${i}`;
      // A simple command is exec'd (the shell becomes the process: its pid is the instance's); each
      // instance has its own process group, so a signal passed on reaches a compound command's
      // children too.
      const command = /[;&|<>()`\n]/.test(type.command) ? type.command : `exec ${type.command}`;
      const child = spawn('sh', ['-c', command], {
        env: { ...env, PORT: anyPort ? '0' : String(base + 100 * t + i - 1) },
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true,
      });
      for (const stream of [child.stdout!, child.stderr!])
        createInterface({ input: stream }).on('line', (line) => process.stdout.write(`${label} | ${line}\n`));
      const exited = new Promise<number | NodeJS.Signals>((resolve) =>
        child.on('exit', (code, signal) => {
          console.log(`${label} exited ${signal === null ? `with code ${code}` : `on ${signal}`}`);
          resolve(signal ?? code ?? 1);
        }),
      );
      console.log(`${label} started (pid ${child.pid}): ${type.command}`);
      instances.push({ label, child, exited });
    }
  }
  // An instance ended by the signal passed on to it stopped as asked: that is no failure.
  let forwarded: NodeJS.Signals | undefined;
  const forward = (signal: NodeJS.Signals) => () => {
    forwarded = signal;
    for (const { child } of instances) {
      if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) continue;
      try {
        process.kill(-child.pid, signal);
      } catch {
        /* already gone */
      }
    }
  };
  process.on('SIGTERM', forward('SIGTERM'));
  process.on('SIGINT', forward('SIGINT'));
  const results = await Promise.all(instances.map((x) => x.exited));
  return results.every((r) => r === 0 || (forwarded !== undefined && r === forwarded)) ? PROCFILE_EXIT.OK : PROCFILE_EXIT.FAILED;
}

/**
 * Running the project's processes from tests (the CLI, the worker, the UI, the demo), with their
 * output captured: one place for what every process test needs.
 */
import { spawn, type ChildProcess } from 'node:child_process';

/**
 * Under mutation testing (`npm run test:mutation`), the mutant active in this test process, for a
 * child process's instrumented code (StrykerJS's instrumented modules read this variable when
 * they load): without it a worker process would always run the original code. Empty otherwise.
 */
export function activeMutantEnv(): Record<string, string> {
  const id = (globalThis as { __stryker__?: { activeMutant?: unknown } }).__stryker__?.activeMutant;
  return id === undefined || id === null ? {} : { __STRYKER_ACTIVE_MUTANT__: String(id) };
}

export interface Ran {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** stdout and stderr together, in arrival order */
  output: string;
  ms: number;
}

export interface Captured {
  readonly proc: ChildProcess;
  /** stdout and stderr together so far */
  output(): string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `command args` with only PATH and `env` in its environment (plus a mutation run's), its output captured. */
export function spawnCaptured(command: string, args: readonly string[], env: Record<string, string>): Captured & { stdout(): string; stderr(): string } {
  const proc = spawn(command, args, { env: { PATH: process.env.PATH ?? '', ...activeMutantEnv(), ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let output = '';
  proc.stdout!.on('data', (d: Buffer) => {
    stdout += d.toString();
    output += d.toString();
  });
  proc.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
    output += d.toString();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    // 'exit' can precede the last 'data' events of the pipes
    proc.on('exit', (code, signal) => setImmediate(() => resolve({ code, signal }))),
  );
  return { proc, exited, output: () => output, stdout: () => stdout, stderr: () => stderr };
}

/** Run `command args` to its end; rejects (after SIGKILL) when it still runs after `timeoutMs`. */
export function runToExit(command: string, args: readonly string[], env: Record<string, string>, timeoutMs = 30_000): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const c = spawnCaptured(command, args, env);
    const timer = setTimeout(() => {
      c.proc.kill('SIGKILL');
      reject(new Error(`${command} ${args.join(' ')} still running after ${timeoutMs} ms: ${c.output().slice(-2000)}`));
    }, timeoutMs);
    c.proc.on('error', reject);
    void c.exited.then(({ code, signal }) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: c.stdout(), stderr: c.stderr(), output: c.output(), ms: Date.now() - t0 });
    });
  });
}

/** Run a Node.js script (`node args`) to its end; as runToExit. */
export const runNode = (args: readonly string[], env: Record<string, string>, timeoutMs?: number): Promise<Ran> =>
  runToExit(process.execPath, args, env, timeoutMs);

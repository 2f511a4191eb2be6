/**
 * `npm run demo -- --keep` (scripts/demo.ts): the demo runs on servers of its own (a local Redis
 * and Postgres, as a first-time user gets), ends by saying where to look next, and leaves
 * everything running: the worker answers, the settings file it writes lets the CLI see the demo's
 * queue and tenants, and the exact stop command it prints stops it all (workers drained, servers
 * stopped, the settings file gone), exit 0. Slow: it starts its own servers.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT, waitFor } from './support/harness.js';
import { runToExit } from './support/process.js';

const DEMO = path.join(ROOT, 'dist/scripts/demo.js');
const CLI = path.join(ROOT, 'dist/cli/lensfleet.js');

/** The demo and the CLI run to their end (the test's own timeout bounds them). */
const run = (command: string, args: string[], env: Record<string, string>) => runToExit(command, args, env, 600_000);

function readEnvFile(file: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of readFileSync(file, 'utf8').split('\n').filter(Boolean)) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)='(.*)'$/.exec(line);
    expect(m, line.replace(/=.*/, '=…')).not.toBeNull();
    env[m![1]!] = m![2]!.split(`'\\''`).join("'");
  }
  return env;
}

describe('npm run demo -- --keep', () => {
  let demo: ReturnType<typeof spawn> | undefined;
  afterAll(async () => {
    if (demo && demo.exitCode === null && demo.signalCode === null) {
      const exited = new Promise((resolve) => demo!.on('exit', resolve));
      demo.kill('SIGTERM');
      const timer = setTimeout(() => demo!.kill('SIGKILL'), 60_000);
      await exited;
      clearTimeout(timer);
    }
  }, 90_000);

  it('leaves the worker running, prints where to look next and the command that stops everything; that command stops it all, exit 0', async () => {
    demo = spawn(process.execPath, [DEMO, '--keep', '--jobs', '40', '--workers', '1', '--tenants', '1', '--concurrency', '4'], {
      env: { PATH: process.env.PATH ?? '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    demo.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    demo.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => demo!.on('exit', (code) => resolve(code)));

    await waitFor(
      'the demo to print its stop command',
      () => {
        if (demo!.exitCode !== null) throw new Error(`the demo exited with ${demo!.exitCode}: ${out.slice(-3000)}`);
        return /^ {4}kill -TERM \d+$/m.test(out);
      },
      240_000,
      200,
    );
    expect(out).toContain('completed 40, failed 0');
    // Where to look next: the UI, the dashboard files, the runbook.
    expect(out).toMatch(/where to look next[\s\S]*ui:[\s\S]*deploy\/grafana\/dashboards\/lensfleet\.json[\s\S]*docs\/RUNBOOK\.md/);
    const stop = /^ {4}(kill -TERM (\d+))$/m.exec(out)!;
    expect(Number(stop[2])).toBe(demo.pid);
    const workerPort = Number(/worker pid \d+: http:\/\/127\.0\.0\.1:(\d+)\/metrics/.exec(out)![1]);
    const envFile = /readable by you only\): (\S+)/.exec(out)![1]!;

    // Still running after the demo's own work: the worker answers, and the CLI sees the demo.
    expect((await fetch(`http://127.0.0.1:${workerPort}/ready`)).status).toBe(200);
    expect(demo.exitCode).toBeNull();
    expect(statSync(envFile).mode & 0o077).toBe(0);
    const env = readEnvFile(envFile);
    expect(env.LENSFLEET_QUEUE).toBe('lens-queries-demo');
    const queue = await run(process.execPath, [CLI, 'queue', '--json'], env);
    expect(queue.code, queue.output).toBe(0);
    expect((JSON.parse(queue.stdout) as { counts: { completed: number } }).counts.completed).toBeGreaterThanOrEqual(40);
    const check = await run(process.execPath, [CLI, 'tenants', 'check'], env);
    expect(check.code, check.output).toBe(0);
    expect(check.stdout).toContain('every tenant is reachable and accepted its credentials (2)');
    // The secrets stay in the file: the demo's output does not print them.
    for (const [k, v] of Object.entries(env)) if (/_DATABASE_URL$/.test(k)) expect(out).not.toContain(decodeURIComponent(new URL(v).password));

    // The printed command, as a user would run it from another shell.
    const stopped = await run('sh', ['-c', stop[1]!], {});
    expect(stopped.code).toBe(0);
    expect(await exited).toBe(0);
    expect(out).toContain('SIGTERM: stopping');
    expect(out).toContain('workers drained and exited with 0');
    expect(out).toContain('local servers stopped and temp dirs removed');
    expect(existsSync(envFile)).toBe(false);
    await expect(fetch(`http://127.0.0.1:${workerPort}/ready`)).rejects.toThrow();
  }, 300_000);
});

/**
 * `lensfleet procfile` (cli/procfile.ts), run as the real process: instances per --scale with their
 * output prefixed and their own PORT, SIGTERM passed on (an instance ended by it stopped as asked:
 * exit 0), an instance failing on its own (exit 1), bad usage and a bad Procfile (exit 2).
 * The fault ledger runs it with three real workers (test/faults.test.ts).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseProcfile } from '../cli/procfile.js';
import { ROOT, waitFor } from './support/harness.js';

const CLI = path.join(ROOT, 'dist/cli/lensfleet.js');
const dir = mkdtempSync(path.join(os.tmpdir(), 'lf-procfile-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function procfile(name: string, text: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
}

function launch(args: string[], env: Record<string, string> = {}) {
  const child = spawn(process.execPath, [CLI, 'procfile', ...args], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, exited, output: () => out };
}

describe('lensfleet procfile', () => {
  it('runs each type --scale times, output prefixed, PORT = base + 100 × type + instance; SIGTERM stops them all, exit 0', async () => {
    const file = procfile('Procfile.ok', '# two types\nweb: echo "port $PORT"; exec sleep 30\n\nworker: echo "port $PORT"; exec sleep 30\n');
    const run = launch(['--procfile', file, '--scale', 'worker=2'], { PORT: '7000' });
    await waitFor('three instances to say their port', () => (run.output().match(/\| port \d+/g) ?? []).length === 3, 15_000);
    expect(run.output()).toContain('web.1 | port 7000');
    expect(run.output()).toContain('worker.1 | port 7100');
    expect(run.output()).toContain('worker.2 | port 7101');
    run.child.kill('SIGTERM');
    expect(await run.exited).toBe(0);
    expect(run.output().match(/exited on SIGTERM/g)).toHaveLength(3);
  });

  it('an instance that fails on its own is reported, and the exit code is 1 once every instance has ended', async () => {
    const file = procfile('Procfile.bad', 'ok: true\nbad: sh -c "exit 3"\n');
    const run = launch(['--procfile', file]);
    expect(await run.exited).toBe(1);
    expect(run.output()).toContain('bad.1 exited with code 3');
    expect(run.output()).toContain('ok.1 exited with code 0');
  });

  it('exit 2: an unknown type in --scale, a missing Procfile, a malformed line; --help exits 0', async () => {
    const file = procfile('Procfile.one', 'worker: exec sleep 30\n');
    const unknown = launch(['--procfile', file, '--scale', 'nope=2']);
    expect(await unknown.exited).toBe(2);
    expect(unknown.output()).toContain('--scale: expected <type>=<n> for a type of');
    const missing = launch(['--procfile', path.join(dir, 'nowhere')]);
    expect(await missing.exited).toBe(2);
    const malformed = launch(['--procfile', procfile('Procfile.malformed', 'just a command\n')]);
    expect(await malformed.exited).toBe(2);
    expect(malformed.output()).toContain('line 1: expected "<type>: <command>"');
    const help = launch(['--help']);
    expect(await help.exited).toBe(0);
    expect(help.output()).toContain('usage: lensfleet procfile');
  });

  it('parses the repository Procfile: one worker type running the worker entry point', () => {
    expect(parseProcfile('worker: node dist/workers/lens-worker.js\n')).toEqual([{ name: 'worker', command: 'node dist/workers/lens-worker.js' }]);
  });
});

/**
 * Debian's python3, with the packages .ci/run installs (python3-redis, python3-msgpack,
 * python3-jsonschema): /usr/bin/python3 rather than the first python3 on PATH, which may be
 * another installation (pyenv, a virtualenv) without Debian's packages.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';

export const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

export interface PythonRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run python with `args`, `input` on stdin; never rejects (the exit code is the answer). */
export function python(args: readonly string[], opts: { input?: string; env?: Record<string, string>; timeoutMs?: number } = {}): Promise<PythonRun> {
  return new Promise((resolve) => {
    const child = execFile(PYTHON, [...args], { env: { ...process.env, ...opts.env }, timeout: opts.timeoutMs ?? 30_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1;
      resolve({ code, stdout, stderr });
    });
    child.stdin?.end(opts.input ?? '');
  });
}

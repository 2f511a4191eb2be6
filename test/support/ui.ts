/**
 * The queue UI as a real process (dist/cli/ui.js, as the Procfile runs it), on a free loopback
 * port of the run's Redis, for the UI tests.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { freePort } from '../../dev/local/servers.js';
import { redisUrl, ROOT, waitFor } from './harness.js';
import { spawnCaptured } from './process.js';

export const UI_ENTRY = path.join(ROOT, 'dist/cli/ui.js');
/** A token of the accepted length (16+). */
export const UI_TOKEN = 'ui-token-0123456789abcdef';

export interface UiProcess {
  readonly proc: ChildProcess;
  readonly url: string;
  output(): string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM and the exit code (SIGKILL after 10 s). */
  stop(): Promise<number | null>;
}

/** Start the UI and wait until it answers `/health`. */
export async function startUi(env: Record<string, string>): Promise<UiProcess> {
  if (!existsSync(UI_ENTRY)) throw new Error(`${UI_ENTRY} is missing: run \`npm run build\` (npm test does) first`);
  const port = await freePort();
  const { proc, output, exited } = spawnUi({ PORT: String(port), ...env });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(`the queue UI on :${port} to answer /health`, async () => {
    if (proc.exitCode !== null) throw new Error(`the UI exited with ${proc.exitCode}: ${output().slice(-2000)}`);
    return (await fetch(`${url}/health`)).status === 200;
  });
  return {
    proc,
    url,
    output,
    exited,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      const { code } = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** Run the UI with `env` until it exits by itself (a refused configuration): its exit code and output. */
export async function runUiToExit(env: Record<string, string>, timeoutMs = 30_000): Promise<{ code: number | null; output: string }> {
  const { proc, output, exited } = spawnUi(env);
  const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
  const { code } = await exited;
  clearTimeout(timer);
  return { code, output: output() };
}

function spawnUi(env: Record<string, string>) {
  return spawnCaptured(process.execPath, [UI_ENTRY], { REDIS_URL: redisUrl(), LENSFLEET_UI_HOST: '127.0.0.1', LOG_LEVEL: 'info', ...env });
}

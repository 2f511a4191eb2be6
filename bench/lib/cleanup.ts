/**
 * One cleanup list for the whole run: servers, proxies and temp dirs are registered as they
 * start and removed in reverse order on success, failure and Ctrl-C alike.
 */
import { rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

// biome-ignore lint/suspicious/noConfusingVoidType: synchronous cleanups return nothing
type Cleanup = () => Promise<unknown> | void;
const cleanups: Cleanup[] = [];
const tempDirs = new Set<string>();
let cleaning: Promise<void> | undefined;

export function onCleanup(step: Cleanup): void {
  cleanups.push(step);
}

/** A temp dir removed with everything else (and on a hard exit). */
export async function makeTempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

/** Run every cleanup (reverse order), each even if another fails, then remove the temp dirs. Idempotent. */
export function cleanupAll(): Promise<void> {
  cleaning ??= (async () => {
    for (const step of cleanups.reverse()) {
      try {
        await step();
      } catch {
        // keep cleaning
      }
    }
    for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  })();
  return cleaning;
}

// A temp dir left behind by a hard exit is removed synchronously.
process.once('exit', () => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

/**
 * Where child processes load their code from. `dist/` is shared with everyone who runs `tsc` on
 * this checkout (tests, other sessions); a rebuild in the middle of a run would make later
 * workers run different code from earlier ones. So the run first copies the compiled code to a
 * temp dir (with package.json and a node_modules link) and forks every child from that copy.
 */
import { copyFile, cp, symlink } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeTempDir } from './cleanup.js';

const DIST_BENCH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
let root = DIST_BENCH;

/** Path of a compiled bench entry point (worker-child.js, proxy-child.js, …) in the snapshot. */
export function benchScript(name: string): string {
  return path.join(root, name);
}

/** Copy dist/ (without the tests) aside and load children from the copy from now on. */
export async function snapshotCode(): Promise<string> {
  const dist = path.dirname(DIST_BENCH);
  const repo = path.dirname(dist);
  const dir = await makeTempDir('lensfleet-bench-code-');
  await cp(dist, path.join(dir, 'dist'), { recursive: true, filter: (src) => src !== path.join(dist, 'test') });
  await copyFile(path.join(repo, 'package.json'), path.join(dir, 'package.json'));
  await symlink(path.join(repo, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
  root = path.join(dir, 'dist', 'bench');
  return dir;
}

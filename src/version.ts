/**
 * This package's version, as fleet membership reports it: read from the nearest package.json
 * named `lensfleet` above this module (the same file from src/ and from dist/src/).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

export function packageVersion(): string {
  if (cached !== undefined) return cached;
  cached = 'unknown';
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    try {
      const pkg = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'lensfleet' && typeof pkg.version === 'string') {
        cached = pkg.version;
        break;
      }
    } catch {
      // not here: look further up
    }
    dir = path.dirname(dir);
  }
  return cached;
}

/**
 * Top self-time functions of a V8 CPU profile (`node --cpu-prof`), e.g. of a worker child from
 * `npm run bench -- --cpu-prof`. Usage: node dist/bench/prof-top.js <file.cpuprofile> [count] [--by-package]
 * (`--by-package` sums self time per npm package / lensfleet / node internals / native).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const byPackage = process.argv.includes('--by-package');
const [file, countArg] = process.argv.slice(2).filter((a) => a !== '--by-package');
if (!file) {
  console.error('usage: node dist/bench/prof-top.js <file.cpuprofile> [count]');
  process.exit(2);
}
const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const self = new Map<string, number>();
let total = 0;
profile.samples.forEach((id, i) => {
  const dt = profile.timeDeltas[i] ?? 0;
  const node = byId.get(id);
  if (!node) return;
  const f = node.callFrame;
  const where = f.url ? `${shorten(f.url)}:${f.lineNumber + 1}` : '';
  const key = byPackage ? packageOf(f.url, f.functionName) : `${f.functionName || '(anonymous)'} ${where}`.trim();
  self.set(key, (self.get(key) ?? 0) + dt);
  total += dt;
});

function packageOf(url: string, fn: string): string {
  if (!url) return /^\(.*\)$/.test(fn) ? fn : '(native: socket writes, crypto, …)';
  if (url.startsWith('node:')) return 'node internals';
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (m) return m[1]!;
  return /\/dist\/(src|workers|queues)\//.test(url) ? 'lensfleet' : /\/dist\/bench\//.test(url) ? 'bench harness' : shorten(url);
}

function shorten(url: string): string {
  const p = url.replace(/^file:\/\//, '');
  const nm = p.lastIndexOf('node_modules/');
  return nm >= 0 ? p.slice(nm + 'node_modules/'.length) : path.relative(process.cwd(), p);
}

const top = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, Number(countArg ?? 25));
console.log(`${(total / 1e6).toFixed(2)} s sampled`);
for (const [key, us] of top) console.log(`${((100 * us) / total).toFixed(1).padStart(5)} %  ${(us / 1000).toFixed(0).padStart(7)} ms  ${key}`);

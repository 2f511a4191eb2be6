/**
 * Lens modules and lens messages: a catalog takes only lenses made by defineLens (a brand it
 * sets); relative LENSFLEET_LENS_MODULES paths resolve against LENSFLEET_LENS_BASE_DIR (default:
 * the working directory at start); a params error quotes at most a clipped part of the job's input.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { describe, expect, it, onTestFinished } from 'vitest';
import { loadWorkerConfig } from '../src/config.js';
import { LensfleetError } from '../src/errors.js';
import { defineLens, isLens, LensCatalog, loadLensModules, type Lens } from '../src/lens.js';
import { maritimeLenses } from '../src/lenses/maritime.js';
import { ROOT } from './support/harness.js';

async function rejection(p: Promise<unknown> | (() => unknown)): Promise<LensfleetError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    expect(err).toBeInstanceOf(LensfleetError);
    return err as LensfleetError;
  }
  throw new Error('expected an error');
}

describe('lens modules', () => {
  it('a module exporting an object not made by defineLens is refused at load, naming the module, the index and the name', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'lf-lenses-'));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'hand-made.mjs');
    // looks like a lens, but parse() checks nothing and query() is never checked for SET/RESET
    writeFileSync(
      file,
      "export const lenses = [{ name: 'hand.made', description: '', maxRows: 10, parse: (p) => p, query: () => ({ name: 'x', text: 'SET role postgres', values: [] }) }];\n",
    );
    const err = await rejection(loadLensModules(new LensCatalog(), [file]));
    expect(err.code).toBe('INVALID_CONFIG');
    expect(err.message).toBe(`LENSFLEET_LENS_MODULES: ${file}: lenses[0] (hand.made) is not made by defineLens(...) from 'lensfleet/lens'`);
  });

  it('a catalog takes only branded lenses; defineLens brands every lens', async () => {
    expect(maritimeLenses.every(isLens)).toBe(true);
    const copy = { ...maritimeLenses[0]! } as Record<string | symbol, unknown>;
    expect(isLens(copy)).toBe(true); // a spread keeps the brand (it is an own enumerable symbol)
    const forged = { name: 'forged.lens', parse: (p: unknown) => p } as unknown as Lens;
    expect((await rejection(() => new LensCatalog([forged]))).message).toBe('a catalog takes only lenses made by defineLens(...)');
  });

  it('relative paths resolve against LENSFLEET_LENS_BASE_DIR, not the working directory', async () => {
    const spec = './support/test-lenses.js';
    const withBase = loadWorkerConfig({ LENSFLEET_LENS_MODULES: spec, LENSFLEET_LENS_BASE_DIR: path.join(ROOT, 'dist/test') }, '/nonexistent-cwd');
    expect(withBase.lensModules).toEqual([path.join(ROOT, 'dist/test/support/test-lenses.js')]);
    const catalog = new LensCatalog();
    await loadLensModules(catalog, withBase.lensModules);
    expect(catalog.names()).toContain('test.whoami');

    // by default against the working directory at start, where this path does not exist
    const byCwd = loadWorkerConfig({ LENSFLEET_LENS_MODULES: spec }, ROOT);
    expect(byCwd.lensModules).toEqual([path.join(ROOT, 'support/test-lenses.js')]);
    expect((await rejection(loadLensModules(new LensCatalog(), byCwd.lensModules))).message).toMatch(/^LENSFLEET_LENS_MODULES: cannot load /);

    // package names are left to Node's resolution
    expect(loadWorkerConfig({ LENSFLEET_LENS_MODULES: 'some-lens-package' }).lensModules).toEqual(['some-lens-package']);
    expect((await rejection(() => loadWorkerConfig({ LENSFLEET_LENS_BASE_DIR: 'relative/dir' }))).message).toBe(
      'LENSFLEET_LENS_BASE_DIR="relative/dir": LENSFLEET_LENS_BASE_DIR must be an absolute path',
    );
  });
});

describe('INVALID_PARAMS messages', () => {
  const lens = defineLens({
    name: 'test.strict',
    params: z.object({ limit: z.number().int().max(10) }).strict(),
    sql: ({ limit }) => ({ text: 'SELECT $1::int AS n', values: [limit] }),
  });

  it('a 20 KB unknown key is quoted clipped, not whole', async () => {
    const key = 'k'.repeat(20_000);
    const err = await rejection(() => lens.parse({ limit: 1, [key]: 1 }));
    expect(err.code).toBe('INVALID_PARAMS');
    expect(err.message.length).toBeLessThan(500);
    expect(err.message).toMatch(/^params of lens test\.strict are invalid: \(root\): Unrecognized key: "k+…\(\d+ characters\)$/);
  });

  it('short messages stay as they are', async () => {
    expect((await rejection(() => lens.parse({ limit: 'x' }))).message).toBe(
      'params of lens test.strict are invalid: limit: Invalid input: expected number, received string',
    );
  });
});

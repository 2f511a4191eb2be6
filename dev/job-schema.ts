/**
 * `npm run schema`: write the job contract's JSON Schema (queues/job-schema.ts) for the built-in
 * lenses to schema/lens-job.v1.schema.json. `--check` only compares and exits 1 when the file is
 * out of date (test/job-schema.test.ts checks the same in CI). `--lens-modules a.js,b.js --out
 * file` writes one for a catalog with your own lens modules too (as LENSFLEET_LENS_MODULES).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { JOB_SCHEMA_FILE, renderJobSchema } from '../queues/job-schema.js';
import { LensCatalog, loadLensModules } from '../src/lens.js';
import { maritimeLenses } from '../src/lenses/maritime.js';

const isMain = process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  const { values } = parseArgs({ options: { check: { type: 'boolean' }, 'lens-modules': { type: 'string' }, out: { type: 'string' } } });
  const catalog = new LensCatalog(maritimeLenses);
  const modules = values['lens-modules']?.split(',').filter(Boolean) ?? [];
  await loadLensModules(catalog, modules);
  if (modules.length > 0 && values.out === undefined) {
    console.error(`--lens-modules needs --out: ${JOB_SCHEMA_FILE} is the built-in lenses' schema`);
    process.exit(2);
  }
  const file = values.out ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..', JOB_SCHEMA_FILE);
  const next = renderJobSchema(catalog.list());
  let current: string | undefined;
  try {
    current = readFileSync(file, 'utf8');
  } catch {
    current = undefined;
  }
  if (values.check) {
    if (next !== current) {
      console.error(`${file} is out of date: run npm run schema`);
      process.exit(1);
    }
    console.log(`${file} is up to date`);
  } else if (next !== current) {
    writeFileSync(file, next);
    console.log(`${file} written`);
  } else console.log(`${file} is up to date`);
}

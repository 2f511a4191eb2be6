/**
 * The published JSON Schema of the job contract (schema/lens-job.v1.schema.json): it is what
 * `npm run schema` generates from the worker's own zod schemas (a drift fails here), and a
 * JSON Schema validator in another language (Python's jsonschema) accepts and refuses the same
 * jobs the worker does — except where the schema's descriptions say JSON Schema cannot follow.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_MAX_PAYLOAD_BYTES, parseJobData, QUEUE_PREFIX } from '../queues/contract.js';
import { JOB_SCHEMA_FILE, lensJobSchema, renderJobSchema } from '../queues/job-schema.js';
import { LensCatalog } from '../src/lens.js';
import { maritimeLenses } from '../src/lenses/maritime.js';
import { ROOT } from './support/harness.js';
import { sleepLens } from './support/test-lenses.js';
import { python } from './support/python.js';

const committed = readFileSync(path.join(ROOT, JOB_SCHEMA_FILE), 'utf8');
const catalog = new LensCatalog(maritimeLenses);

/** Whether the worker accepts `data`: the envelope, then the lens's params (an unknown lens passes the envelope). */
function workerAccepts(data: unknown): boolean {
  try {
    const job = parseJobData(data);
    if (catalog.names().includes(job.lens)) catalog.get(job.lens).parse(job.params);
    return true;
  } catch {
    return false;
  }
}

/** Python's jsonschema (Draft 2020-12) on each case: true when valid. */
async function pythonAccepts(cases: readonly unknown[]): Promise<boolean[]> {
  const code = [
    'import json, sys, jsonschema',
    'schema = json.load(open(sys.argv[1]))',
    'v = jsonschema.Draft202012Validator(schema)',
    'print(json.dumps([v.is_valid(c) for c in json.load(sys.stdin)]))',
  ].join('\n');
  const r = await python(['-c', code, path.join(ROOT, JOB_SCHEMA_FILE)], { input: JSON.stringify(cases) });
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as boolean[];
}

const ok = { v: 1, tenant: 'yTEST_YACHT_001', lens: 'receiving.recent', params: { limit: 5 } };

describe('the published job schema', () => {
  it(`${JOB_SCHEMA_FILE} is what npm run schema generates from the worker's schemas`, () => {
    expect(committed, `${JOB_SCHEMA_FILE} is out of date: run npm run schema`).toBe(renderJobSchema(maritimeLenses));
  });

  it('has one params schema per built-in lens, keyed by lens, and says how to add a job (queue, prefix, options)', () => {
    const schema = JSON.parse(committed) as {
      description: string;
      allOf: unknown[];
      $defs: Record<string, { description?: string }>;
      'x-lensfleet': Record<string, unknown>;
    };
    expect(Object.keys(schema.$defs).sort()).toEqual(catalog.names());
    expect(schema.allOf).toHaveLength(catalog.names().length);
    expect(schema['x-lensfleet']).toMatchObject({ queue: 'lens-queries', prefix: QUEUE_PREFIX, maxPayloadBytes: DEFAULT_MAX_PAYLOAD_BYTES });
    expect(schema['x-lensfleet'].jobOptions).toEqual({
      attempts: 5,
      backoff: { type: 'exponential', delay: 500 },
      removeOnComplete: { age: 3600, count: 10_000 },
      removeOnFail: { age: 604_800, count: 10_000 },
    });
    // what JSON Schema cannot say is said in the descriptions
    expect(schema.description).toContain(`LENSFLEET_MAX_PAYLOAD_BYTES (default ${DEFAULT_MAX_PAYLOAD_BYTES} bytes`);
    expect(schema.$defs['equipment.search']?.description).toContain('The worker normalises q (trim or case) before its checks');
    expect(schema.$defs['receiving.recent']?.description).not.toContain('normalises');
    // a catalog with lens modules gets their params too (npm run schema -- --lens-modules … --out …)
    expect(Object.keys(lensJobSchema([...maritimeLenses, sleepLens]).$defs as object)).toContain('test.sleep');
  });

  it('Python’s jsonschema accepts and refuses the same jobs as the worker', async () => {
    const cases: [string, unknown][] = [
      ['valid', ok],
      ['params left out (defaults)', { v: 1, tenant: 'yA', lens: 'work_orders.open' }],
      ['every param', { v: 1, tenant: 'yA', lens: 'work_orders.open', params: { priority: 'critical', limit: 200 } }],
      ['with a user token', { ...ok, auth: { jwt: 'a.b.c' } }],
      ['a lens outside the built-in catalog (a lens module): the envelope passes', { v: 1, tenant: 'yA', lens: 'crew.onboard', params: { any: 1 } }],
      ['wrong version', { ...ok, v: 2 }],
      ['version as a string', { ...ok, v: '1' }],
      ['tenant with a space', { ...ok, tenant: 'y A' }],
      ['tenant too long', { ...ok, tenant: 'y'.repeat(65) }],
      ['lens not dotted lowercase', { ...ok, lens: 'Receiving.Recent' }],
      ['an extra top-level key', { ...ok, sql: 'SELECT 1' }],
      ['params an array', { ...ok, params: [1] }],
      ['limit a string', { ...ok, params: { limit: '5' } }],
      ['limit above its maximum', { ...ok, params: { limit: 201 } }],
      ['limit not an integer', { ...ok, params: { limit: 2.5 } }],
      ['an unknown param', { ...ok, params: { limt: 5 } }],
      ['status outside its enum', { ...ok, params: { status: 'lost' } }],
      ['equipment.search without q', { v: 1, tenant: 'yA', lens: 'equipment.search', params: { limit: 5 } }],
      ['equipment.search with q', { v: 1, tenant: 'yA', lens: 'equipment.search', params: { q: 'pump' } }],
      ['empty token', { ...ok, auth: { jwt: '' } }],
      ['auth with another key', { ...ok, auth: { jwt: 'x', role: 'admin' } }],
    ];
    const py = await pythonAccepts(cases.map(([, c]) => c));
    const disagree = cases.filter(([, c], i) => py[i] !== workerAccepts(c)).map(([name]) => name);
    expect(disagree).toEqual([]);
    expect(py.filter(Boolean)).toHaveLength(6); // the six valid ones, as named

    // Where the schema cannot follow (and says so): a blank q passes the schema, the worker trims
    // it and refuses; job data over the byte limit passes the schema, the worker refuses it.
    const gaps = [
      { v: 1, tenant: 'yA', lens: 'equipment.search', params: { q: '   ' } },
      { ...ok, lens: 'big.lens', params: { blob: 'x'.repeat(DEFAULT_MAX_PAYLOAD_BYTES) } },
    ];
    expect(await pythonAccepts(gaps)).toEqual([true, true]);
    expect(gaps.map(workerAccepts)).toEqual([false, false]);
  });
});

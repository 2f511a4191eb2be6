/**
 * A lens module for the benchmarks (loaded by the worker child through LENSFLEET_LENS_MODULES, as
 * an operator's own module would be): `bench.sleep` holds its connection for `seconds`, a stand-in
 * for a slow tenant's queries (the fairness workload's flood).
 */
import { z } from 'zod';
import { defineLens } from '../../src/lens.js';

export const benchSleep = defineLens({
  name: 'bench.sleep',
  params: z.object({ seconds: z.number().min(0).max(10) }).strict(),
  sql: ({ seconds }) => ({ text: 'SELECT pg_sleep($1::float8) AS slept', values: [seconds] }),
});

export const lenses = [benchSleep];
export default lenses;

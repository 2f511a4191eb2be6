/**
 * The typed SDK, checked by the compiler: this file is in tsconfig.json's `include`, so `npm test`
 * (tsc first) fails when a wrong lens name or params type-checks again (an unused
 * `@ts-expect-error` is itself an error) or a right one stops type-checking. Vitest runs it too,
 * where the calls are never made (only their types matter).
 */
import { z } from 'zod';
import { describe, expectTypeOf, it } from 'vitest';
import { type LensBulkRequest, type LensQueue, enqueue, enqueueMany, run } from '../queues/producer.js';
import type { LensRequestOf } from '../queues/contract.js';
import { type CatalogOf, defineLens } from '../src/lens.js';
import type { MaritimeCatalog } from '../src/lenses/maritime.js';
import type { QueueEvents } from 'bullmq';

declare const typed: LensQueue<MaritimeCatalog>;
declare const untyped: LensQueue;
declare const events: QueueEvents;
const tenant = 'yTEST_YACHT_001';

// A user's own lens module, as LENSFLEET_LENS_MODULES loads it.
const myLenses = [
  defineLens({
    name: 'crew.onboard',
    params: z.object({ since: z.string(), rank: z.enum(['captain', 'officer', 'crew']).optional() }).strict(),
    sql: ({ since }) => ({ text: 'SELECT 1 WHERE $1::date IS NOT NULL', values: [since] }),
  }),
  defineLens({ name: 'crew.count', params: z.object({}).strict(), sql: () => ({ text: 'SELECT 1', values: [] }) }),
] as const;
type MyCatalog = CatalogOf<typeof myLenses>;
declare const mine: LensQueue<MyCatalog>;

describe('the typed SDK (checked by tsc)', () => {
  it('the built-in catalog maps each lens to the input of its params schema (defaults optional)', () => {
    expectTypeOf<keyof MaritimeCatalog>().toEqualTypeOf<'receiving.recent' | 'equipment.search' | 'work_orders.open'>();
    expectTypeOf<MaritimeCatalog['receiving.recent']>().toEqualTypeOf<{
      limit?: number | undefined;
      status?: 'pending' | 'received' | 'rejected' | undefined;
    }>();
    expectTypeOf<MaritimeCatalog['equipment.search']>().toEqualTypeOf<{ q: string; limit?: number | undefined }>();
    expectTypeOf<MyCatalog['crew.onboard']>().toEqualTypeOf<{ since: string; rank?: 'captain' | 'officer' | 'crew' | undefined }>();
  });

  it('right requests type-check; a wrong lens name, param name or param type does not', () => {
    const calls = () => [
      enqueue(typed, { tenant, lens: 'receiving.recent', params: { limit: 5 } }),
      enqueue(typed, { tenant, lens: 'receiving.recent' }), // every param optional: params may be left out
      run(typed, events, { tenant, lens: 'receiving.recent', params: { limit: 5 } }, { waitTimeoutMs: 1000, priority: 1 }),
      run(typed, events, { tenant, lens: 'equipment.search', params: { q: 'pump' } }, { idempotencyKey: 'k1' }),
      // @ts-expect-error unknown lens name
      enqueue(typed, { tenant, lens: 'receiving.recnet', params: { limit: 5 } }),
      // @ts-expect-error a param of the wrong type
      run(typed, events, { tenant, lens: 'receiving.recent', params: { limit: '5' } }),
      // @ts-expect-error an unknown param name
      run(typed, events, { tenant, lens: 'receiving.recent', params: { limt: 5 } }),
      // @ts-expect-error a value outside the param's enum
      enqueue(typed, { tenant, lens: 'work_orders.open', params: { priority: 'urgent' } }),
      // @ts-expect-error a required param (q) missing
      enqueue(typed, { tenant, lens: 'equipment.search', params: { limit: 5 } }),
      // @ts-expect-error params required when the lens has a required param
      enqueue(typed, { tenant, lens: 'equipment.search' }),
      // @ts-expect-error a param of another lens
      enqueue(typed, { tenant, lens: 'receiving.recent', params: { q: 'pump' } }),
    ];
    expectTypeOf(calls).toBeFunction();
  });

  it('a user catalog from its own defineLens list (CatalogOf) checks the same way', () => {
    const calls = () => [
      enqueue(mine, { tenant, lens: 'crew.onboard', params: { since: '2026-01-01', rank: 'officer' } }),
      enqueue(mine, { tenant, lens: 'crew.count' }),
      // @ts-expect-error a built-in lens is not in this catalog
      enqueue(mine, { tenant, lens: 'receiving.recent' }),
      // @ts-expect-error since is a string
      enqueue(mine, { tenant, lens: 'crew.onboard', params: { since: 20260101 } }),
    ];
    expectTypeOf(calls).toBeFunction();
  });

  it('enqueueMany checks every request, each with its own lens', () => {
    const calls = () => [
      enqueueMany(typed, [
        { tenant, lens: 'receiving.recent', params: { limit: 1 } },
        { tenant, lens: 'equipment.search', params: { q: 'pump' }, idempotencyKey: 'pump-1' },
      ]),
      enqueueMany(typed, [
        { tenant, lens: 'receiving.recent', params: { limit: 1 } },
        // @ts-expect-error equipment.search needs q
        { tenant, lens: 'equipment.search', params: { limit: 1 } },
      ]),
    ];
    expectTypeOf(calls).toBeFunction();
    expectTypeOf<LensBulkRequest<MaritimeCatalog>>().toMatchTypeOf<LensRequestOf<MaritimeCatalog>>();
  });

  it('the untyped queue takes any lens and params (the escape hatch); a typed queue passes where an untyped one is expected', () => {
    const lensFromConfig: string = 'anything.at_all';
    const calls = () => [
      enqueue(untyped, { tenant, lens: lensFromConfig, params: { whatever: [1, 2] } }),
      enqueue(typed as LensQueue, { tenant, lens: lensFromConfig }),
      // @ts-expect-error an untyped queue still wants an object of params
      enqueue(untyped, { tenant, lens: lensFromConfig, params: 'limit=5' }),
    ];
    expectTypeOf(calls).toBeFunction();
    expectTypeOf<typeof typed>().toMatchTypeOf<LensQueue>();
    expectTypeOf<typeof untyped>().not.toMatchTypeOf<LensQueue<MaritimeCatalog>>();
  });
});

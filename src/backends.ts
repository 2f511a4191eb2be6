/**
 * The backends a worker serves, composed for the pool registry: a Postgres tenant gets a
 * `TenantPool` (src/pool), a Supabase tenant a `RestTenantPool` (src/rest). The registry stays
 * generic (it knows `ManagedPool` and `PoolFactory` only); this module is the one place that
 * knows both kinds, and the job processor tells them apart by the pool's `backend`.
 */
import { pgPools, PoolRegistry, type RegistryOptions } from './pool/registry.js';
import type { TenantPool } from './pool/tenant-pool.js';
import type { PoolFactory, PoolTenant } from './pool/types.js';
import { type RestTenantPool, restPools } from './rest/pool.js';
import type { Tenant } from './tenants.js';

/** A pool of any backend this worker serves. */
export type AnyTenantPool = TenantPool | RestTenantPool;

/** The registry of a worker: pools of Postgres and Supabase tenants. */
export type TenantPools = PoolRegistry<Tenant, AnyTenantPool>;

/** Makes each tenant's pool by its backend. */
export const tenantPools: PoolFactory<Tenant, AnyTenantPool> = {
  serves: (t: PoolTenant): t is Tenant => pgPools.serves(t) || restPools.serves(t),
  // The backend is part of both fingerprints: a tenant moved from one backend to the other gets a new pool.
  fingerprint: (t) => (t.backend === 'pg' ? pgPools.fingerprint(t) : restPools.fingerprint(t)),
  create: (t, ctx) => (t.backend === 'pg' ? pgPools.create(t, ctx) : restPools.create(t, ctx)),
};

/** A registry for every backend this worker serves. */
export function createTenantPools(opts: Omit<RegistryOptions<Tenant, AnyTenantPool>, 'factory'>): TenantPools {
  return new PoolRegistry({ ...opts, factory: tenantPools });
}

/**
 * What a lens's REST form sees and returns. Types only: `src/lens.ts` imports them, and this
 * module imports nothing of lensfleet (no cycle).
 */
import type { SupabaseClient } from '@supabase/supabase-js';

/**
 * The client a lens's REST form queries: the query surface of supabase-js (`from`, `schema`,
 * `rpc`). For a service job it is the tenant's one reused `SupabaseClient`; for a user job a
 * per-job client whose every request carries that job's token (see docs/SUPABASE.md).
 */
export type RestClient = Pick<SupabaseClient, 'from' | 'schema' | 'rpc'>;

/**
 * A REST query not sent yet: postgrest-js's builder (`db.from(…).select(…)…`). The form must
 * return it unawaited: before it is sent, lensfleet bounds its rows (a `Range` header), gives it
 * the lens's timeout (an `AbortSignal`) and turns on `throwOnError` so failures keep their type.
 */
export interface RestQuery extends PromiseLike<{ data: unknown; error: unknown }> {
  setHeader(name: string, value: string): unknown;
  abortSignal(signal: AbortSignal): unknown;
  throwOnError(): unknown;
}

/** A lens's REST form: the same view as its SQL, as a supabase-js query. */
export type RestForm<P> = (db: RestClient, params: P) => RestQuery;

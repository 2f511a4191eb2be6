/**
 * The PostgREST stand-in (dev/postgrest) as its own process, forked by the benchmark, so that its
 * CPU is read from /proc apart from the worker's and the producer's (it does the work PostgREST
 * does for a Supabase tenant: HTTP, JWT verification, a transaction per request). Configured with
 * PostgREST's variable names in its environment (the database URL stays out of argv):
 * PGRST_DB_URI, PGRST_JWT_SECRET, PGRST_DB_POOL. Reports its URL; stops with the parent.
 */
import { startPostgrestStandIn } from '../dev/postgrest/server.js';

const env = process.env;
const standIn = await startPostgrestStandIn({
  databaseUrl: env.PGRST_DB_URI!,
  jwtSecret: env.PGRST_JWT_SECRET!,
  dbPoolMax: Number(env.PGRST_DB_POOL ?? 10),
});
process.send?.({ t: 'ready', url: standIn.url });
const stop = (): void => void standIn.close().finally(() => process.exit(0));
process.on('disconnect', stop);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

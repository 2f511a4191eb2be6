/**
 * The PostgREST stand-in as a process of its own (for the demo and for measurements that must
 * not share an event loop with the worker): `node dist/dev/postgrest/main.js`, configured with
 * PostgREST's own variable names. Prints one JSON line `{"url": …}` once it listens; stops on
 * SIGTERM/SIGINT.
 *
 *   PGRST_DB_URI       the tenant database, as its authenticator role (required)
 *   PGRST_JWT_SECRET   the project's HS256 secret (required)
 *   PGRST_SERVER_HOST  @defaultValue 127.0.0.1
 *   PGRST_SERVER_PORT  @defaultValue 0 (any free port)
 *   PGRST_DB_POOL      @defaultValue 10
 */
import { startPostgrestStandIn } from './server.js';

const env = process.env;
if (!env.PGRST_DB_URI || !env.PGRST_JWT_SECRET) {
  console.error('PGRST_DB_URI and PGRST_JWT_SECRET are required');
  process.exit(2);
}
const standIn = await startPostgrestStandIn({
  databaseUrl: env.PGRST_DB_URI,
  jwtSecret: env.PGRST_JWT_SECRET,
  host: env.PGRST_SERVER_HOST ?? '127.0.0.1',
  port: Number(env.PGRST_SERVER_PORT ?? 0),
  dbPoolMax: Number(env.PGRST_DB_POOL ?? 10),
});
console.log(JSON.stringify({ url: standIn.url }));
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    void standIn.close().then(() => process.exit(0));
  });
}

/**
 * `lensfleet plan`: could this fleet overrun a tenant's database? For a planned fleet (`--workers
 * N --concurrency C`) or the live one (its members in Redis), each tenant's worst case — its
 * effective pool ceiling summed over the workers, bounded by its fleet cap — is compared with
 * what its database server has free: `max_connections` minus the reserved slots minus what other
 * clients use now (pg_settings and pg_stat_activity, asked with the tenant's own URL; the
 * fleet's own connections, application_name `lensfleet`, do not count against it). Tenants on one
 * server add up. A database's or role's CONNECTION LIMIT is checked the same way. A warning and
 * exit code 1 where the fleet could overrun; secrets are never printed (servers are shown as
 * host:port/database).
 */
import pg from 'pg';
import { loadWorkerConfig, type WorkerConfig } from '../src/config.js';
import { FleetKeys } from '../src/fleet/keys.js';
import { readMembers } from '../src/fleet/membership.js';
import { describeRedis, redisConnection, safeRedisMessage } from '../src/redis.js';
import { effectiveMax } from '../src/pool/registry.js';
import type { Env } from '../src/settings.js';
import { loadTenantDirectory, type PgTenant, type TenantDirectory } from '../src/tenants.js';
import { location, safeMessage, table } from './format.js';
import { parseCommandArgs } from './args.js';

export const PLAN_EXIT = {
  /** Every checked tenant fits. */
  OK: 0,
  /** The fleet could overrun at least one tenant's database (a warning names it). */
  OVERRUN: 1,
  /** Bad usage or an invalid setting. */
  USAGE: 2,
  /** No overrun found, but some tenant's database could not be checked (or Redis, with --live). */
  UNCHECKED: 3,
} as const;

export const PLAN_USAGE = `usage: lensfleet plan (--workers <n> [--concurrency <c>] | --live [--fleet <name>]) [--json]

For each tenant, the most connections the fleet could open to its database — min(effective pool
max × workers, fleetMaxConnections), the effective max being min(maxSize + maxOverflow,
concurrency) per worker — against what its database server has free: max_connections minus the
reserved slots minus the connections other clients hold now (read from pg_settings and
pg_stat_activity with the tenant's own URL). Tenants on one server add up; a database's or
role's CONNECTION LIMIT is checked too. Reads the tenants and pool settings from the
environment, as a worker does: run it with the workers' environment.

options:
  --workers <n>      a planned fleet of n workers…
  --concurrency <c>  …each running c jobs at once (default: LENSFLEET_CONCURRENCY)
  --live             the live fleet instead: its workers and their concurrency, from Redis
  --fleet <name>     with --live: the fleet (default: LENSFLEET_FLEET, else LENSFLEET_QUEUE)
  --json             one JSON object instead of tables
  --help             this text
exit codes: 0 every tenant fits, 1 the fleet could overrun a tenant's database (a warning says
where), 2 bad usage or an invalid setting, 3 no overrun found but a database (or, with --live,
Redis) could not be read`;

/** The application_name of every worker connection (TenantPool's default). */
const FLEET_APPLICATION = 'lensfleet';
const PROBE_TIMEOUT_MS = 5000;
const PROBES_AT_ONCE = 8;

interface Probe {
  readonly database: string;
  readonly role: string;
  readonly superuser: boolean;
  readonly maxConnections: number;
  readonly reserved: number;
  readonly server: string;
  readonly serverId: string;
  /** Client connections other than this probe: on the server, to the database, of the role; and how many of each are the fleet's. */
  readonly serverInUse: number;
  readonly serverFleet: number;
  readonly dbInUse: number;
  readonly dbFleet: number;
  readonly roleInUse: number;
  readonly roleFleet: number;
  /** -1: none. */
  readonly dbLimit: number;
  readonly roleLimit: number;
}

export interface TenantPlan {
  readonly tenant: string;
  readonly backend: 'pg' | 'supabase';
  readonly pooling: boolean;
  /** Connections one worker may open to it, per worker. */
  readonly perWorker: readonly number[];
  readonly fleetMax: number;
  readonly cap: number | undefined;
  readonly worstCase: number;
  readonly server?: string;
  readonly database?: string;
  readonly error?: string;
}

export interface ServerPlan {
  readonly server: string;
  readonly tenants: readonly string[];
  readonly maxConnections: number;
  readonly reserved: number;
  readonly inUse: number;
  readonly byFleet: number;
  readonly others: number;
  readonly available: number;
  readonly worstCase: number;
  readonly headroom: number;
}

export interface Plan {
  readonly workers: { readonly source: 'planned' | 'live'; readonly fleet?: string; readonly concurrency: readonly number[] };
  readonly tenants: readonly TenantPlan[];
  readonly servers: readonly ServerPlan[];
  readonly warnings: readonly string[];
  readonly errors: readonly string[];
}

export async function planCommand(argv: readonly string[], env: Env): Promise<number> {
  const parsed = parseCommandArgs<{ workers?: string; concurrency?: string; live: boolean; fleet?: string; json: boolean }>(
    argv,
    {
      workers: { type: 'string' },
      concurrency: { type: 'string' },
      live: { type: 'boolean', default: false },
      fleet: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
    PLAN_USAGE,
  );
  if ('exit' in parsed) return parsed.exit;
  const { values } = parsed;
  if (values.live === (values.workers !== undefined)) return usage('give either --workers <n> (a planned fleet) or --live');
  if (values.live && values.concurrency !== undefined) return usage('--concurrency goes with --workers (the live fleet has its own)');
  if (!values.live && values.fleet !== undefined) return usage('--fleet goes with --live');
  const count = (name: string, raw: string | undefined, max: number): number | string => {
    const n = Number(raw);
    return Number.isInteger(n) && n >= 1 && n <= max ? n : `--${name} must be a whole number from 1 to ${max}`;
  };
  let config: WorkerConfig;
  let tenants: TenantDirectory;
  try {
    const fleetEnv = values.fleet === undefined ? env : { ...env, LENSFLEET_FLEET: values.fleet };
    config = loadWorkerConfig(fleetEnv);
    tenants = loadTenantDirectory(config, env);
  } catch (err) {
    console.error((err as Error).message);
    return PLAN_EXIT.USAGE;
  }
  let concurrency: number[];
  if (values.live) {
    const redis = redisConnection(config.redis, 'cli', { lazyConnect: true });
    redis.on('error', () => {});
    try {
      await redis.connect();
      concurrency = (await readMembers(redis, new FleetKeys(config.fleet.name))).members.map((m) => m.concurrency);
    } catch (err) {
      console.error(`lensfleet plan: cannot read the live fleet from Redis at ${describeRedis(config.redis)}: ${safeRedisMessage(err, config.redis)}`);
      return PLAN_EXIT.UNCHECKED;
    } finally {
      redis.disconnect();
    }
  } else {
    const workers = count('workers', values.workers, 100_000);
    const c = values.concurrency === undefined ? config.concurrency : count('concurrency', values.concurrency, 10_000);
    if (typeof workers === 'string') return usage(workers);
    if (typeof c === 'string') return usage(c);
    concurrency = Array.from({ length: workers }, () => c);
  }
  const plan = await makePlan(tenants, concurrency, values.live ? { source: 'live', fleet: config.fleet.name } : { source: 'planned' });
  console.log(values.json ? JSON.stringify(plan, null, 2) : render(plan));
  if (plan.warnings.length > 0) return PLAN_EXIT.OVERRUN;
  return plan.errors.length > 0 ? PLAN_EXIT.UNCHECKED : PLAN_EXIT.OK;
}

function usage(message: string): number {
  console.error(`${message}\n\n${PLAN_USAGE}`);
  return PLAN_EXIT.USAGE;
}

/** The plan for `concurrency` (one entry per worker): every tenant's worst case, checked against its server. */
export async function makePlan(
  tenants: TenantDirectory,
  concurrency: readonly number[],
  workers: { source: 'planned' | 'live'; fleet?: string },
): Promise<Plan> {
  const errors: string[] = [];
  const list = [...tenants.list()].sort((a, b) => (a.id < b.id ? -1 : 1));
  const probes = new Map<string, Probe | Error>();
  const probeOf = (id: string): Probe | undefined => {
    const p = probes.get(id);
    return p instanceof Error ? undefined : p;
  };
  const pgTenants = list.filter((t): t is PgTenant => t.backend === 'pg');
  for (let i = 0; i < pgTenants.length; i += PROBES_AT_ONCE) {
    await Promise.all(
      pgTenants.slice(i, i + PROBES_AT_ONCE).map(async (t) => {
        probes.set(t.id, await probe(t).catch((err: unknown) => new Error(safeMessage(err, [t.databaseUrl.reveal()]))));
      }),
    );
  }
  const plans: TenantPlan[] = [];
  for (const t of list) {
    const base = { tenant: t.id, backend: t.backend, pooling: t.pooling };
    if (t.backend !== 'pg') {
      // REST requests reach PostgREST, which pools its own database connections.
      plans.push({
        ...base,
        perWorker: [],
        fleetMax: 0,
        cap: undefined,
        worstCase: 0,
        error: 'Supabase REST: database connections are PostgREST’s (not checked)',
      });
      continue;
    }
    // Without pooling every running job holds its own connection.
    const perWorker = concurrency.map((c) => (t.pooling ? effectiveMax(t, c) : c));
    const fleetMax = perWorker.reduce((a, b) => a + b, 0);
    const cap = t.pool.fleetMaxConnections > 0 ? t.pool.fleetMaxConnections : undefined;
    const worstCase = cap === undefined ? fleetMax : Math.min(fleetMax, cap);
    const p = probes.get(t.id);
    const at = location(t.databaseUrl.reveal()).replace(/^postgres(ql)?:\/\//, '');
    if (p === undefined || p instanceof Error) {
      const message = `tenant ${t.id}: cannot check its database at ${at}: ${p?.message ?? 'not probed'} (its worst case, ${worstCase}, is unchecked)`;
      errors.push(message);
      plans.push({ ...base, perWorker, fleetMax, cap, worstCase, database: at, error: p?.message ?? 'not probed' });
      continue;
    }
    plans.push({ ...base, perWorker, fleetMax, cap, worstCase, server: p.server, database: p.database });
  }

  const warnings: string[] = [];
  const servers: ServerPlan[] = [];
  const byServer = groupBy(
    pgTenants.filter((t) => probeOf(t.id) !== undefined),
    (t) => probeOf(t.id)!.serverId,
  );
  const worstOf = (id: string) => plans.find((x) => x.tenant === id)!.worstCase;
  for (const group of byServer.values()) {
    const p = probeOf(group[0]!.id)!;
    const ids = group.map((t) => t.id);
    const worstCase = ids.reduce((a, id) => a + worstOf(id), 0);
    // What this fleet holds now is part of its worst case, not of the others' use.
    const others = Math.max(0, p.serverInUse - p.serverFleet);
    const available = p.maxConnections - p.reserved - others;
    servers.push({
      server: p.server,
      tenants: ids,
      maxConnections: p.maxConnections,
      reserved: p.reserved,
      inUse: p.serverInUse,
      byFleet: p.serverFleet,
      others,
      available,
      worstCase,
      headroom: available - worstCase,
    });
    if (worstCase > available) {
      warnings.push(
        `server ${p.server} (${describe(ids, worstOf)}): the fleet could open ${worstCase} connections, but only ${available} are free (max_connections ${p.maxConnections} − ${p.reserved} reserved − ${others} held by other clients): lower workers × concurrency or maxSize, or set fleetMaxConnections for these tenants`,
      );
    }
    // CONNECTION LIMITs: the server refuses connections beyond them (53300), jobs fail and retry.
    for (const sameDb of groupBy(group, (t) => probeOf(t.id)!.database).values()) {
      const q = probeOf(sameDb[0]!.id)!;
      if (q.dbLimit < 0) continue;
      const worst = sameDb.reduce((a, t) => a + worstOf(t.id), 0);
      const free = q.dbLimit - Math.max(0, q.dbInUse - q.dbFleet);
      if (worst > free)
        warnings.push(
          `database ${q.server}/${q.database} (${describe(
            sameDb.map((t) => t.id),
            worstOf,
          )}): the fleet could open ${worst} connections, but its CONNECTION LIMIT leaves ${free} (limit ${q.dbLimit}, ${q.dbInUse - q.dbFleet} held by other clients)`,
        );
    }
    for (const sameRole of groupBy(group, (t) => probeOf(t.id)!.role).values()) {
      const q = probeOf(sameRole[0]!.id)!;
      if (q.roleLimit < 0 || q.superuser) continue;
      const worst = sameRole.reduce((a, t) => a + worstOf(t.id), 0);
      const free = q.roleLimit - Math.max(0, q.roleInUse - q.roleFleet);
      if (worst > free)
        warnings.push(
          `role ${q.role} on ${q.server} (${describe(
            sameRole.map((t) => t.id),
            worstOf,
          )}): the fleet could open ${worst} connections, but the role's CONNECTION LIMIT leaves ${free} (limit ${q.roleLimit}, ${q.roleInUse - q.roleFleet} held by other sessions)`,
        );
    }
  }
  return { workers: { ...workers, concurrency }, tenants: plans, servers, warnings, errors };
}

function describe(ids: readonly string[], worstOf: (id: string) => number): string {
  const shown = ids.slice(0, 5).map((id) => `${id} ${worstOf(id)}`);
  return `tenant${ids.length === 1 ? '' : 's'} ${shown.join(', ')}${ids.length > 5 ? `, and ${ids.length - 5} more` : ''}`;
}

function groupBy<T>(items: readonly T[], key: (t: T) => string): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    const list = out.get(k);
    if (list) list.push(item);
    else out.set(k, [item]);
  }
  return out;
}

/** Client sessions as a tenant's role sees them: other users' rows hide backend_type, so those count when they have a database and a user (background processes have neither). */
const CLIENT =
  "(a.backend_type = 'client backend' OR (a.backend_type IS NULL AND a.datname IS NOT NULL AND a.usename IS NOT NULL)) AND a.pid <> pg_backend_pid()";

const PROBE_SQL = `SELECT current_database() AS database, current_user AS role,
  (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser,
  current_setting('max_connections')::int AS max_connections,
  current_setting('superuser_reserved_connections')::int
    + coalesce((SELECT setting::int FROM pg_settings WHERE name = 'reserved_connections'), 0) AS reserved,
  host(inet_server_addr()) AS addr, inet_server_port() AS port,
  (SELECT count(*) FROM pg_stat_activity a WHERE ${CLIENT})::int AS server_in_use,
  (SELECT count(*) FROM pg_stat_activity a WHERE ${CLIENT} AND a.application_name = $1)::int AS server_fleet,
  (SELECT count(*) FROM pg_stat_activity a WHERE ${CLIENT} AND a.datname = current_database())::int AS db_in_use,
  (SELECT count(*) FROM pg_stat_activity a WHERE ${CLIENT} AND a.datname = current_database() AND a.application_name = $1)::int AS db_fleet,
  (SELECT count(*) FROM pg_stat_activity a WHERE ${CLIENT} AND a.usename = current_user)::int AS role_in_use,
  (SELECT count(*) FROM pg_stat_activity a WHERE ${CLIENT} AND a.usename = current_user AND a.application_name = $1)::int AS role_fleet,
  (SELECT datconnlimit FROM pg_database WHERE datname = current_database()) AS db_limit,
  (SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user) AS role_limit`;

interface ProbeRow {
  database: string;
  role: string;
  superuser: boolean;
  max_connections: number;
  reserved: number;
  addr: string | null;
  port: number | null;
  server_in_use: number;
  server_fleet: number;
  db_in_use: number;
  db_fleet: number;
  role_in_use: number;
  role_fleet: number;
  db_limit: number;
  role_limit: number;
}

/** One read-only look at a tenant's database server, with the tenant's own URL. */
async function probe(t: PgTenant): Promise<Probe> {
  const url = t.databaseUrl.reveal();
  const client = new pg.Client({
    connectionString: url,
    application_name: 'lensfleet-plan',
    connectionTimeoutMillis: PROBE_TIMEOUT_MS,
    statement_timeout: PROBE_TIMEOUT_MS,
    options: '-c default_transaction_read_only=on',
  });
  client.on('error', () => {}); // a lost connection fails the query below
  await client.connect();
  try {
    const r = (await client.query<ProbeRow>(PROBE_SQL, [FLEET_APPLICATION])).rows[0]!;
    // The server's identity, so tenants reached under different host names still add up.
    const id = await client.query<{ id: string }>('SELECT system_identifier::text AS id FROM pg_control_system()').then(
      (x) => x.rows[0]?.id,
      () => undefined,
    );
    const host = new URL(url);
    const server = r.addr !== null ? `${r.addr.includes(':') ? `[${r.addr}]` : r.addr}:${r.port}` : `${host.hostname}:${host.port || 5432}`;
    return {
      database: r.database,
      role: r.role,
      superuser: r.superuser,
      maxConnections: r.max_connections,
      reserved: r.reserved,
      server,
      serverId: id === undefined ? server : `${id}@${r.port ?? host.port}`,
      serverInUse: r.server_in_use,
      serverFleet: r.server_fleet,
      dbInUse: r.db_in_use,
      dbFleet: r.db_fleet,
      roleInUse: r.role_in_use,
      roleFleet: r.role_fleet,
      dbLimit: r.db_limit,
      roleLimit: r.role_limit,
    };
  } finally {
    await client.end().catch(() => {});
  }
}

function render(p: Plan): string {
  const out: string[] = [];
  const cs = p.workers.concurrency;
  out.push(
    p.workers.source === 'planned'
      ? `plan for ${cs.length} worker${cs.length === 1 ? '' : 's'} × concurrency ${cs[0]}`
      : `plan for the live fleet ${p.workers.fleet}: ${cs.length} worker${cs.length === 1 ? '' : 's'}${cs.length > 0 ? ` (concurrency ${summarize(cs)})` : ''}`,
  );
  out.push('');
  out.push(
    table(
      ['TENANT', 'PER WORKER', 'FLEET', 'CAP', 'WORST CASE', 'SERVER', 'DATABASE'],
      p.tenants.map((t) => [
        t.tenant,
        t.backend === 'pg' ? summarize(t.perWorker) : '-',
        t.backend === 'pg' ? t.fleetMax : '-',
        t.cap ?? '-',
        t.backend === 'pg' ? t.worstCase : '-',
        t.server ?? '-',
        t.error !== undefined ? `(${t.backend === 'pg' ? 'unchecked' : 'REST'})` : (t.database ?? '-'),
      ]),
    ),
  );
  if (p.servers.length > 0) {
    out.push('');
    out.push(
      table(
        ['SERVER', 'MAX_CONNECTIONS', 'RESERVED', 'IN USE', 'BY LENSFLEET', 'OTHERS', 'FREE FOR THE FLEET', 'WORST CASE', 'HEADROOM'],
        p.servers.map((s) => [s.server, s.maxConnections, s.reserved, s.inUse, s.byFleet, s.others, s.available, s.worstCase, s.headroom]),
      ),
    );
  }
  out.push('');
  for (const w of p.warnings) out.push(`warning: ${w}`);
  for (const e of p.errors) out.push(`error: ${e}`);
  if (p.warnings.length === 0 && p.errors.length === 0) out.push('every tenant fits: the fleet cannot overrun any checked database');
  return out.join('\n');
}

/** `16` when all are 16, else `8, 8, 16`. */
function summarize(ns: readonly number[]): string {
  if (ns.length === 0) return '-';
  return ns.every((n) => n === ns[0]) ? String(ns[0]) : ns.join(', ');
}

/**
 * A throwaway PgBouncer (Debian's `pgbouncer`) in front of a local Postgres, for tests of tenants
 * behind a transaction-mode pooler: a temp dir with its ini and auth file, a free loopback port,
 * run in the foreground as the `postgres` OS user when we are root (PgBouncer refuses to run as
 * root), stopped with its dir removed — also if this process dies first.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { chownSync, rmSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort, isRoot, pgbouncerBinary, postgresUser, registerEmergencyKill, watchChild } from './servers.js';

export interface LocalPgBouncer {
  readonly port: number;
  /** The same URL through PgBouncer (its host and port replaced). */
  via(databaseUrl: string): string;
  /** Stop it (fast: SIGINT closes client connections at once) and remove its dir. */
  stop(): Promise<void>;
}

export interface PgBouncerOptions {
  /** The Postgres server it forwards to. */
  readonly upstream: { readonly host: string; readonly port: number };
  /** Logins it accepts: name → password (passed on to the server, which checks them again). */
  readonly users: Readonly<Record<string, string>>;
  /** `transaction` (the mode this exists for) or `session`. @defaultValue 'transaction' */
  readonly poolMode?: 'transaction' | 'session';
  /** Server connections per user and database. @defaultValue 2 */
  readonly poolSize?: number;
  /** Startup parameters it accepts and drops (beyond extra_float_digits), instead of refusing the client. */
  readonly ignoreStartupParameters?: readonly string[];
  readonly log?: (line: string) => void;
}

const quote = (s: string): string => `"${s.replace(/"/g, '""')}"`;

export async function startPgBouncer(opts: PgBouncerOptions): Promise<LocalPgBouncer> {
  const bin = pgbouncerBinary();
  if (bin === undefined) throw new Error("pgbouncer not found: install Debian's pgbouncer package (apt-get install pgbouncer)");
  const dir = await mkdtemp(path.join(os.tmpdir(), 'lensfleet-pgbouncer-'));
  try {
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const ini = path.join(dir, 'pgbouncer.ini');
      const authFile = path.join(dir, 'userlist.txt');
      await writeFile(
        authFile,
        Object.entries(opts.users)
          .map(([u, p]) => `${quote(u)} ${quote(p)}\n`)
          .join(''),
        { mode: 0o600 },
      );
      await writeFile(
        ini,
        [
          '[databases]',
          `* = host=${opts.upstream.host} port=${opts.upstream.port}`,
          '[pgbouncer]',
          'listen_addr = 127.0.0.1',
          `listen_port = ${port}`,
          "unix_socket_dir = ''",
          'auth_type = scram-sha-256',
          `auth_file = ${authFile}`,
          `pool_mode = ${opts.poolMode ?? 'transaction'}`,
          `default_pool_size = ${opts.poolSize ?? 2}`,
          'max_client_conn = 500',
          // pg sends none of these unless asked; lensfleet sends none to a pooler tenant.
          `ignore_startup_parameters = ${['extra_float_digits', ...(opts.ignoreStartupParameters ?? [])].join(',')}`,
          `logfile = ${path.join(dir, 'pgbouncer.log')}`,
          `pidfile = ${path.join(dir, 'pgbouncer.pid')}`,
          '',
        ].join('\n'),
        { mode: 0o600 },
      );
      if (isRoot()) {
        const { uid, gid } = postgresUser();
        for (const f of [dir, ini, authFile]) chownSync(f, uid, gid);
      }
      const [cmd, args] = isRoot() ? ['runuser', ['-u', 'postgres', '--', bin, ini]] : [bin, [ini]];
      // Its own process group: runuser forks pgbouncer, and a signal must reach both.
      const child = spawn(cmd, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      const watched = watchChild(child);
      const up = await waitForPort(port, watched.hasExited, 10_000);
      if (up) {
        opts.log?.(`pgbouncer (${opts.poolMode ?? 'transaction'} mode, pool size ${opts.poolSize ?? 2}) on 127.0.0.1:${port}`);
        return running(child, watched.exited, dir, port);
      }
      signalGroup(child, 'SIGKILL');
      await watched.exited;
      const logText = await readFile(path.join(dir, 'pgbouncer.log'), 'utf8').catch(() => '');
      if (/Address already in use/i.test(logText + watched.output()) && attempt < 3) continue;
      throw new Error(`pgbouncer did not start on port ${port}:\n${(watched.output() + logText).slice(-3000).trim()}`);
    }
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

function running(child: ChildProcess, exited: Promise<void>, dir: string, port: number): LocalPgBouncer {
  const unregister = registerEmergencyKill(() => {
    signalGroup(child, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  let stopping: Promise<void> | undefined;
  return {
    port,
    via(databaseUrl) {
      const u = new URL(databaseUrl);
      u.hostname = '127.0.0.1';
      u.port = String(port);
      return u.toString();
    },
    stop: () =>
      (stopping ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          // SIGINT is pgbouncer's immediate shutdown.
          signalGroup(child, 'SIGINT');
          const timer = setTimeout(() => signalGroup(child, 'SIGKILL'), 5000);
          await exited;
          clearTimeout(timer);
        }
        unregister();
        await rm(dir, { recursive: true, force: true });
      })()),
  };
}

function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    if (child.pid !== undefined) process.kill(-child.pid, signal);
  } catch {
    /* already gone */
  }
}

/** Until something accepts TCP connections on the port (true), the process exited, or the time is up (false). */
async function waitForPort(port: number, exited: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && !exited()) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

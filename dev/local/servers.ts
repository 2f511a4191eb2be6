/**
 * Throwaway local Redis and Postgres servers for the demo, the tests and the benchmarks.
 *
 * Both are started from the system's binaries (Debian packages `redis-server`, `postgresql`),
 * listen on 127.0.0.1 on a free port, keep all their state in a fresh temp dir, and remove it
 * on `stop()`. A process `exit` hook kills whatever is still running, because Postgres started
 * by `pg_ctl` lives in its own session and would otherwise outlive us.
 *
 * @module
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, chownSync, constants, readdirSync, rmSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile, appendFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

/** A running throwaway Redis. */
export interface LocalRedis {
  /** `redis://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  /** SIGTERM (SIGKILL after 5 s), then remove the temp dir. Idempotent. */
  stop(): Promise<void>;
  /** Stop it (SIGTERM: with `appendOnly`, the AOF is flushed) and start it again on the same port and dir (fault tests). */
  restart(): Promise<void>;
}

/** A running throwaway Postgres cluster. */
export interface LocalPostgres {
  /** Always `127.0.0.1`. */
  readonly host: string;
  readonly port: number;
  /** Superuser created by initdb (`postgres`); logs in with SCRAM-SHA-256. */
  readonly user: string;
  readonly password: string;
  /** `postgres://user:pw@127.0.0.1:port/<database>`; database defaults to `postgres`. */
  adminUrl(database?: string): string;
  /** The cluster's data directory (inside the temp dir). */
  readonly dataDir: string;
  /** Fast shutdown, then remove the temp dir. Idempotent. */
  stop(): Promise<void>;
  /** `pg_ctl restart -m fast` (every connection ends; same port and data), for fault tests. */
  restart(): Promise<void>;
}

/** Options shared by every starter. */
export interface StartOptions {
  /** Receives short progress lines. @defaultValue no-op */
  log?: (line: string) => void;
}

const noop = (): void => {};
export const isRoot = (): boolean => process.getuid?.() === 0;
const TAIL_CHARS = 4000;

// ---------------------------------------------------------------------------------------------
// Small helpers

/** Find a free TCP port by binding 127.0.0.1:0 and closing again. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => (port ? resolve(port) : reject(new Error('could not read a free port'))));
    });
  });
}

/** The path of `command` on PATH, or undefined. */
export function onPath(command: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, command);
    if (isExecutable(candidate)) return candidate;
  }
  return undefined;
}

/** Whether `file` exists and may be executed. */
export function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

const hasPostgresBinaries = (dir: string): boolean => ['initdb', 'pg_ctl', 'postgres'].every((bin) => isExecutable(path.join(dir, bin)));

/**
 * The directory holding `initdb`, `pg_ctl` and `postgres`: the newest
 * `/usr/lib/postgresql/<version>/bin` (Debian does not put them on PATH), else
 * `pg_config --bindir`, else wherever `initdb` is on PATH. `undefined` when none has all three.
 */
export function findPostgresBinDir(): string | undefined {
  const root = '/usr/lib/postgresql';
  let versions: string[] = [];
  try {
    versions = readdirSync(root).filter((v) => /^\d+(\.\d+)?$/.test(v));
  } catch {
    // no Debian layout; try the other places
  }
  versions.sort((a, b) => Number(b) - Number(a));
  const candidates = versions.map((v) => path.join(root, v, 'bin'));
  try {
    candidates.push(execFileSync('pg_config', ['--bindir'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
  } catch {
    // pg_config absent (it ships with libpq-dev, not the server)
  }
  const initdb = onPath('initdb');
  if (initdb) candidates.push(path.dirname(initdb));
  return candidates.find(hasPostgresBinaries);
}

interface RunResult {
  code: number | null;
  output: string;
}

/**
 * Run a command to completion, keeping the tail of its combined output. As root, `asPostgres`
 * runs it as the `postgres` OS user, because Postgres refuses to run as root.
 */
function run(
  command: string,
  args: readonly string[],
  opts: { cwd?: string; asPostgres?: boolean; env?: NodeJS.ProcessEnv; onLine?: (line: string) => void } = {},
): Promise<RunResult> {
  const [cmd, argv] = opts.asPostgres && isRoot() ? ['runuser', ['-u', 'postgres', '--', command, ...args]] : [command, [...args]];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    let partial = '';
    const collect = (chunk: Buffer): void => {
      const text = chunk.toString();
      output = (output + text).slice(-TAIL_CHARS);
      if (!opts.onLine) return;
      const lines = (partial + text).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) opts.onLine(line);
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, output }));
  });
}

// ---------------------------------------------------------------------------------------------
// Packages

interface Wanted {
  name: string;
  present: () => boolean;
  pkg: string;
  missing: string;
}

/**
 * Make sure the binaries for the wanted servers and tools exist. When one is missing and we are
 * root with apt-get, install its Debian package (`redis-server`, `redis-sentinel`, `postgresql`, `prometheus` for
 * prometheus + promtool, `docker-compose` for `docker-compose config`, which needs no Docker
 * engine); otherwise throw an Error naming the packages to install.
 */
export async function ensureSystemPackages(
  opts: StartOptions & {
    redis?: boolean;
    sentinel?: boolean;
    postgres?: boolean;
    prometheus?: boolean;
    dockerCompose?: boolean;
    pgbouncer?: boolean;
    /** Debian's python3 with redis, msgpack and jsonschema (the Python producer's tests). */
    python?: boolean;
    /** Debian's chromium (the queue UI's browser test drives /usr/bin/chromium). */
    chromium?: boolean;
  },
): Promise<void> {
  const log = opts.log ?? noop;
  const wanted: Wanted[] = [];
  if (opts.redis) {
    wanted.push({ name: 'redis', present: () => onPath('redis-server') !== undefined, pkg: 'redis-server', missing: 'redis-server not found' });
  }
  if (opts.sentinel) {
    // redis-cli (for `--cluster create`) comes with redis-server (its dependency redis-tools).
    wanted.push({ name: 'redis-sentinel', present: () => onPath('redis-sentinel') !== undefined, pkg: 'redis-sentinel', missing: 'redis-sentinel not found' });
  }
  if (opts.postgres) {
    wanted.push({
      name: 'postgres',
      present: () => findPostgresBinDir() !== undefined,
      pkg: 'postgresql',
      missing: 'PostgreSQL server binaries (initdb, pg_ctl, postgres) not found',
    });
  }
  if (opts.prometheus) {
    wanted.push({
      name: 'prometheus',
      present: () => onPath('promtool') !== undefined && onPath('prometheus') !== undefined,
      pkg: 'prometheus',
      missing: 'prometheus / promtool not found',
    });
  }
  if (opts.dockerCompose) {
    wanted.push({ name: 'docker-compose', present: () => onPath('docker-compose') !== undefined, pkg: 'docker-compose', missing: 'docker-compose not found' });
  }
  if (opts.pgbouncer) {
    wanted.push({ name: 'pgbouncer', present: () => pgbouncerBinary() !== undefined, pkg: 'pgbouncer', missing: 'pgbouncer not found' });
  }
  if (opts.chromium) {
    wanted.push({ name: 'chromium', present: () => isExecutable('/usr/bin/chromium'), pkg: 'chromium', missing: '/usr/bin/chromium not found' });
  }
  if (opts.python) {
    // Debian's own python3 (not one of pyenv's, which has none of Debian's modules).
    for (const [module, pkg] of [
      ['redis', 'python3-redis'],
      ['msgpack', 'python3-msgpack'],
      ['jsonschema', 'python3-jsonschema'],
    ] as const) {
      wanted.push({ name: pkg, present: () => pythonHas(module), pkg, missing: `/usr/bin/python3 cannot import ${module}` });
    }
  }
  const missing = wanted.filter((w) => !w.present());
  if (missing.length === 0) return;

  const pkgs = missing.map((w) => w.pkg);
  const advice = (): string => missing.map((w) => `${w.missing}: install Debian's ${w.pkg} package (apt-get install ${w.pkg})`).join('; ');
  if (!isRoot() || !onPath('apt-get')) throw new Error(advice());

  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const step = async (args: string[]): Promise<void> => {
    log(`apt-get ${args.join(' ')}`);
    const result = await run('apt-get', args, {
      env,
      // One short line per package is enough to show progress without flooding the log.
      onLine: (line) => {
        if (/^(Setting up|Unpacking) /.test(line)) log(`  ${line.trim()}`);
      },
    });
    if (result.code !== 0) throw new Error(`apt-get ${args[0]} failed (exit ${result.code}): ${result.output.slice(-800)}\n${advice()}`);
  };
  await step(['update']);
  await step(['install', '-y', '--no-install-recommends', ...pkgs]);
  const still = missing.filter((w) => !w.present());
  if (still.length > 0) throw new Error(`installed ${pkgs.join(' ')} but still missing: ${still.map((w) => w.name).join(', ')}`);
}

function pythonHas(module: string): boolean {
  try {
    execFileSync('/usr/bin/python3', ['-c', `import ${module}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Debian installs pgbouncer in /usr/sbin, which is not on every user's PATH. */
export function pgbouncerBinary(): string | undefined {
  return onPath('pgbouncer') ?? (isExecutable('/usr/sbin/pgbouncer') ? '/usr/sbin/pgbouncer' : undefined);
}

// ---------------------------------------------------------------------------------------------
// Emergency cleanup: servers still running when the process exits are killed synchronously.

const emergencyKills = new Set<() => void>();
let hooksInstalled = false;

function runEmergencyKills(): void {
  for (const kill of emergencyKills) {
    try {
      kill();
    } catch {
      /* best effort: we are exiting */
    }
  }
  emergencyKills.clear();
}

function onFatalSignal(signal: NodeJS.Signals): void {
  // Only act when nobody else handles the signal: then Node would die without an 'exit' event.
  // If the app has its own handler, it will exit normally and the 'exit' hook does the work.
  if (process.listenerCount(signal) > 1) return;
  runEmergencyKills();
  process.removeListener(signal, onFatalSignal);
  process.kill(process.pid, signal);
}

/**
 * Run `kill` synchronously if this process exits (or dies of a signal nobody handles) while the
 * server it stops is still running. Returns the function that unregisters it.
 */
export function registerEmergencyKill(kill: () => void): () => void {
  if (!hooksInstalled) {
    hooksInstalled = true;
    process.once('exit', runEmergencyKills);
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, onFatalSignal);
  }
  emergencyKills.add(kill);
  return () => emergencyKills.delete(kill);
}

export function removeDirSync(dir: string): void {
  rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
}

// ---------------------------------------------------------------------------------------------
// Redis

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** One PING over a plain socket; true when the answer is +PONG. */
export function pingRedis(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.once('data', (data) => done(data.toString().startsWith('+PONG')));
  });
}

/**
 * Start a throwaway `redis-server` on a free 127.0.0.1 port: no persistence, or with
 * `appendOnly` an AOF fsynced on every write (what a queue that must survive a restart runs with).
 */
export async function startRedis(opts: StartOptions & { appendOnly?: boolean } = {}): Promise<LocalRedis> {
  const log = opts.log ?? noop;
  const bin = onPath('redis-server');
  if (!bin) throw new Error("redis-server not found: install Debian's redis-server package (apt-get install redis-server)");
  const dir = await mkdtemp(path.join(os.tmpdir(), 'lensfleet-redis-'));
  try {
    // Another process can grab the free port before redis binds it; a fresh port fixes that.
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const started = await spawnRedis(bin, dir, port, opts.appendOnly ?? false);
      if ('redis' in started) {
        log(`redis listening on 127.0.0.1:${port}`);
        return started.redis;
      }
      if (!/Address already in use/i.test(started.error.message) || attempt >= 3) throw started.error;
    }
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

/** A server child's last output (stdout and stderr) and its end, however it ends (exit or spawn error). */
export interface WatchedChild {
  output(): string;
  hasExited(): boolean;
  readonly exited: Promise<void>;
}

export function watchChild(child: ChildProcess, tailChars = TAIL_CHARS): WatchedChild {
  let output = '';
  const collect = (chunk: Buffer): void => {
    output = (output + chunk.toString()).slice(-tailChars);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  let hasExited = false;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => {
      hasExited = true;
      resolve();
    });
    child.once('error', (err) => {
      output += `\n${err.message}`;
      hasExited = true;
      resolve();
    });
  });
  return { output: () => output, hasExited: () => hasExited, exited };
}

async function spawnRedis(bin: string, dir: string, port: number, appendOnly: boolean): Promise<{ redis: LocalRedis } | { error: Error }> {
  const first = await launchRedis(bin, dir, port, appendOnly);
  if ('error' in first) return first;
  let { child, exited } = first;
  const unregister = registerEmergencyKill(() => {
    child.kill('SIGKILL');
    removeDirSync(dir);
  });
  let stopping: Promise<void> | undefined;
  return {
    redis: {
      url: `redis://127.0.0.1:${port}`,
      port,
      stop: () =>
        (stopping ??= (async () => {
          await killAndWait(child, exited);
          unregister();
          await rm(dir, { recursive: true, force: true });
        })()),
      async restart() {
        await killAndWait(child, exited);
        const again = await launchRedis(bin, dir, port, appendOnly);
        if ('error' in again) throw again.error;
        ({ child, exited } = again);
      },
    },
  };
}

/** One redis-server process, answering PING. */
async function launchRedis(
  bin: string,
  dir: string,
  port: number,
  appendOnly: boolean,
): Promise<{ child: ChildProcess; exited: Promise<void> } | { error: Error }> {
  const persistence = appendOnly ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no'];
  const child = spawn(
    bin,
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', ...persistence, '--dir', dir, '--protected-mode', 'yes', '--daemonize', 'no'],
    { cwd: dir, detached: false, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const watched = watchChild(child);
  const exited = watched.exited;

  const deadline = Date.now() + 15_000;
  while (!(await pingRedis(port))) {
    if (watched.hasExited()) {
      return { error: new Error(`redis-server exited before answering PING on port ${port}:\n${watched.output().trim()}`) };
    }
    if (Date.now() > deadline) {
      await killAndWait(child, exited);
      return { error: new Error(`redis-server did not answer PING on port ${port} within 15 s:\n${watched.output().trim()}`) };
    }
    await sleep(50);
  }
  return { child, exited };
}

/** SIGTERM, SIGKILL after 5 s, and wait for the exit. */
export async function killAndWait(child: ChildProcess, exited: Promise<void>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

// ---------------------------------------------------------------------------------------------
// Postgres

/** Quote a value for postgresql.conf. */
const confValue = (value: string): string => `'${value.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;

/**
 * Start a throwaway Postgres cluster: initdb with a random superuser password and SCRAM auth,
 * then `pg_ctl start` on a free 127.0.0.1 port. As root, the cluster runs as the `postgres` OS
 * user (Debian's package creates it) and the temp dir is handed over to that user.
 *
 * @param opts.fsync - `false` trades crash safety for speed (tests). @defaultValue true
 * @param opts.maxConnections - `max_connections`. @defaultValue 200
 * @param opts.extraConfig - further `postgresql.conf` settings, e.g. `{ log_min_duration_statement: '0' }`.
 */
export async function startPostgres(
  opts: StartOptions & { fsync?: boolean; maxConnections?: number; extraConfig?: Record<string, string> } = {},
): Promise<LocalPostgres> {
  const log = opts.log ?? noop;
  const binDir = findPostgresBinDir();
  if (!binDir) {
    throw new Error("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: install Debian's postgresql package (apt-get install postgresql)");
  }
  const bin = (name: string): string => path.join(binDir, name);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'lensfleet-pg-'));
  const dataDir = path.join(dir, 'data');
  const logFile = path.join(dir, 'log');
  const password = randomBytes(18).toString('base64url');
  const user = 'postgres';
  const pg = (name: string, args: string[]): Promise<RunResult> => run(bin(name), args, { cwd: dir, asPostgres: true });

  try {
    const pwFile = path.join(dir, 'pwfile');
    await writeFile(pwFile, `${password}\n`, { mode: 0o600 });
    if (isRoot()) await handToPostgresUser(dir);

    log(`initdb ${dataDir}`);
    const initArgs = ['-D', dataDir, '-U', user, '--auth=scram-sha-256', `--pwfile=${pwFile}`, '-E', 'UTF8'];
    let init = await pg('initdb', [...initArgs, '--locale=C.UTF-8']);
    if (init.code !== 0 && /locale/i.test(init.output)) {
      await rm(dataDir, { recursive: true, force: true });
      init = await pg('initdb', [...initArgs, '--no-locale']);
    }
    await rm(pwFile, { force: true });
    if (init.code !== 0) throw new Error(`initdb failed (exit ${init.code}):\n${init.output.trim()}`);

    // Settings go into postgresql.conf rather than `pg_ctl -o`, which is re-parsed by a shell.
    const fsync = opts.fsync ?? true;
    const settings: Record<string, string> = {
      listen_addresses: '127.0.0.1',
      unix_socket_directories: dir,
      fsync: fsync ? 'on' : 'off',
      // With fsync off the data is disposable anyway; skip the other durability costs too.
      ...(fsync ? {} : { synchronous_commit: 'off', full_page_writes: 'off' }),
      max_connections: String(opts.maxConnections ?? 200),
      shared_buffers: '32MB',
      password_encryption: 'scram-sha-256',
      ...opts.extraConfig,
    };
    const lines = Object.entries(settings).map(([key, value]) => {
      if (!/^[a-z_][a-z0-9_.]*$/i.test(key)) throw new Error(`invalid Postgres setting name: ${JSON.stringify(key)}`);
      return `${key} = ${confValue(value)}`;
    });
    await appendFile(path.join(dataDir, 'postgresql.conf'), `\n# lensfleet local server\n${lines.join('\n')}\n`);

    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const start = await pg('pg_ctl', ['-D', dataDir, '-l', logFile, '-w', '-t', '30', 'start', '-o', `-p ${port}`]);
      if (start.code === 0) {
        const pid = Number((await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
        log(`postgres listening on 127.0.0.1:${port} (pid ${pid})`);
        return runningPostgres({ dir, dataDir, port, user, password, pid, pg });
      }
      const serverLog = await readFile(logFile, 'utf8').catch(() => '');
      // Another process can grab the free port before the postmaster binds it.
      if (/could not bind|Address already in use/i.test(serverLog) && attempt < 3) continue;
      throw new Error(`pg_ctl start failed (exit ${start.code}):\n${start.output.trim()}\n--- server log ---\n${serverLog.slice(-TAIL_CHARS).trim()}`);
    }
  } catch (error) {
    await pg('pg_ctl', ['-D', dataDir, '-m', 'immediate', '-w', 'stop']).catch(noop);
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

/** The uid and gid of the `postgres` OS user (Debian's postgresql package creates it). */
export function postgresUser(): { uid: number; gid: number } {
  return {
    uid: Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim()),
    gid: Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim()),
  };
}

/** chown the temp dir to the postgres OS user and check that user can actually reach it. */
export async function handToPostgresUser(dir: string): Promise<void> {
  const { uid, gid } = postgresUser();
  chownSync(dir, uid, gid);
  chownSync(path.join(dir, 'pwfile'), uid, gid);
  // A TMPDIR inside /root (mode 0700) would be unreachable for the postgres user.
  const probe = await run('test', ['-w', dir], { asPostgres: true });
  if (probe.code !== 0) {
    throw new Error(`the postgres OS user cannot write ${dir}; set TMPDIR to a directory it can reach, such as /tmp`);
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function runningPostgres(s: {
  dir: string;
  dataDir: string;
  port: number;
  user: string;
  password: string;
  pid: number;
  pg: (name: string, args: string[]) => Promise<RunResult>;
}): LocalPostgres {
  const postmasterPid = async (): Promise<number> => Number((await readFile(path.join(s.dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
  // SIGQUIT is Postgres' immediate shutdown: the postmaster takes its backends down with it.
  const unregister = registerEmergencyKill(() => {
    try {
      process.kill(s.pid, 'SIGQUIT');
    } catch {
      /* already gone */
    }
    removeDirSync(s.dir);
  });
  let stopping: Promise<void> | undefined;
  return {
    host: '127.0.0.1',
    port: s.port,
    user: s.user,
    password: s.password,
    dataDir: s.dataDir,
    adminUrl: (database = 'postgres') =>
      `postgres://${encodeURIComponent(s.user)}:${encodeURIComponent(s.password)}@127.0.0.1:${s.port}/${encodeURIComponent(database)}`,
    stop: () =>
      (stopping ??= (async () => {
        const result = await s.pg('pg_ctl', ['-D', s.dataDir, '-m', 'fast', '-w', '-t', '30', 'stop']);
        if (result.code !== 0) {
          // Stop failed (e.g. timed out): do not leave a server running on a deleted dir.
          try {
            process.kill(s.pid, 'SIGQUIT');
          } catch {
            /* already gone */
          }
          for (let i = 0; i < 100 && isAlive(s.pid); i++) await sleep(50);
        }
        unregister();
        await rm(s.dir, { recursive: true, force: true });
      })()),
    async restart() {
      // pg_ctl restart starts the postmaster with the options it last ran with (the same port).
      // -l: without a log file the new postmaster would keep pg_ctl's output pipe open.
      const result = await s.pg('pg_ctl', ['-D', s.dataDir, '-l', path.join(s.dir, 'log'), '-m', 'fast', '-w', '-t', '30', 'restart']);
      if (result.code !== 0) throw new Error(`pg_ctl restart failed (exit ${result.code}):\n${result.output.trim()}`);
      s.pid = await postmasterPid();
    },
  };
}

/**
 * CPU time and memory of processes, read from /proc (Linux only).
 *
 * CPU per job is the steadier figure on a shared machine: wall-clock throughput moves with the
 * neighbours, CPU seconds spent by our own processes much less.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

let ticksPerSecond: number | undefined;

/** USER_HZ (`getconf CLK_TCK`), almost always 100. */
function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

interface ProcStat {
  readonly ppid: number;
  /** utime + stime, in ticks. */
  readonly own: number;
  /** cutime + cstime: CPU of children this process has reaped, in ticks. */
  readonly reaped: number;
}

function readStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined; // exited
  }
  // The command name may contain spaces and parentheses: fields start after the last ')'.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const n = (i: number): number => Number(f[i] ?? 0);
  // f[0] is field 3 (state): ppid = 4, utime = 14, stime = 15, cutime = 16, cstime = 17.
  return { ppid: n(1), own: n(11) + n(12), reaped: n(13) + n(14) };
}

/** CPU milliseconds (user + system, all threads) used by one process so far; 0 once it exited. */
export function processCpuMs(pid: number): number {
  const s = readStat(pid);
  return s ? (s.own * 1000) / clockTicks() : 0;
}

/**
 * CPU milliseconds of a process and all its children, including children that already exited
 * (their CPU moves into the parent's cutime/cstime when it reaps them). For the postmaster this
 * is every backend, including connect-per-job backends that lived a few milliseconds.
 */
export function processTreeCpuMs(rootPid: number): number {
  const root = readStat(rootPid);
  if (!root) return 0;
  let ticks = root.own + root.reaped;
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === rootPid) continue;
    const s = readStat(pid);
    if (s && s.ppid === rootPid) ticks += s.own + s.reaped;
  }
  return (ticks * 1000) / clockTicks();
}

/** Resident set size in bytes (VmRSS); 0 once the process exited. */
export function rssBytes(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** The processes whose CPU a benchmark charges to its jobs. */
export interface CpuSources {
  readonly workerPid: number;
  readonly redisPid: number;
  readonly postmasterPid: number;
  /** The PostgREST stand-in between a Supabase tenant's worker and Postgres, when there is one. */
  readonly standInPid?: number;
}

export interface CpuSample {
  readonly workerMs: number;
  readonly redisMs: number;
  readonly postgresMs: number;
  /** 0 without a stand-in. */
  readonly standInMs: number;
  /** This benchmark process: the producer adding jobs (and receiving the worker's reports). */
  readonly producerMs: number;
}

export function sampleCpu(src: CpuSources): CpuSample {
  return {
    workerMs: processCpuMs(src.workerPid),
    redisMs: processCpuMs(src.redisPid),
    postgresMs: processTreeCpuMs(src.postmasterPid),
    standInMs: src.standInPid === undefined ? 0 : processCpuMs(src.standInPid),
    producerMs: processCpuMs(process.pid),
  };
}

/**
 * CPU ms per job between two samples, by process; `total` is the worker + Redis + Postgres
 * (+ the stand-in, which does a Supabase tenant's server-side work; the producer apart).
 */
export function cpuPerJob(before: CpuSample, after: CpuSample, jobs: number) {
  const per = (a: number, b: number): number => (jobs > 0 ? (b - a) / jobs : Number.NaN);
  const worker = per(before.workerMs, after.workerMs);
  const redis = per(before.redisMs, after.redisMs);
  const postgres = per(before.postgresMs, after.postgresMs);
  const standIn = per(before.standInMs, after.standInMs);
  return { worker, redis, postgres, standIn, total: worker + redis + postgres + standIn, producer: per(before.producerMs, after.producerMs) };
}

/** The 1-minute load average (other work on a shared machine shows here). */
export function loadAverage(): number {
  try {
    return Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
  } catch {
    return Number.NaN;
  }
}

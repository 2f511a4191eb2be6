/**
 * Parent side of a worker child process: fork, wait until ready, arm and await finished jobs,
 * read CPU from /proc, stop. Every wait is bounded.
 */
import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { benchScript } from './code.js';
import type { ChildInfo, ChildMessage, FinishedReport, WorkerMode } from './protocol.js';

const TAIL_CHARS = 4000;

/** Children alive right now, so a Ctrl-C or a crash can stop them. */
const live = new Set<ChildProcess>();

/** SIGKILL every worker child still running (emergency cleanup). */
export function killAllWorkers(): void {
  for (const child of live) child.kill('SIGKILL');
  live.clear();
}

export interface WorkerHandleOptions {
  readonly mode: WorkerMode;
  readonly env: Record<string, string>;
  /** Extra node flags, e.g. --cpu-prof. */
  readonly execArgv?: readonly string[];
  readonly label: string;
  /** Run the worker child of another build (a directory with dist/bench/worker-child.js): before/after comparisons. */
  readonly codeDir?: string;
}

export class WorkerHandle {
  readonly label: string;
  readonly mode: WorkerMode;
  readonly #child: ChildProcess;
  readonly #exited: Promise<number | null>;
  #output = '';
  #finished = 0;
  #waiters = new Set<(m: ChildMessage) => void>();

  private constructor(opts: WorkerHandleOptions) {
    this.label = opts.label;
    this.mode = opts.mode;
    const script = opts.codeDir === undefined ? benchScript('worker-child.js') : path.join(opts.codeDir, 'dist', 'bench', 'worker-child.js');
    this.#child = fork(script, [], {
      env: { PATH: process.env.PATH ?? '', ...opts.env, BENCH_MODE: opts.mode },
      execArgv: ['--expose-gc', ...(opts.execArgv ?? [])],
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    live.add(this.#child);
    const collect = (chunk: Buffer): void => {
      this.#output = (this.#output + chunk.toString()).slice(-TAIL_CHARS);
    };
    this.#child.stdout?.on('data', collect);
    this.#child.stderr?.on('data', collect);
    this.#exited = new Promise((resolve) => {
      this.#child.once('exit', (code) => {
        live.delete(this.#child);
        resolve(code);
      });
    });
    this.#child.on('message', (m: ChildMessage) => {
      if (m.t === 'progress') this.#finished = m.finished;
      for (const w of [...this.#waiters]) w(m);
    });
  }

  /** Fork a worker child and wait until it takes jobs. */
  static async start(opts: WorkerHandleOptions, timeoutMs = 60_000): Promise<WorkerHandle> {
    const handle = new WorkerHandle(opts);
    try {
      await handle.#await((m) => m.t === 'ready', timeoutMs, 'start');
    } catch (err) {
      await handle.stop();
      throw err;
    }
    return handle;
  }

  get pid(): number {
    return this.#child.pid ?? 0;
  }

  /** Jobs finished since the last arm (updated twice a second). */
  get finished(): number {
    return this.#finished;
  }

  /** Start counting finished jobs from zero; `done()` resolves once `count` have finished. */
  arm(count: number): Promise<FinishedReport> {
    this.#finished = 0;
    const done = this.#await((m) => m.t === 'done', Number.POSITIVE_INFINITY, 'done') as Promise<FinishedReport>;
    this.#child.send({ t: 'arm', count });
    return done;
  }

  /** Make the pending `arm()` resolve now with what finished so far (a capped drain). */
  flush(): void {
    if (this.#child.connected) this.#child.send({ t: 'flush' });
  }

  async info(gc: boolean, timeoutMs = 10_000): Promise<ChildInfo> {
    const reply = this.#await((m) => m.t === 'info', timeoutMs, 'info');
    this.#child.send({ t: 'info', gc });
    return (await reply) as ChildInfo;
  }

  /** Graceful stop (the worker finishes its active jobs), SIGKILL after timeoutMs. Idempotent. */
  async stop(timeoutMs = 20_000): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    if (this.#child.connected) this.#child.send({ t: 'stop' });
    else this.#child.kill('SIGTERM');
    const timer = setTimeout(() => this.#child.kill('SIGKILL'), timeoutMs);
    await this.#exited;
    clearTimeout(timer);
  }

  /** Wait for a message; rejects on timeout, on a fatal message, or when the child exits. */
  #await(match: (m: ChildMessage) => boolean, timeoutMs: number, what: string): Promise<ChildMessage> {
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const finish = (): void => {
        this.#waiters.delete(onMessage);
        clearTimeout(timer);
      };
      const onMessage = (m: ChildMessage): void => {
        if (m.t === 'fatal') {
          finish();
          reject(new Error(`${this.label}: worker child failed: ${m.message}`));
        } else if (match(m)) {
          finish();
          resolve(m);
        }
      };
      this.#waiters.add(onMessage);
      if (Number.isFinite(timeoutMs)) {
        timer = setTimeout(() => {
          finish();
          reject(new Error(`${this.label}: no '${what}' from the worker child within ${timeoutMs} ms\n${this.#output.trim()}`));
        }, timeoutMs);
      }
      void this.#exited.then((code) => {
        if (!this.#waiters.has(onMessage)) return;
        finish();
        reject(new Error(`${this.label}: worker child exited (code ${code}) while waiting for '${what}'\n${this.#output.trim()}`));
      });
    });
  }
}

/**
 * The process connection budget: how many connections one process may hold over all its tenant
 * pools. It sees pools only through `BudgetMember`, so it can be tested with fakes.
 */
import type { Logger } from 'pino';
import { LensfleetError } from '../errors.js';
import type { BudgetMember, ConnectionBudget } from './types.js';

/**
 * The process connection budget. Derived state only: the total is the sum of the pools' sizes,
 * so nothing can drift. When a new connection would exceed it, the least recently used idle
 * connection of another tenant is closed first; if none is idle, the opener waits for a release.
 */
export class ProcessBudget implements ConnectionBudget {
  readonly max: number;
  readonly #pools: ReadonlySet<BudgetMember>;
  readonly #log: Logger;
  #wakers: (() => void)[] = [];

  constructor(max: number, pools: ReadonlySet<BudgetMember>, log: Logger) {
    this.max = max;
    this.#pools = pools;
    this.#log = log;
  }

  total(): number {
    let n = 0;
    for (const p of this.#pools) n += p.size;
    return n;
  }

  free(): number {
    return Math.max(0, this.max - this.total());
  }

  released(): void {
    const wakers = this.#wakers;
    this.#wakers = [];
    for (const wake of wakers) wake();
  }

  async reserve(requester: BudgetMember, timeoutMs: number): Promise<void> {
    if (this.max === Infinity) return;
    const deadline = Date.now() + timeoutMs;
    while (this.total() > this.max) {
      const victim = this.#leastRecentlyUsedIdle(requester);
      if (victim !== undefined && (await victim.evictIdle())) {
        this.#log.debug({ tenant: victim.tenant, for: requester.tenant }, 'idle connection evicted for the process budget');
        continue;
      }
      const left = deadline - Date.now();
      if (left <= 0) throw this.#exhausted(requester, timeoutMs);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 100));
        this.#wakers.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** PROCESS_BUDGET_TIMEOUT, stating the budget's numbers (as HikariCP's timeouts state the pool's). */
  #exhausted(requester: BudgetMember, timeoutMs: number): LensfleetError {
    let pools = 0;
    let busy = 0;
    for (const p of this.#pools) {
      pools++;
      if (p.busy) busy++;
    }
    const total = this.total();
    return new LensfleetError(
      'PROCESS_BUDGET_TIMEOUT',
      `tenant ${requester.tenant}: no room in the process connection budget within ${timeoutMs} ms (total=${total}, max=${this.max}, pools=${pools}, busy=${busy}) and no idle connection of another tenant to close`,
      { details: { tenant: requester.tenant, total, max: this.max, pools, busyPools: busy } },
    );
  }

  #leastRecentlyUsedIdle(requester: BudgetMember): BudgetMember | undefined {
    let best: BudgetMember | undefined;
    for (const p of this.#pools) {
      if (p === requester || p.idleCount === 0 || p.busy) continue;
      if (best === undefined || p.lastUsedAt < best.lastUsedAt) best = p;
    }
    // A draining pool's idle connections are closed by pg-pool itself; a busy pool may still
    // have idle ones to spare when no quiet pool has any.
    if (best !== undefined) return best;
    for (const p of this.#pools) {
      if (p !== requester && p.idleCount > 0 && (best === undefined || p.lastUsedAt < best.lastUsedAt)) best = p;
    }
    return best;
  }
}

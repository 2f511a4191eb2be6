/**
 * Where a fleet lives in Redis. A fleet is every worker sharing one Redis and one fleet name
 * (`LENSFLEET_FLEET`, by default the queue name). All its keys carry the name as a hash tag
 * (`lensfleet:{<fleet>}:…`), so on Redis Cluster they share one slot and a script may touch
 * several of them (the batched lease renewal does).
 *
 * - `…:members` sorted set: worker id → expiry (ms, Redis clock) — the index of live workers;
 * - `…:member:<worker>` string: that worker's JSON record, expiring with its heartbeat;
 * - `…:lease:<tenant>` sorted set: lease id (`<worker>|<n>`) → expiry — one per open connection;
 * - `…:want:<tenant>` sorted set: worker id → expiry — workers waiting for a lease of the tenant;
 * - channel `…:leases`: `wanted <tenant> <worker>` and `freed <tenant>` notices.
 */
import { randomBytes } from 'node:crypto';
import os from 'node:os';

export class FleetKeys {
  readonly fleet: string;
  readonly #prefix: string;

  constructor(fleet: string) {
    this.fleet = fleet;
    this.#prefix = `lensfleet:{${fleet}}:`;
  }

  get members(): string {
    return `${this.#prefix}members`;
  }

  member(worker: string): string {
    return `${this.#prefix}member:${worker}`;
  }

  leases(tenant: string): string {
    return `${this.#prefix}lease:${tenant}`;
  }

  wanters(tenant: string): string {
    return `${this.#prefix}want:${tenant}`;
  }

  /** Pattern of every tenant's lease set (for `lensfleet status`). */
  get leasesPattern(): string {
    // The braces are glob syntax for SCAN MATCH: escape them.
    return `lensfleet:\\{${this.fleet.replace(/[*?[\]\\{}]/g, (c) => `\\${c}`)}\\}:lease:*`;
  }

  /** The tenant of a lease set's key, or undefined. */
  tenantOfLeases(key: string): string | undefined {
    const prefix = `${this.#prefix}lease:`;
    return key.startsWith(prefix) ? key.slice(prefix.length) : undefined;
  }

  get channel(): string {
    return `${this.#prefix}leases`;
  }
}

/**
 * A worker's id in the fleet: host, pid and a random part (a pid is reused across restarts and
 * containers). Never contains `|` (the lease id separator) or spaces (the notice separator).
 */
export function newWorkerId(host = os.hostname(), pid = process.pid): string {
  const safeHost = host.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 64) || 'host';
  return `${safeHost}:${pid}:${randomBytes(3).toString('hex')}`;
}

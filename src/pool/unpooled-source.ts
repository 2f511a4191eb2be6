/**
 * The unpooled connection source, the guide's rollback plan (`pooling: false`,
 * `LENSFLEET_POOLING=off`): every acquire opens a fresh connection and every return closes it.
 * The pool around it is the same (timeouts, bounded waiting, stats, the process budget); only
 * where connections come from and go to differs. Nothing is kept, so there is nothing to warm,
 * trim, refill, validate or evict.
 */
import type { PoolLedger } from './ledger.js';
import { PooledClient, type PooledClientOptions } from './pooled-client.js';
import type { ConnectCallback, ConnectionSource, SourceOptions } from './source.js';
import type { PoolClient } from './types.js';

export class UnpooledSource implements ConnectionSource {
  readonly sharesConnections = false;
  readonly #ledger: PoolLedger;
  readonly #client: PooledClientOptions;
  /** Connections open or opening (each is a job's). */
  #open = 0;

  constructor(opts: SourceOptions) {
    this.#ledger = opts.ledger;
    this.#client = opts.client;
  }

  get size(): number {
    return this.#open;
  }

  get idleCount(): number {
    return 0;
  }

  connect(done: ConnectCallback): void {
    const client = new PooledClient(this.#client);
    this.#open++;
    client.connect((err: Error | null) => {
      if (err) {
        this.#open--;
        return done(err, undefined);
      }
      done(undefined, client as unknown as PoolClient);
    });
  }

  /** A fresh connection needs no lifetime check or ping. */
  validate(): boolean {
    return true;
  }

  reuse(client: PoolClient): void {
    this.#close(client);
  }

  /** Closed like any other: every connection of this source closes after its job (counted `unpooled`). */
  destroy(client: PoolClient): void {
    this.#close(client);
  }

  warm(): Promise<void> {
    return Promise.resolve();
  }

  closeIdle(): Promise<number> {
    return Promise.resolve(0);
  }

  closeIdleWhere(): Promise<number> {
    return Promise.resolve(0);
  }

  /** Checked-out connections close as their jobs return them. */
  end(): Promise<void> {
    return Promise.resolve();
  }

  #close(client: PoolClient): void {
    this.#open--;
    this.#ledger.closed(client, 'unpooled');
    void client
      .end()
      .catch(() => {})
      .finally(() => this.#ledger.freed(client));
  }
}

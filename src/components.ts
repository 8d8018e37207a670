import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Config } from './config/config.ts';
import { newInstanceId } from './instance-id.ts';
import { keysFor, type Keys } from './queue/keys.ts';
import { Queues } from './queue/queues.ts';
import { Cancellations } from './tasks/cancellations.ts';
import { Gates } from './tasks/gates.ts';
import { IdentityStore, type IdentityArchive } from './tasks/identity-store.ts';
import { Outcomes } from './tasks/outcomes.ts';
import { RecentCancels } from './tasks/recent-cancels.ts';
import { ConsumerRegistry } from './workers/registry.ts';

export interface ComponentsOptions {
  config: Pick<Config, 'prefix' | 'queue'>;
  /**
   * The process's command connection. Outcomes are written on it ahead of the finishing command a
   * BullMQ Worker sends on the same connection (see Outcomes.recordAhead), so a worker's is used.
   */
  connection: Redis;
  log: Logger;
  /** Where identities that completed long ago are looked up when Redis no longer has them. */
  identityArchive?: IdentityArchive;
}

/**
 * What a process root (app.ts for the master and the workers' primary, workers/worker-process.ts,
 * cli/context.ts) builds once and passes to whatever needs it: the keys, the identity store,
 * the gates, the outcome recorder, cancellations and the cancels heard for jobs not held yet,
 * the consumer registry and the queues, and the root's instance id.
 * Whoever builds it closes it, after everything that uses it.
 */
export class Components {
  readonly keys: Keys;
  readonly store: IdentityStore;
  readonly gates: Gates;
  readonly outcomes: Outcomes;
  readonly cancellations: Cancellations;
  readonly registry: ConsumerRegistry;
  readonly queues: Queues;
  /** Cancels heard for jobs this root's consumers (a task worker, the bridge's runners) do not hold yet. */
  readonly recentCancels = new RecentCancels();
  /** The root's id: its consumer entry, its bridge (see instance-id.ts). */
  readonly instanceId = newInstanceId();

  constructor(opts: ComponentsOptions) {
    const { config, connection, log } = opts;
    this.keys = keysFor(config.prefix);
    this.store = new IdentityStore(connection, this.keys);
    this.store.archive = opts.identityArchive;
    this.gates = new Gates({ connection, prefix: config.prefix, store: this.store, log });
    this.outcomes = new Outcomes(this.store, this.gates, log);
    this.cancellations = new Cancellations(connection, config.prefix, this.gates);
    this.registry = new ConsumerRegistry(connection, config.prefix);
    this.queues = new Queues({ connection, prefix: config.prefix, defaultName: config.queue, log });
  }

  /** Waits for outcomes sent ahead, then closes the gates (their worker, when started) and the queues. */
  async close(): Promise<void> {
    await this.outcomes.close();
    await this.gates.close();
    await this.queues.close();
  }
}

/** A process root's command connection and the components built on it, for a second service in the same process. */
export interface ProcessRoot {
  connection: Redis;
  components: Components;
}

import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { ArchiveLag } from '../archive/archiver.ts';
import type { History } from '../archive/history.ts';
import type { ArchiveStore } from '../archive/store.ts';
import type { Config } from '../config/config.ts';
import type { Components } from '../components.ts';
import type { TaskClient } from '../tasks/task-client.ts';
import type { ConsumerRegistry } from '../workers/registry.ts';

/** What the master's route plugins are given: its config, its connections and its components. */
export interface RouteContext {
  readonly config: Config;
  readonly log: Logger;
  /** The master's shared Redis connection (commands only, no blocking reads). */
  readonly connection: Redis;
  /** Adds and cancels tasks. */
  readonly client: TaskClient;
  /** The master's shared components: keys, identity store, queues, … (see components.ts). */
  readonly components: Components;
  readonly history: History;
  /** The archive, when MONGO_URL is set. */
  readonly store?: ArchiveStore;
  /** The archive's lag, read from Redis (works while MongoDB is away). */
  lag(): Promise<ArchiveLag>;
  /** Live worker processes, runners and feeders, as they announce themselves in Redis. */
  readonly registry: ConsumerRegistry;
  /** Every task queue the system knows: the configured one and those consumers serve. */
  queues(): Promise<string[]>;
}

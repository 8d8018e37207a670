import { Cluster, Redis, type ClusterNode, type ClusterOptions, type RedisOptions } from 'ioredis';
import { redactUrl } from '../config/config.ts';
import { ConfigError, RedisUnavailableError } from '../errors.ts';
import { processOutageLog } from './outage-log.ts';
import { isClusterUrl, parseClusterUrl } from './redis-url.ts';

export interface ConnectionOptions {
  /** Shown in `CLIENT LIST`, so an operator can tell Taskmaster's connections apart. */
  name: string;
  /**
   * Fail a command at once when Redis is down instead of queueing it until Redis is back.
   * The CLI wants this (a one-line error, a non-zero exit); long-lived services do not.
   * @defaultValue false
   */
  failFast?: boolean;
}

/** The connections made from one createRedis call: the connection and its duplicates. */
interface Family {
  members: Set<Redis>;
  /** Set by abandonRedis: a duplicate made later is closed at once. */
  abandoned: boolean;
}

const families = new WeakMap<Redis, Family>();

/**
 * A connection whose duplicates (ours, and those BullMQ makes for its blocking Workers and
 * QueueEvents) are made and watched the same way as itself: none is left without an 'error'
 * listener, and abandonRedis reaches them all.
 */
class TaskmasterRedis extends Redis {
  override duplicate(override?: Partial<RedisOptions>): Redis {
    return watched(new TaskmasterRedis({ ...this.options, ...override }), families.get(this)!);
  }

  /** A task result or log line that holds a connection shows its name, not its password. */
  toJSON(): { connection: string | undefined } {
    return { connection: this.options.connectionName };
  }
}

/** The same for Redis Cluster: BullMQ duplicates a cluster with (nodes, options), see ioredis. */
class TaskmasterCluster extends Cluster {
  constructor(
    private readonly seeds: ClusterNode[],
    options: ClusterOptions,
  ) {
    super(seeds, options);
  }

  override duplicate(nodes: ClusterNode[] = [], override: Partial<ClusterOptions> = {}): Cluster {
    const family = families.get(this as unknown as Redis)!;
    // watched() closes a late duplicate of an abandoned family at once, which ends a cluster
    // (failing its commands) only while it has not begun to connect.
    const options = { ...this.options, ...override, ...(family.abandoned ? { lazyConnect: true } : {}) };
    const copy = new TaskmasterCluster(nodes.length ? nodes : this.seeds, options);
    return watched(copy as unknown as Redis, family) as unknown as Cluster;
  }

  /** As TaskmasterRedis's: a cluster's internals are also circular. */
  toJSON(): { connection: string | undefined } {
    return { connection: this.options.redisOptions?.connectionName };
  }
}

function watched(redis: Redis, family: Family): Redis {
  const outages = processOutageLog();
  families.set(redis, family);
  family.members.add(redis);
  // ioredis emits 'error' on every failed reconnect, and prints a stack for an 'error' nobody
  // listens to: the process's OutageLog says it once per outage instead.
  redis.on('error', (err: Error) => outages.failed(redis, err));
  redis.on('ready', () => outages.ready(redis));
  redis.on('end', () => {
    family.members.delete(redis);
    outages.ended(redis);
  });
  if (family.abandoned) redis.disconnect();
  return redis;
}

/**
 * The one place a Redis connection is made. Long-lived components get connections that
 * reconnect forever (BullMQ requires `maxRetriesPerRequest: null` for its blocking calls);
 * one-shot commands get ones that give up quickly with a clear error. Failures are reported
 * to the process's OutageLog (see outage-log.ts), also for the connection's duplicates.
 *
 * A cluster URL (queue/redis-url.ts) gives an ioredis Cluster, typed as Redis: it takes the same
 * commands and BullMQ accepts it, and every key of one prefix lies in one slot (config.ts refuses
 * a cluster without a hash-tagged prefix), so multi-key commands, MULTI and scripts work as on
 * one server. Commands without a key go to any one node.
 */
export function createRedis(redisUrl: string, opts: ConnectionOptions): Redis {
  const retryStrategy = opts.failFast
    ? (times: number) => (times > 2 ? null : 200)
    : (times: number) => Math.min(times * 200, 5000);
  const options = {
    connectionName: `taskmaster:${opts.name}`,
    maxRetriesPerRequest: opts.failFast ? 1 : null,
    enableOfflineQueue: true,
    lazyConnect: false,
  } satisfies RedisOptions;
  const family: Family = { members: new Set(), abandoned: false };
  if (!isClusterUrl(redisUrl)) return watched(new TaskmasterRedis(redisUrl, { ...options, retryStrategy }), family);
  const { nodes, username, password, tls } = parseClusterUrl(redisUrl);
  const cluster = new TaskmasterCluster(nodes, {
    // Reconnecting is the cluster's to decide (clusterRetryStrategy), not each node's.
    redisOptions: { ...options, username, password, ...(tls ? { tls: {} } : {}) },
    clusterRetryStrategy: retryStrategy,
    enableOfflineQueue: true,
    lazyConnect: false,
  });
  return watched(cluster as unknown as Redis, family);
}

/**
 * Closes `redis` and every connection duplicated from it (also later ones) without waiting for
 * Redis: commands waiting for a Redis that is away fail at once. A stop uses it when Redis is
 * unreachable, so that no step of it waits for Redis forever.
 */
export function abandonRedis(redis: Redis): void {
  const family = families.get(redis);
  if (!family) return void redis.disconnect();
  family.abandoned = true;
  for (const member of [...family.members]) closeNow(member);
}

/**
 * disconnect(), also between two reconnect attempts: there ioredis (5.x) only cancels the next
 * attempt, and the connection stays 'reconnecting' with its queued commands pending for good.
 * An attempt begun and cancelled at once ends it ('end'), failing those commands.
 */
function closeNow(redis: Redis): void {
  if (redis.isCluster) return closeClusterNow(redis as unknown as Cluster);
  redis.disconnect();
  if (redis.status !== 'reconnecting') return;
  // Rejected with "Connection is closed", as the commands are: nothing more to do.
  redis.connect().catch(() => undefined);
  redis.disconnect();
}

/**
 * The same for a cluster: there disconnect() leaves the queued commands pending for good. One
 * more attempt, made while the cluster counts as closing, ends it ('end') and fails them when the
 * cluster is away; if the cluster is back, it is closed once ready.
 */
function closeClusterNow(cluster: Cluster): void {
  const between = cluster.status === 'reconnecting';
  cluster.disconnect();
  if (!between) return;
  cluster.once('ready', () => cluster.disconnect());
  // Rejected with "None of startup nodes is available", as the commands are: nothing more to do.
  cluster.connect().catch(() => undefined);
}

/**
 * Resolves once Redis answers PING, or throws a RedisUnavailableError naming the URL. A one-server
 * URL that reaches a node of Redis Cluster is a ConfigError: most keys would be answered MOVED.
 */
export async function assertRedisReachable(redis: Redis, redisUrl: string, timeoutMs = 3000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  let info: string;
  try {
    [, info] = await Promise.race([
      // A server that refuses INFO (renamed, or denied by an ACL) is taken for what its URL says.
      Promise.all([redis.ping(), redis.info('cluster').catch(() => '')]),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
  } catch (err) {
    throw new RedisUnavailableError(
      `cannot reach Redis at ${redactUrl(redisUrl)} (${(err as Error).message}); set REDIS_URL or start redis-server`,
      { cause: err },
    );
  } finally {
    clearTimeout(timer);
  }
  if (!redis.isCluster && /^cluster_enabled:1\b/m.test(info)) {
    const cluster = redisUrl.replace(/^(rediss?):\/\//i, '$1+cluster://');
    throw new ConfigError(
      `REDIS_URL ${redactUrl(redisUrl)} is a node of a Redis Cluster: use a cluster URL, ${redactUrl(cluster)}`,
    );
  }
}

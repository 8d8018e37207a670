import { Redis, type RedisOptions } from 'ioredis';
import { redactUrl } from '../config/config.ts';
import { RedisUnavailableError } from '../errors.ts';

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

/**
 * The one place a Redis connection is made. Long-lived components get connections that
 * reconnect forever (BullMQ requires `maxRetriesPerRequest: null` for its blocking calls);
 * one-shot commands get ones that give up quickly with a clear error.
 */
export function createRedis(redisUrl: string, opts: ConnectionOptions): Redis {
  const options: RedisOptions = {
    connectionName: `taskmaster:${opts.name}`,
    maxRetriesPerRequest: opts.failFast ? 1 : null,
    enableOfflineQueue: true,
    lazyConnect: false,
    retryStrategy: opts.failFast ? (times) => (times > 2 ? null : 200) : (times) => Math.min(times * 200, 5000),
  };
  const redis = new Redis(redisUrl, options);
  // ioredis emits 'error' on every failed reconnect; the owner logs state changes, so an
  // unhandled 'error' event must never crash the process.
  redis.on('error', () => {});
  return redis;
}

/** Resolves once Redis answers PING, or throws a RedisUnavailableError naming the URL. */
export async function assertRedisReachable(redis: Redis, redisUrl: string, timeoutMs = 3000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      redis.ping(),
      new Promise((_, reject) => {
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
}

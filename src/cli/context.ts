import type { Redis } from 'ioredis';
import pino from 'pino';
import { Components } from '../components.ts';
import { loadConfig, redactUrl, type Config } from '../config/config.ts';
import { RedisUnavailableError } from '../errors.ts';
import { assertRedisReachable, createRedis } from '../queue/connection.ts';
import { TaskClient } from '../tasks/task-client.ts';

export type Env = Record<string, string | undefined>;

/** How long a one-shot command waits for Redis before it gives up with a one-line error. */
const CLI_REDIS_TIMEOUT_MS = 3000;

export interface OneShot {
  config: Config;
  redis: Redis;
  /** The command's keys, identity store, queues, … built once (see components.ts). */
  components: Components;
  client: TaskClient;
}

/**
 * The root of a one-shot command: runs it with the configuration, a fail-fast Redis connection
 * (checked with a PING first, so an unreachable Redis is one clear error within seconds), the
 * components and a TaskClient on it, and closes them whatever happens.
 */
export async function withClient<T>(env: Env, fn: (ctx: OneShot) => Promise<T>): Promise<T> {
  const config = loadConfig(env);
  const redis = createRedis(config.redisUrl, { name: 'cli', failFast: true });
  let lastError: NodeJS.ErrnoException | undefined;
  redis.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code) lastError = err; // a socket error such as ECONNREFUSED or ENOTFOUND
  });
  let client: TaskClient | undefined;
  let components: Components | undefined;
  try {
    await assertRedisReachable(redis, config.redisUrl, CLI_REDIS_TIMEOUT_MS).catch((err) => {
      // ioredis's own answer ("max retries per request") hides the cause the socket reported.
      if (!lastError) throw err;
      throw new RedisUnavailableError(
        `cannot reach Redis at ${redactUrl(config.redisUrl)} (${lastError.message}); set REDIS_URL to a reachable Redis`,
        { cause: lastError },
      );
    });
    // A command's answer is its output: its components log nothing.
    components = new Components({ config, connection: redis, log: pino({ level: 'silent' }) });
    client = new TaskClient(config, redis, { components });
    return await fn({ config, redis, components, client });
  } finally {
    // The command's answer (or its error) stands; the connection is closed just below either way.
    await client?.close().catch(() => undefined);
    await components?.close().catch(() => undefined);
    if (redis.status === 'ready') await redis.quit().catch(() => redis.disconnect());
    else redis.disconnect();
  }
}

/** Writes a line to stdout (the command's answer; logs and progress go to stderr). */
export function out(line: string): void {
  process.stdout.write(line + '\n');
}

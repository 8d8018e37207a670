import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Config } from './config/config.ts';
import { assertRedisReachable, createRedis } from './queue/connection.ts';
import type { Releasers } from './releasers.ts';

/** Something running that can be shut down gracefully (the master, the workers, `start`). */
export interface Running {
  close(): Promise<void>;
}

/** How long a long-lived service waits for Redis at start-up before giving up. */
const STARTUP_REDIS_TIMEOUT_MS = 5000;

/** A service's command connection, released with it; resolves once Redis answers. */
export async function connectService(config: Config, name: string, releasers: Releasers): Promise<Redis> {
  const connection = createRedis(config.redisUrl, { name });
  releasers.useRedis(connection);
  // QUIT would wait forever for a Redis that never answered (this connection retries forever).
  releasers.add(() =>
    connection.status === 'ready' ? connection.quit().catch(() => connection.disconnect()) : connection.disconnect(),
  );
  await assertRedisReachable(connection, config.redisUrl, STARTUP_REDIS_TIMEOUT_MS);
  return connection;
}

/**
 * Runs until SIGINT or SIGTERM, then closes gracefully and resolves; a second signal while
 * closing exits at once (code 130).
 */
export async function runUntilSignal(running: Running, log: Logger): Promise<void> {
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
  const again = (sig: NodeJS.Signals) => {
    log.warn({ signal: sig }, 'second signal: exiting without waiting');
    process.exit(130);
  };
  process.once('SIGINT', again);
  process.once('SIGTERM', again);
  log.info({ signal }, 'shutting down');
  await running.close();
  log.info('stopped');
}

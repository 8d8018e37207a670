import type { Logger } from 'pino';
import type { Redis } from 'ioredis';
import { abandonRedis } from './queue/connection.ts';
import { processOutageLog } from './queue/outage-log.ts';

/**
 * Cleanup functions collected while starting and run in reverse on shutdown; when a start-up
 * step fails, what was already started is released before the error goes up. While Redis is
 * unreachable a release does not wait for it: its connections are abandoned (commands waiting
 * for Redis fail at once), so every step ends and says what it could not write or hand back.
 */
export class Releasers {
  private readonly fns: (() => unknown)[] = [];
  private redis?: Redis;
  /** Once started, a stop says that it gives up on Redis (a failed start says only why it failed). */
  private started = false;
  constructor(private readonly log: Logger) {}

  add(fn: () => unknown): void {
    this.fns.push(fn);
  }

  /** The connection (with its duplicates) that the steps use, abandoned if Redis is away. */
  useRedis(connection: Redis): void {
    this.redis = connection;
  }

  async release(): Promise<void> {
    const redis = this.redis;
    const stopWatching = redis
      ? processOutageLog().whenUnreachable(() => {
          if (!this.started) return abandonRedis(redis);
          this.log.warn(
            { downForMs: processOutageLog().downForMs },
            'Redis is unreachable: stopping without waiting for it; what could not be handed back is logged, and ' +
              "jobs left active are given back by BullMQ's stalled-job check once Redis is back",
          );
          abandonRedis(redis);
        })
      : undefined;
    try {
      while (this.fns.length) {
        try {
          await this.fns.pop()!();
        } catch (err) {
          this.log.warn({ err }, 'error while shutting down');
        }
      }
    } finally {
      stopWatching?.();
    }
  }

  /** Runs `build`; on failure releases everything added so far and rethrows. */
  async guard<T>(build: () => Promise<T>): Promise<T> {
    try {
      const built = await build();
      this.started = true;
      return built;
    } catch (err) {
      await this.release();
      throw err;
    }
  }
}

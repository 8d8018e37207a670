import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import type { Redis } from 'ioredis';
import { afterEach, beforeEach, inject } from 'vitest';
import { loadConfig, type Config } from '../../src/config/config.ts';
import { createLogger, type Logger } from '../../src/logger.ts';
import { createRedis } from '../../src/queue/connection.ts';
import { isClusterUrl } from '../../src/queue/redis-url.ts';
import { deleteKeys } from './keys.ts';
import { TaskClient } from '../../src/tasks/task-client.ts';
import { TaskWorker, type TaskWorkerOptions } from '../../src/workers/task-worker.ts';

export const FIXTURE_TASKS = fileURLToPath(new URL('../fixtures/tasks', import.meta.url));

export interface Harness {
  readonly prefix: string;
  readonly config: Config;
  readonly log: Logger;
  readonly redis: Redis;
  connection(name?: string): Redis;
  client(): TaskClient;
  /** A started TaskWorker on this test's prefix. */
  worker(opts?: Partial<Omit<TaskWorkerOptions, 'config' | 'connection' | 'client' | 'log'>>): TaskWorker;
  /** Anything else to close after the test, closed in reverse order. */
  defer(fn: () => unknown): void;
}

/**
 * Per-test isolation as STYLE.md asks: each test gets its own BullMQ prefix on the shared test
 * Redis, everything it opened is closed afterwards (in reverse order) and its keys are deleted.
 */
export function useHarness(env: Record<string, string> = {}): Harness {
  const releasers: (() => unknown)[] = [];
  let state: { prefix: string; config: Config; redis: Redis; log: Logger } | undefined;

  beforeEach(() => {
    const redisUrl = inject('redisUrl');
    // On Redis Cluster a prefix needs a hash tag; each test's own tag also spreads tests over the nodes.
    const id = `tmtest-${randomBytes(5).toString('hex')}`;
    const prefix = isClusterUrl(redisUrl) ? `{${id}}` : id;
    const config = loadConfig({
      REDIS_URL: redisUrl,
      TASKMASTER_PREFIX: prefix,
      TASKMASTER_TASKS_DIR: FIXTURE_TASKS,
      TASKMASTER_BACKOFF_MS: '50',
      LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
      ...env,
    });
    const log = createLogger({ level: config.logLevel, pretty: false });
    const redis = createRedis(config.redisUrl, { name: `${prefix}:harness` });
    state = { prefix, config, redis, log };
  });

  afterEach(async () => {
    while (releasers.length) await releasers.pop()!();
    const { redis, prefix } = state!;
    await deleteKeys(redis, prefix);
    await redis.quit();
    state = undefined;
  });

  const s = () => {
    if (!state) throw new Error('harness used outside a test');
    return state;
  };
  const h: Harness = {
    get prefix() {
      return s().prefix;
    },
    get config() {
      return s().config;
    },
    get log() {
      return s().log;
    },
    get redis() {
      return s().redis;
    },
    connection(name = 'conn') {
      const c = createRedis(s().config.redisUrl, { name: `${s().prefix}:${name}` });
      releasers.push(() => c.quit().catch(() => c.disconnect()));
      return c;
    },
    client() {
      const client = new TaskClient(s().config, h.connection('client'));
      releasers.push(() => client.close());
      return client;
    },
    worker(opts = {}) {
      const w = new TaskWorker({
        config: s().config,
        connection: h.connection('worker'),
        client: h.client(),
        log: s().log,
        ...opts,
      });
      releasers.push(() => w.close());
      return w.start();
    },
    defer(fn) {
      releasers.push(fn);
    },
  };
  return h;
}

/** Resolves when `predicate` holds, polling; rejects with `what` after `timeoutMs`. */
export async function waitFor(
  predicate: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 15_000,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

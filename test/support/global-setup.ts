import type { TestProject } from 'vitest/node';
import { hasRedisServer, TestRedisServer } from './redis-server.ts';

let server: TestRedisServer | undefined;

/**
 * One Redis for the whole run: REDIS_URL when set, otherwise a private redis-server on a free
 * port, stopped afterwards. Without either the run fails with a message saying what to do.
 */
export async function setup(project: TestProject): Promise<void> {
  let url = process.env.REDIS_URL;
  if (!url) {
    if (!hasRedisServer()) {
      throw new Error(
        'Tests need Redis: set REDIS_URL=redis://host:port, or install redis-server (apt-get install redis-server) so the tests can start their own.',
      );
    }
    server = await TestRedisServer.start();
    url = server.url;
  }
  project.provide('redisUrl', url);
}

export async function teardown(): Promise<void> {
  await server?.destroy();
}

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
  }
}

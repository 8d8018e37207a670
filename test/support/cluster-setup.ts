import type { TestProject } from 'vitest/node';
import { hasRedisServer } from './redis-server.ts';
import { TestRedisCluster } from './redis-cluster.ts';

let cluster: TestRedisCluster | undefined;

/**
 * The cluster project's Redis: a private three-master Redis Cluster, stopped afterwards. Tests
 * read it as `redisUrl` like the one-server project's, and the harness gives each test a
 * hash-tagged prefix on it.
 */
export async function setup(project: TestProject): Promise<void> {
  if (!hasRedisServer()) {
    throw new Error('Cluster tests need redis-server and redis-cli on PATH (apt-get install redis-server).');
  }
  cluster = await TestRedisCluster.start();
  project.provide('redisUrl', cluster.url);
}

export async function teardown(): Promise<void> {
  await cluster?.destroy();
}

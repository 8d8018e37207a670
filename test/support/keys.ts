import type { Cluster, Redis } from 'ioredis';

/**
 * Deletes every key under `prefix:` (a test's or a benchmark run's own BullMQ prefix); on Redis
 * Cluster, SCAN reads one node, so each master is scanned.
 */
export async function deleteKeys(redis: Redis, prefix: string): Promise<void> {
  if (redis.isCluster) {
    const cluster = redis as unknown as Cluster;
    for (const node of cluster.nodes('master')) await deleteNodeKeys(node, cluster, prefix);
  } else await deleteNodeKeys(redis, redis, prefix);
}

async function deleteNodeKeys(node: Redis, redis: Redis | Cluster, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await node.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) await redis.unlink(...keys);
  } while (cursor !== '0');
}

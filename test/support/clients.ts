import type { Cluster, Redis } from 'ioredis';

/**
 * The connections of a queue's BullMQ workers, read from CLIENT LIST as Queue.getWorkers reads
 * them, but from every master of a cluster: a cluster client connects to each node under one
 * name, and getWorkers reads only the node with the most of them, maybe not the one it blocks on.
 */
export async function queueWorkers(redis: Redis, prefix: string, queue: string): Promise<Record<string, string>[]> {
  const name = `${prefix}:${Buffer.from(queue).toString('base64')}`;
  const nodes = redis.isCluster ? (redis as unknown as Cluster).nodes('master') : [redis];
  const lists = await Promise.all(nodes.map((node) => node.client('LIST') as Promise<string>));
  return lists
    .flatMap((list) => list.split('\n'))
    .filter(Boolean)
    .map(fields)
    .filter((c) => c.name === name || c.name?.startsWith(`${name}:w:`));
}

/** One line of CLIENT LIST, `id=7 addr=… name=… cmd=bzpopmin …`, as an object. */
function fields(line: string): Record<string, string> {
  const pairs = line
    .trim()
    .split(' ')
    .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]);
  return Object.fromEntries(pairs);
}

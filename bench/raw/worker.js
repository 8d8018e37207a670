// Raw BullMQ side of the bench's process rows, plain JavaScript so that it starts as any BullMQ
// service does: `node bench/raw/worker.js <redisUrl> <prefix> <queue> <concurrency> [--cluster]`.
// One process running a BullMQ Worker with an empty processor; with --cluster, a node:cluster
// primary that keeps one such process and forks a new one at once when it dies. The worker
// process tells its parent `{ ready: pid }` (IPC, when forked); SIGTERM stops it.
import cluster from 'node:cluster';
import process from 'node:process';
import { Worker } from 'bullmq';
import { Redis } from 'ioredis';

const [redisUrl, prefix, queue, concurrency, mode] = process.argv.slice(2);

function primary() {
  const fork = () => cluster.fork().on('message', (msg) => process.send?.(msg));
  cluster.on('exit', () => stopping || fork());
  let stopping = false;
  process.on('SIGTERM', () => {
    stopping = true;
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
  });
  fork();
}

async function worker() {
  const connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
  const w = new Worker(queue, async () => null, {
    connection,
    prefix,
    concurrency: Number(concurrency),
    autorun: false,
  });
  w.on('error', () => {});
  await w.waitUntilReady();
  void w.run();
  process.send?.({ ready: process.pid });
  const stop = async () => {
    await w.close().catch(() => undefined);
    connection.disconnect();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  process.on('disconnect', () => void stop());
}

if (mode === '--cluster' && cluster.isPrimary) primary();
else await worker();
